"""Pruning the linear layers of the blocks (never embeddings, norms or the output head): a score per weight, a
mask that keeps the highest scores at the asked sparsity, the pruned weights set to exactly zero.

Scores: `magnitude` |W|; `wanda` |W| · ‖X_j‖₂, the weight times the L2 norm of its input feature over
calibration text (Sun et al. 2023). Which weights compete for the kept slots (`scope`): all linear weights
together (`global`, as the lottery-ticket work prunes), each matrix alone (`layer`), or each output row alone
(`row`, Wanda's default). `pattern: 2:4` keeps the 2 best of every 4 consecutive inputs of a row (50% exactly,
the layout NVIDIA's sparse tensor cores run); on a CPU nothing runs it faster, so here it is a mask only.

A mask is {Hugging Face weight name: bool tensor, True where kept}; `save_masks` writes it as
`mask.safetensors`, which a recipe's `mask:` holds fixed while training (lmforge.train.methods.pruning_mask).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from lmforge.errors import ModelError

METHODS = ("magnitude", "wanda")
SCOPES = ("global", "layer", "row")
PATTERNS = ("unstructured", "2:4")
MASK_FILE = "mask.safetensors"


def hf_name(name: str) -> str:
    return f"model.{name}.weight"


def linear_weights(model) -> dict[str, torch.Tensor]:
    """{Hugging Face weight name: weight} of the block linears pruning acts on."""
    return {hf_name(name): module.weight for name, _, _, module in model.block_linears()
            if isinstance(module, nn.Linear)}


# --- scores ----------------------------------------------------------------------------------------------------


def magnitude_scores(model) -> dict[str, torch.Tensor]:
    return {name: w.detach().abs().float() for name, w in linear_weights(model).items()}


@torch.no_grad()
def input_norms(model, chunks: Iterable[list[int]]) -> dict[str, torch.Tensor]:
    """‖X_j‖₂ of every block linear's input features over the calibration chunks (one forward each)."""
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name, _, _, module in model.block_linears():
        def hook(mod, args, key=hf_name(name)):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])                  # (B*T, in)
            sums[key] = sums.get(key, 0) + (x * x).sum(0)                                 # (in,)
        hooks.append(module.register_forward_pre_hook(hook))
    was_training = model.training
    model.eval()
    try:
        for ids in chunks:
            model(torch.tensor([ids]))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if not sums:
        raise ModelError("no calibration text reached the model", hint="give --calibration a dataset with text")
    return {k: v.sqrt() for k, v in sums.items()}


def wanda_scores(model, chunks: Iterable[list[int]]) -> dict[str, torch.Tensor]:
    norms = input_norms(model, chunks)
    return {name: w.detach().abs().float() * norms[name][None, :] for name, w in linear_weights(model).items()}


# --- masks -----------------------------------------------------------------------------------------------------


def _keep_top(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """A bool mask of `scores`' shape keeping exactly the `keep` highest (ties broken by position)."""
    flat = scores.flatten()
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if keep > 0:
        mask[torch.topk(flat, keep, sorted=False).indices] = True
    return mask.view_as(scores)


def masks_from_scores(scores: dict[str, torch.Tensor], sparsity: float, *, scope: str = "layer",
                      pattern: str = "unstructured", prior: dict[str, torch.Tensor] | None = None
                      ) -> dict[str, torch.Tensor]:
    """Masks keeping the highest scores so that `sparsity` of all scored weights is pruned. `prior` (an
    earlier mask) makes its pruned weights the first to go: iterative pruning then removes a share of what
    remains, and the density of level L is exactly (1 - rate)^L."""
    if scope not in SCOPES:
        raise ModelError(f"unknown pruning scope {scope!r}", hint=f"choose one of {', '.join(SCOPES)}")
    if pattern not in PATTERNS:
        raise ModelError(f"unknown sparsity pattern {pattern!r}", hint=f"choose one of {', '.join(PATTERNS)}")
    if not 0 <= sparsity < 1:
        raise ModelError(f"sparsity {sparsity} is not in [0, 1)", hint="e.g. --sparsity 0.5 prunes half")
    if prior is not None:  # already-pruned weights score below everything alive
        scores = {k: torch.where(prior[k], s, torch.full_like(s, -1.0)) for k, s in scores.items()}
    if pattern == "2:4":
        return {k: two_four(s) for k, s in scores.items()}
    if scope == "global":
        flat = torch.cat([s.flatten() for s in scores.values()])
        kept = _keep_top(flat, round(flat.numel() * (1 - sparsity)))
        out, start = {}, 0
        for k, s in scores.items():
            out[k] = kept[start:start + s.numel()].view_as(s)
            start += s.numel()
        return out
    if scope == "layer":
        return {k: _keep_top(s, round(s.numel() * (1 - sparsity))) for k, s in scores.items()}
    return {k: torch.stack([_keep_top(row, round(row.numel() * (1 - sparsity))) for row in s])
            for k, s in scores.items()}


def two_four(scores: torch.Tensor) -> torch.Tensor:
    """Keep the 2 highest of every 4 consecutive inputs of each output row."""
    out_features, in_features = scores.shape
    if in_features % 4:
        raise ModelError(f"2:4 sparsity needs a multiple of 4 inputs, a layer has {in_features}")
    groups = scores.view(out_features, in_features // 4, 4)                              # (N, K/4, 4)
    top = groups.topk(2, dim=-1).indices                                                 # (N, K/4, 2)
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True)
    return mask.view(out_features, in_features)


def is_two_four(mask: torch.Tensor) -> bool:
    return bool((mask.view(mask.shape[0], -1, 4).sum(-1) == 2).all())


@torch.no_grad()
def apply_masks(model, masks: dict[str, torch.Tensor]) -> None:
    weights = linear_weights(model)
    missing = sorted(set(masks) - set(weights))
    if missing:
        raise ModelError(f"the mask names weights the model lacks: {missing[:3]}",
                         hint="a mask belongs to a model of the same shape")
    for name, mask in masks.items():
        weights[name].mul_(mask.to(weights[name].device, weights[name].dtype))


def density(masks: dict[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in masks.values())
    return sum(int(m.sum()) for m in masks.values()) / max(1, total)


def save_masks(masks: dict[str, torch.Tensor], path: str | Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in masks.items()}, str(path), metadata={"format": "lmforge-mask"})
    return Path(path)


def load_masks(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelError("no such mask file", where=str(path), hint=f"`lmforge prune ... -o OUT` writes OUT/{MASK_FILE}")
    masks = load_file(str(path))
    if not all(m.dtype == torch.bool for m in masks.values()):
        raise ModelError("not a pruning mask (its tensors are not boolean)", where=str(path))
    return masks
