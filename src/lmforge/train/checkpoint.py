"""Atomic, checksummed checkpoints: RUN/checkpoints/step-NNNNNNN/{model.safetensors, optimizer.pt, state.json}.

A checkpoint directory appears only when complete (written to a temporary sibling, then renamed); on
resume, a checkpoint whose checksums do not match is skipped in favour of the one before it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from lmforge.io import atomic_dir, read_json, sha256_file, write_json
from lmforge.model.hf import from_hf_state_dict, to_hf_state_dict


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    return sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if root.is_dir() else []


def save_checkpoint(run_dir: Path, step: int, model, optimizer, state: dict[str, Any], keep: int) -> Path:
    from safetensors.torch import save_file

    path = Path(run_dir) / "checkpoints" / f"step-{step:07d}"
    with atomic_dir(path, overwrite=True) as tmp:
        save_file(to_hf_state_dict(model), str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        files = {name: sha256_file(tmp / name) for name in ("model.safetensors", "optimizer.pt")}
        write_json(tmp / "state.json", {**state, "step": step, "sha256": files})
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def is_intact(path: Path) -> bool:
    try:
        state = read_json(path / "state.json")
        return all(sha256_file(path / name) == digest for name, digest in state["sha256"].items())
    except (OSError, KeyError, ValueError):
        return False


def load_latest(run_dir: Path, model, optimizer) -> dict[str, Any] | None:
    """Restore the newest intact checkpoint into `model` and `optimizer`; returns its state or None."""
    from safetensors.torch import load_file

    for path in reversed(checkpoint_dirs(run_dir)):
        if not is_intact(path):
            continue
        weights = from_hf_state_dict(load_file(str(path / "model.safetensors")), model.config, str(path))
        model.load_state_dict(weights, strict=not model.config.tie_word_embeddings)
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
        return read_json(path / "state.json")
    return None
