"""`lmforge prune MODEL --method magnitude|wanda --sparsity S -o OUT`: one-shot pruning of a model directory.

OUT is a plain model directory (transformers loads it; the pruned weights are stored as exact zeros, densely:
no size change on disk) with `mask.safetensors` (to hold the sparsity while retraining: a recipe's `mask:`)
and `compression.json` (what it cost, lmforge.compress.costs).
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

from lmforge.compress import costs
from lmforge.compress.prune import (MASK_FILE, density, is_two_four, magnitude_scores, masks_from_scores,
                                    apply_masks, save_masks, wanda_scores)
from lmforge.errors import ModelError

# Calibration text for a model whose lineage names no training split: standard-library modules, none of them
# in lmforge.infer.quality.FALLBACK_TEXT (which measures the cost), so calibration never sees the test text.
CALIBRATION_FALLBACK = ("argparse.py", "typing.py", "inspect.py", "pathlib.py")


def calibration_texts(model_dir: Path, dataset: str | os.PathLike | None = None):
    """(name, texts): the training split of `dataset` or of the model's lineage, else CALIBRATION_FALLBACK."""
    from lmforge.data.dataset import Dataset, record_text
    from lmforge.io import read_json

    lineage = read_json(model_dir / "lmforge.json") if (model_dir / "lmforge.json").is_file() else {}
    path = dataset or (lineage.get("dataset") or {}).get("path")
    if path and Path(path).is_dir():
        return f"train split of {path}", (record_text(r) for r in Dataset(path).records("train"))
    if dataset is not None:
        raise ModelError("no such dataset", where=str(dataset), hint="give a directory `lmforge data ingest` wrote")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return ("python standard library: " + ", ".join(CALIBRATION_FALLBACK),
            ((stdlib / f).read_text(encoding="utf-8") for f in CALIBRATION_FALLBACK if (stdlib / f).is_file()))


def prune_model(model_dir: str | os.PathLike, out: str | os.PathLike, *, method: str = "magnitude",
                sparsity: float = 0.5, scope: str | None = None, pattern: str = "unstructured",
                calibration: str | os.PathLike | None = None, calibration_tokens: int = 32768,
                measure: bool = True) -> dict:
    """Prune `model_dir` into `out`; returns the compression record. `scope` defaults to `layer` for
    magnitude and `row` for wanda (each paper's choice)."""
    from lmforge.infer.quality import token_chunks
    from lmforge.infer.engine import prompt_ids
    from lmforge.io import read_json
    from lmforge.model.hf import load_pretrained, save_pretrained

    model_dir, out = Path(model_dir), Path(out)
    if method not in ("magnitude", "wanda"):
        raise ModelError(f"unknown pruning method {method!r}", hint="choose magnitude or wanda (or lottery)")
    if out.exists():
        raise ModelError("the output already exists", where=str(out), hint="choose a new -o path")
    if pattern == "2:4" and sparsity != 0.5:
        raise ModelError(f"--pattern 2:4 prunes exactly half; --sparsity {sparsity} contradicts it",
                         hint="drop --sparsity or set it to 0.5")
    scope = scope or ("row" if method == "wanda" else "layer")
    model, tokenizer = load_pretrained(model_dir)
    calibrated_on = None
    if method == "wanda":
        if tokenizer is None:
            raise ModelError("wanda needs the model's tokenizer for its calibration text", where=str(model_dir))
        calibrated_on, texts = calibration_texts(model_dir, calibration)
        context = model.config.max_position_embeddings
        chunks = token_chunks(texts, context, calibration_tokens, lambda t: prompt_ids(tokenizer, t))
        scores = wanda_scores(model, chunks)
    else:
        scores = magnitude_scores(model)
    masks = masks_from_scores(scores, sparsity, scope=scope, pattern=pattern)
    apply_masks(model, masks)
    lineage = read_json(model_dir / "lmforge.json") if (model_dir / "lmforge.json").is_file() else {}
    lineage = {k: v for k, v in lineage.items() if k not in ("evals", "exports", "compression")}
    facts = {"method": method, "sparsity": sparsity, "scope": scope, "pattern": pattern,
             "density": density(masks), "calibration": calibrated_on,
             "two_four": all(is_two_four(m) for m in masks.values()) if pattern == "2:4" else None,
             "speedup": "none on CPU: the zeros are stored and multiplied densely" if pattern == "2:4" else None}
    lineage["pruning"] = {**facts, "source": str(model_dir.resolve())}
    save_pretrained(model, out, tokenizer=tokenizer, lineage=lineage, overwrite=False)
    try:  # the model, its mask and its cost stay together or not at all
        save_masks(masks, out / MASK_FILE)
        return costs.record(out, costs.measure(model_dir, out, **facts) if measure else facts)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
