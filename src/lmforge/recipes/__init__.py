"""The recipes shipped with lmforge: YAML files inside the package (package data), so an installed wheel has
them too. In a checkout the top-level `recipes/` is a symlink to this directory."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from lmforge.errors import RecipeError

SUFFIX = ".yaml"


def shipped() -> list[str]:
    """Names of the shipped recipes (`tiny-code-stdlib`, `curate`, ...)."""
    return sorted(p.name[: -len(SUFFIX)] for p in files(__name__).iterdir() if p.name.endswith(SUFFIX))


def recipe_path(recipe: str | Path) -> Path:
    """A recipe file: `recipe` itself when that file exists, else the shipped recipe of that name
    (`tiny-code-stdlib` or `tiny-code-stdlib.yaml`)."""
    path = Path(recipe)
    if path.is_file():
        return path
    name = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
    if path.name == str(recipe) and name in shipped():
        # a regular (unzipped) install, as pip makes it: the resource is a real file
        return Path(str(files(__name__) / (name + SUFFIX)))
    raise RecipeError("no such recipe file", where=str(recipe),
                      hint=f"give a path to a YAML recipe or a shipped recipe's name: {', '.join(shipped())}")
