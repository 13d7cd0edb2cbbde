"""The local model catalog: named entries under `$XDG_DATA_HOME/lmforge/models/NAME/entry.json` (else
~/.local/share/...; `$LMFORGE_HOME/models` overrides both), each naming a model directory or a GGUF file with
what it is and where it came from. Every command that takes MODEL takes a catalog name or a path.

An entry refers to the model where it lies (a run's model directory stays in the run) unless imported with
`copy`, which puts the files inside the entry; `remove` deletes the entry and only files it owns.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from lmforge.errors import ModelError
from lmforge.io import atomic_dir, read_json, write_json

ENTRY_FILE = "entry.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
GGUF_MAGIC = b"GGUF"


def catalog_dir() -> Path:
    root = os.environ.get("LMFORGE_HOME")
    if root:
        return Path(root) / "models"
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data) / "lmforge" / "models"


def _check_name(name: str) -> None:
    if not NAME.match(name):
        raise ModelError(f"{name!r} is not a usable model name",
                         hint="letters, digits, '.', '_' and '-', up to 64, starting with a letter or digit")


def check_free_name(name: str, *, force: bool = False) -> Path:
    """The entry folder for `name`, once the name is valid and (unless `force`) not taken."""
    _check_name(name)
    final = catalog_dir() / name
    if final.exists() and not force:
        raise ModelError(f"the catalog already has a model named {name!r}", where=str(final),
                         hint="choose another name, or remove it first: lmforge models rm " + name)
    return final


def describe(path: Path) -> dict[str, Any]:
    """What a model path is (a Llama-family directory or a GGUF file), or a ModelError saying why it is neither."""
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise ModelError("not a GGUF file (no GGUF magic)", where=str(path),
                                 hint="import a model directory or a .gguf file")
        return {"format": "gguf", "size_bytes": path.stat().st_size}
    if not path.is_dir():
        raise ModelError("no such model", where=str(path),
                         hint="import a model directory (e.g. RUN_DIR/model) or a .gguf file")
    if not (path / "config.json").is_file():
        raise ModelError("no config.json", where=str(path),
                         hint="a model directory in Hugging Face layout (e.g. RUN_DIR/model)")
    config = read_json(path / "config.json")
    from lmforge.infer.quantize import QUANTIZED_MODEL_TYPE

    if config.get("model_type") not in ("llama", QUANTIZED_MODEL_TYPE):
        raise ModelError(f"model_type {config.get('model_type')!r} is not Llama-family", where=str(path / "config.json"),
                         hint="lmforge runs Llama-family models (model_type 'llama')")
    if not (path / "tokenizer.json").is_file():
        raise ModelError("no tokenizer.json", where=str(path), hint="the model directory needs its tokenizer files")
    lineage = read_json(path / "lmforge.json") if (path / "lmforge.json").is_file() else {}
    return {
        "format": "hf",
        "size_bytes": sum(f.stat().st_size for f in path.iterdir() if f.is_file()),
        "context_length": config.get("max_position_embeddings"),
        "hidden_size": config.get("hidden_size"),
        "layers": config.get("num_hidden_layers"),
        "vocab_size": config.get("vocab_size"),
        "quantization": (config.get("quantization_config") or {}).get("method"),
        "lineage": lineage,
    }


def entries() -> list[dict[str, Any]]:
    root = catalog_dir()
    if not root.is_dir():
        return []
    out = []
    for file in sorted(root.glob(f"*/{ENTRY_FILE}")):
        try:
            out.append(read_json(file))
        except ValueError:  # a torn entry (written atomically, so only by hand): list the rest
            continue
    return out


def get(name: str) -> dict[str, Any] | None:
    file = catalog_dir() / name / ENTRY_FILE
    return read_json(file) if NAME.match(name) and file.is_file() else None


def add(path: str | os.PathLike, *, name: str | None = None, copy: bool = False, force: bool = False) -> dict:
    """Register the model at `path` as `name` (default: its run's or file's name); returns the entry."""
    from lmforge.infer.local import model_id

    source = Path(path).expanduser().resolve()
    info = describe(source)
    final = check_free_name(name or model_id(source), force=force)
    name = final.name
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(final, overwrite=True) as tmp:
        target = source
        if copy:
            target = final / "files" / source.name
            if source.is_dir():
                shutil.copytree(source, tmp / "files" / source.name)
            else:
                (tmp / "files").mkdir()
                shutil.copy2(source, tmp / "files" / source.name)
        entry = {"name": name, "path": str(target), "source": str(source), "copied": copy,
                 "added": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
        write_json(tmp / ENTRY_FILE, entry)
    return entry


def remove(name: str) -> dict:
    entry = get(name)
    if entry is None:
        raise ModelError(f"the catalog has no model named {name!r}", hint=names_hint())
    shutil.rmtree(catalog_dir() / name)
    return entry


def names_hint() -> str:
    names = [e["name"] for e in entries()]
    return f"catalog names: {', '.join(names)}" if names else "the catalog is empty: lmforge models import PATH"


def resolve_model(name_or_path: str | os.PathLike) -> Path:
    """A path that exists is itself; otherwise a catalog name's path; otherwise one clear error."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    entry = get(str(name_or_path))
    if entry is not None:
        target = Path(entry["path"])
        if not target.exists():
            raise ModelError(f"the catalog entry {entry['name']!r} points at {target}, which is gone",
                             hint=f"lmforge models rm {entry['name']}, then import the model again")
        return target
    raise ModelError("no such model", where=str(name_or_path),
                     hint=f"MODEL is a model directory in Hugging Face layout (e.g. RUN_DIR/model), a .gguf file "
                     f"or a catalog name; {names_hint()}")
