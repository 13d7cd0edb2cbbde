"""YAML recipes validated by pydantic, shared by every stage: loading, `--set` overrides and one-line errors
that name the key and list the valid ones."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from lmforge.errors import RecipeError


class Strict(BaseModel):
    """Base of every recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
    # Groups of keys that name the same thing different ways (`data.path` / `data.corpus`): a section gives
    # exactly one of each group, and `--set` of one replaces the others.
    ALTERNATIVES: ClassVar[tuple[tuple[str, ...], ...]] = ()

    @model_validator(mode="after")
    def _one_of_each_alternative(self):
        for group in self.ALTERNATIVES:
            if sum(getattr(self, key) is not None for key in group) != 1:
                raise PydanticCustomError("alternatives", "give exactly one of {keys}", {"keys": group})
        return self


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `Model`, `Model | None` or `list[Model]`, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


def _section(root: type[BaseModel], path) -> type[BaseModel]:
    """The model of the section at `path` (keys, list indices), or of the deepest section on the way."""
    cls: type[BaseModel] = root
    for part in path:
        if isinstance(part, int) or str(part).isdigit():    # an item of a list section
            continue
        field = cls.model_fields.get(part)
        sub = _submodel(field.annotation) if field is not None else None
        if sub is None:
            break
        cls = sub
    return cls


def _valid_keys(root: type[BaseModel], loc: tuple) -> tuple[str, list[str]]:
    """The section a validation error points into and that section's valid keys."""
    return ".".join(map(str, loc[:-1])) or "recipe", sorted(_section(root, loc[:-1]).model_fields)


def format_errors(err: ValidationError, source: str, root: type[BaseModel]) -> str:
    parts = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not str(x).startswith("function-"))
        key = ".".join(map(str, loc))
        if e["type"] == "extra_forbidden":
            section, keys = _valid_keys(root, loc)
            parts.append(f"unknown key '{key}'; valid keys in {section}: {', '.join(keys)}")
        elif e["type"] == "alternatives":
            names = [f"{key}.{k}" if key else k for k in e["ctx"]["keys"]]
            parts.append(f"give exactly one of {' or '.join(names)}")
        elif e["type"] == "missing":
            parts.append(f"missing key '{key}'")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
            parts.append(f"'{key}': {msg}{got}" if key else msg)
    return f"{source}: " + "; ".join(parts)


def apply_override(data: dict, assignment: str, model: type[BaseModel] | None = None) -> None:
    """`train.lr=1e-3` sets data["train"]["lr"] = 0.001 (the value is parsed as YAML). With the recipe's
    `model`, setting one key of an alternatives group (`data.path`) removes the others (`data.corpus`): an
    override of the data source replaces it."""
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment!r} is not KEY=VALUE", hint="e.g. --set train.max_steps=100")
    key, raw = assignment.split("=", 1)
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"--set {key}: '{part}' is not a section")
    value = yaml.safe_load(raw)
    if model is not None and value is not None:
        for group in getattr(_section(model, parts[:-1]), "ALTERNATIVES", ()):
            if parts[-1] in group:
                for other in group:
                    node.pop(other, None)
    node[parts[-1]] = value


def load_yaml(path: str | Path) -> dict:
    """A YAML mapping from a file (or a shipped recipe's name, e.g. `tiny-code-stdlib`), or a RecipeError that
    points at the line."""
    from lmforge.recipes import recipe_path

    path = recipe_path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(f"not valid YAML ({getattr(e, 'problem', e)})", where=where) from None
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a YAML mapping", where=str(path))
    return data


def validate(model: type[BaseModel], data: dict, source: str = "recipe"):
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RecipeError(format_errors(e, source, model)) from None
