"""Training recipes: YAML validated by pydantic. Unknown keys are errors that list the valid keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lmforge.errors import RecipeError
from lmforge.model.config import ModelConfig


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(Strict):
    path: str | None = Field(None, description="a dataset directory written by `lmforge data ingest`")
    corpus: Literal["python-stdlib"] | None = Field(None, description="an embedded corpus, built and cached")

    @model_validator(mode="after")
    def _one(self) -> "DataSpec":
        if (self.path is None) == (self.corpus is None):
            raise ValueError("give exactly one of data.path or data.corpus")
        return self


class TokenizerSpec(Strict):
    path: str | None = Field(None, description="a directory with tokenizer.json")
    vocab_size: int | None = Field(None, gt=0, description="train a byte-level BPE of this size on the data")
    min_frequency: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _one(self) -> "TokenizerSpec":
        if (self.path is None) == (self.vocab_size is None):
            raise ValueError("give exactly one of tokenizer.path or tokenizer.vocab_size")
        return self


class TrainSpec(Strict):
    seq_len: int = Field(256, gt=0)
    micro_batch_size: int = Field(16, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_steps: int = Field(1000, gt=0)
    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    optimizer: Literal["adamw", "muon"] = Field(
        "adamw", description="muon: Muon on hidden matrices, AdamW on embeddings and norms")
    muon_momentum: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast where the hardware computes bf16 natively, else fp32")
    compile: bool = Field(True, description="torch.compile the model (falls back to eager if it cannot)")
    eval_interval: int = Field(200, gt=0)
    eval_tokens: int = Field(32768, gt=0, description="validation tokens per periodic evaluation")
    final_eval_tokens: int = Field(1_000_000, gt=0, description="validation tokens for the final evaluation")
    checkpoint_interval: int = Field(500, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    log_interval: int = Field(10, gt=0)
    threads: int | None = Field(None, gt=0, description="CPU threads; default: all cores")


class Recipe(Strict):
    name: str = "run"
    seed: int = 1337
    data: DataSpec
    tokenizer: TokenizerSpec
    model: ModelConfig = ModelConfig()
    train: TrainSpec = TrainSpec()


def _valid_keys(model: type[BaseModel], loc: tuple) -> tuple[str, list[str]]:
    """The section a validation error points into and that section's valid keys."""
    cls: Any = model
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            break
        cls = field.annotation
    return ".".join(map(str, loc[:-1])) or "recipe", sorted(cls.model_fields)


def format_errors(err: ValidationError, source: str) -> str:
    parts = []
    for e in err.errors():
        loc = tuple(x for x in e["loc"] if not str(x).startswith("function-"))
        key = ".".join(map(str, loc))
        if e["type"] == "extra_forbidden":
            section, keys = _valid_keys(Recipe, loc)
            parts.append(f"unknown key '{key}'; valid keys in {section}: {', '.join(keys)}")
        elif e["type"] == "missing":
            parts.append(f"missing key '{key}'")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = f" (got {e['input']!r})" if "input" in e and not isinstance(e["input"], dict) else ""
            parts.append(f"'{key}': {msg}{got}" if key else msg)
    return f"{source}: " + "; ".join(parts)


def apply_override(data: dict, assignment: str) -> None:
    """`train.lr=1e-3` sets data["train"]["lr"] = 0.001 (the value is parsed as YAML)."""
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment!r} is not KEY=VALUE", hint="e.g. --set train.max_steps=100")
    key, raw = assignment.split("=", 1)
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise RecipeError(f"--set {key}: '{part}' is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError("no such recipe file", where=str(path))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(f"not valid YAML ({getattr(e, 'problem', e)})", where=where) from None
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a YAML mapping", where=str(path))
    data.setdefault("name", path.stem)
    for assignment in overrides or []:
        apply_override(data, assignment)
    return parse_recipe(data, str(path))


def parse_recipe(data: dict, source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise RecipeError(format_errors(e, source)) from None


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
