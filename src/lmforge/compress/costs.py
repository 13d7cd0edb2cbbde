"""What a compressed model cost, measured against the model it came from and written where the model is:
`OUT/compression.json` and `OUT/lmforge.json["compression"]`. The figures (perplexity ratio, token-level KL
divergence, top-1 agreement on the reference's validation split) come from lmforge.infer.quality; sizes are
the weight files on disk and the share of block-linear weights that are non-zero."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lmforge.io import read_json, write_json

COST_FILE = "compression.json"


def weight_bytes(model_dir: str | os.PathLike) -> int:
    d = Path(model_dir)
    return sum(p.stat().st_size for p in d.glob("*.safetensors") if p.name != "mask.safetensors") + sum(
        p.stat().st_size for p in d.glob("*.bin"))


def linear_density(model_dir: str | os.PathLike) -> dict:
    """Non-zero share of the block-linear weights (what pruning thins) and of all weights."""
    from lmforge.model.hf import load_model

    model = load_model(model_dir)
    linears = [m.weight for _, _, _, m in model.block_linears() if isinstance(m, torch.nn.Linear)]
    nonzero = sum(int((w != 0).sum()) for w in linears)
    total = sum(w.numel() for w in linears)
    params = list(model.parameters())
    return {"linear_density": nonzero / max(1, total), "linear_weights": total,
            "nonzero_parameters": sum(int((p != 0).sum()) for p in params),
            "parameters": sum(p.numel() for p in params)}


def measure(reference: str | os.PathLike, compressed: str | os.PathLike, *, max_tokens: int = 16384,
            **facts) -> dict:
    """The cost of `compressed` against `reference`; `facts` (method, sparsity, ...) are recorded with it."""
    from lmforge.infer.quality import perplexity_change

    change = perplexity_change(reference, compressed, max_tokens=max_tokens) or {}
    cost = {**facts, "reference": str(Path(reference).resolve()),
            "ppl_ratio": change.get("ppl_ratio"), "kl": change.get("kl"),
            "top1_agreement": change.get("top1_agreement"), "ppl_reference": change.get("ppl_fp32"),
            "ppl": change.get("ppl"), "tokens": change.get("tokens"), "measured_on": change.get("measured_on"),
            "bytes_reference": weight_bytes(reference), "bytes": weight_bytes(compressed)}
    if Path(compressed).is_dir() and not (read_json(Path(compressed) / "config.json").get("quantization_config")):
        cost.update(linear_density(compressed))
    return cost


def record(model_dir: str | os.PathLike, cost: dict) -> dict:
    """Write `cost` beside the model and into its lineage."""
    model_dir = Path(model_dir)
    write_json(model_dir / COST_FILE, cost)
    file = model_dir / "lmforge.json"
    lineage = read_json(file) if file.is_file() else {}
    lineage["compression"] = cost
    write_json(file, lineage)
    return cost
