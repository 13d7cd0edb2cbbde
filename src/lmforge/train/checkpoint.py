"""Atomic, checksummed checkpoints: RUN/checkpoints/step-NNNNNNN/ holds exactly `TrainState.state_dict()`.

    model.safetensors   the weights, under Hugging Face names (a LoRA run: the adapters, under PEFT's)
    optimizer.pt        the optimizer state
    state.pt            step, tokens, data cursor, lr scale, RNG streams, method states
    state.json          the same scalars, readable (plus the validation loss when one was measured)
    manifest.json       sha256 of every file above

A checkpoint is written into a temporary sibling, fsynced and renamed, so it appears only when complete.
Resuming takes the newest checkpoint whose manifest verifies; a corrupt or partial one is passed over with
a warning. Pruning keeps the newest `keep` and, with `keep_best`, the one with the lowest validation loss.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from lmforge.io import atomic_dir, read_json, sha256_file, write_json

FILES = ("model.safetensors", "optimizer.pt", "state.pt", "state.json")
SCALARS = ("step", "tokens", "data_position", "lr_scale")


def step_dir(root: Path, step: int) -> Path:
    """Where the checkpoint of `step` lives under `root` (names sort by step as text too)."""
    return Path(root) / f"step-{step:07d}"


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    return sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1])) if root.is_dir() else []


def save_checkpoint(state, *, keep: int, keep_best: bool = False, val_loss: float | None = None) -> Path:
    path = write_checkpoint(state, step_dir(Path(state.run_dir) / "checkpoints", state.step), val_loss)
    prune(state.run_dir, keep=keep, keep_best=keep_best)
    return path


def write_checkpoint(state, path: Path, val_loss: float | None = None) -> Path:
    """`state.state_dict()` as a checkpoint directory at `path`, atomically."""
    from safetensors.torch import save_file

    sd = state.state_dict()
    with atomic_dir(path, overwrite=True, durable=True) as tmp:
        save_file(sd["model"], str(tmp / "model.safetensors"))
        torch.save(sd["optimizer"], tmp / "optimizer.pt")
        torch.save({k: v for k, v in sd.items() if k not in ("model", "optimizer")}, tmp / "state.pt")
        write_json(tmp / "state.json", {**{k: sd[k] for k in SCALARS}, "val_loss": val_loss})
        write_json(tmp / "manifest.json", {name: sha256_file(tmp / name) for name in FILES})
    return path


def seed_checkpoint(source: Path, run_dir: Path, *, weights: dict[str, torch.Tensor],
                    reset_optimizer: bool = True) -> Path:
    """Start `run_dir` from the checkpoint at `source` with `weights` in place of its model: training that
    directory continues from that step (its schedule, data position and RNG streams) with these weights and,
    with `reset_optimizer`, a fresh optimizer state. What the lottery ticket's rewinding is made of."""
    from safetensors.torch import save_file

    rest = torch.load(source / "state.pt", weights_only=False)
    optimizer = torch.load(source / "optimizer.pt", weights_only=True)
    if reset_optimizer:
        optimizer = {"optimizers": [{**o, "state": {}} for o in optimizer["optimizers"]]}
    rest["methods"] = {k: v for k, v in rest.get("methods", {}).items() if k != "PruningMask"}
    path = Path(run_dir) / "checkpoints" / source.name
    with atomic_dir(path, overwrite=True, durable=True) as tmp:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        torch.save(optimizer, tmp / "optimizer.pt")
        torch.save(rest, tmp / "state.pt")
        write_json(tmp / "state.json", {**{k: rest[k] for k in SCALARS}, "val_loss": None})
        write_json(tmp / "manifest.json", {name: sha256_file(tmp / name) for name in FILES})
    return path


def prune(run_dir: Path, *, keep: int, keep_best: bool) -> None:
    dirs = checkpoint_dirs(run_dir)
    kept = set(dirs[-keep:])
    if keep_best:
        scored = [(meta["val_loss"], p) for p in dirs if (meta := _meta(p)) and meta.get("val_loss") is not None]
        if scored:
            kept.add(min(scored)[1])
    for old in dirs:
        if old not in kept:
            shutil.rmtree(old, ignore_errors=True)


def _meta(path: Path) -> dict | None:
    try:
        return read_json(path / "state.json")
    except (OSError, ValueError):
        return None


def is_intact(path: Path) -> bool:
    try:
        manifest = read_json(path / "manifest.json")
        return set(manifest) == set(FILES) and all(sha256_file(path / n) == d for n, d in manifest.items())
    except (OSError, ValueError, AttributeError):
        return False


def latest_intact(run_dir: Path, *, warn: bool = True) -> Path | None:
    """The newest checkpoint whose checksums verify; every newer one is named in a warning."""
    for path in reversed(checkpoint_dirs(run_dir)):
        if is_intact(path):
            return path
        if warn:
            warnings.warn(f"checkpoint {path} is incomplete or corrupt (its sha256 manifest does not verify); "
                          "passing over it", stacklevel=2)
    return None


def load_checkpoint(path: Path, state) -> dict[str, Any]:
    """Restore `state` from the checkpoint at `path`; returns its state.json."""
    from safetensors.torch import load_file

    weights = load_file(str(path / "model.safetensors"))
    rest = torch.load(path / "state.pt", weights_only=False)  # our own file, verified by the manifest
    optimizer = torch.load(path / "optimizer.pt", weights_only=True)
    state.load_state_dict({**rest, "model": weights, "optimizer": optimizer, "where": str(path)})
    return read_json(path / "state.json")
