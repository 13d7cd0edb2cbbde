"""Lottery tickets with rewinding: iterative magnitude pruning as open_lth runs it, with the two controls of
Frankle & Carbin (2019), every step a resumable lmforge training run.

    dense/            level 0: the recipe trained densely; its state at step K is kept in rewind/
    rewind/step-K/    that checkpoint (weights, schedule position, data cursor, RNG streams)
    ticket-LL/        level L: mask.safetensors (the (1 - rate)^L densest-magnitude weights of level L-1's
                      model, pruned globally over the block linears, 20% of what remains each level) and a run
                      started from rewind/ with the surviving weights at their step-K values, trained to the
                      end with the mask held (train/methods/pruning_mask.py) and a fresh optimizer state
    reinit-LL/        control: the same mask, the weights freshly re-initialised (another seed)
    random-LL/        control: a random mask with the ticket's density in every layer, the step-K weights
    report.json, report.html   validation loss and bits per byte against density, ticket and controls

Running the same command again continues where it stopped: finished runs are kept, a run that was interrupted
resumes from its newest checkpoint (exactly, as every lmforge run), masks already written are reused.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmforge.compress import costs
from lmforge.compress.prune import MASK_FILE, _keep_top, density, magnitude_scores, masks_from_scores, save_masks
from lmforge.errors import RecipeError
from lmforge.train.events import Event
from lmforge.train.methods.base import Method

KINDS = ("ticket", "reinit", "random")


class SaveRewindPoint(Method):
    """Keeps the run's state at step `step` in `dest` (the dense run's checkpoints are pruned as usual)."""
    events = (Event.FIT_START, Event.STEP_END)

    def __init__(self, step: int, dest: Path):
        self.step, self.dest = step, Path(dest)

    def apply(self, event, state) -> None:
        from lmforge.train.checkpoint import is_intact, step_dir, write_checkpoint

        path = step_dir(self.dest, self.step)
        if state.step == self.step and not is_intact(path) and state.world.is_main:
            write_checkpoint(state, path)


def _masked(weights: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v * masks[k].to(v.dtype) if k in masks else v for k, v in weights.items()}


def random_masks(like: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Random masks keeping as many weights in each layer as `like` does (the random-pruning control)."""
    g = torch.Generator().manual_seed(seed)
    return {k: _keep_top(torch.rand(m.shape, generator=g), int(m.sum())) for k, m in like.items()}


def reinit_weights(model_dir: Path, seed: int) -> dict[str, torch.Tensor]:
    """Fresh random weights for the architecture at `model_dir`, as a from-scratch run initialises them."""
    from lmforge.model.hf import to_hf_state_dict
    from lmforge.model.transformer import Transformer
    from lmforge.model.config import ModelConfig
    from lmforge.io import read_json

    model = Transformer(ModelConfig.from_hf(read_json(model_dir / "config.json")))
    model.reset_parameters(seed=seed)
    return to_hf_state_dict(model)


def _write_masks_once(path: Path, make) -> dict[str, torch.Tensor]:
    from lmforge.compress.prune import load_masks

    if path.is_file():
        return load_masks(path)
    masks = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_masks(masks, tmp)
    tmp.replace(path)
    return masks


def lottery(recipe, out: str | Path, *, levels: int, rate: float = 0.2, rewind_step: int = 0,
            controls: bool = True, progress: bool = True, methods: list | None = None) -> dict:
    """Run (or continue) the lottery-ticket experiment of `recipe` into `out`; returns the report."""
    from safetensors.torch import load_file

    from lmforge.model.hf import load_model
    from lmforge.train.checkpoint import is_intact, seed_checkpoint, step_dir
    from lmforge.train.trainer import train

    out = Path(out)
    if not 0 < rate < 1:
        raise RecipeError(f"--rate {rate} is not in (0, 1)", hint="0.2 prunes 20% of the remaining weights per level")
    if levels < 1:
        raise RecipeError("--levels must be at least 1")
    if not 0 <= rewind_step < recipe.train.max_steps:
        raise RecipeError(f"--rewind-step {rewind_step} is not within the run's {recipe.train.max_steps} steps",
                          hint="rewind to an early step, e.g. 1-5% of train.max_steps")
    if recipe.mask is not None or recipe.lora is not None:
        raise RecipeError("the lottery recipe must train densely: remove its mask / lora section")
    extra = list(methods or [])
    rows = []

    def run(kind: str, level: int, run_dir: Path, masks: dict | None = None, weights: dict | None = None,
            mask_file: Path | None = None, more: tuple = ()):
        if masks is not None and not (run_dir / "checkpoints").is_dir():
            seed_checkpoint(rewind, run_dir, weights=_masked(weights, masks))
        r = recipe if mask_file is None else recipe.model_copy(update={
            "mask": str(mask_file.resolve()), "name": f"{recipe.name}-{kind}-{level:02d}"})
        result = train(r, run_dir, progress=progress, methods=[*more, *extra])
        if result["interrupted"]:
            raise KeyboardInterrupt
        row = {"kind": kind, "level": level, "density": 1.0 if masks is None else density(masks),
               "val_loss": result["validation"]["loss"], "val_bpb": result["validation"]["bpb"],
               "model": str(run_dir / "model")}
        if masks is not None:
            costs.record(run_dir / "model", costs.measure(dense_model, run_dir / "model", method=f"lottery-{kind}",
                                                          level=level, density=row["density"], rate=rate,
                                                          rewind_step=rewind_step))
        rows.append(row)
        return row

    dense_model = out / "dense" / "model"
    rewind = step_dir(out / "rewind", rewind_step)
    run("dense", 0, out / "dense", more=(SaveRewindPoint(rewind_step, out / "rewind"),))
    if not is_intact(rewind):
        raise RecipeError(f"the dense run has no intact state at step {rewind_step}", where=str(rewind),
                          hint="remove the lottery directory's dense/ and rewind/ and run again")
    rewind_weights = load_file(str(rewind / "model.safetensors"))
    previous = None
    for level in range(1, levels + 1):
        sparsity = 1 - (1 - rate) ** level
        source = dense_model if level == 1 else out / f"ticket-{level - 1:02d}" / "model"
        ticket_dir = out / f"ticket-{level:02d}"
        masks = _write_masks_once(ticket_dir / MASK_FILE, lambda: masks_from_scores(
            magnitude_scores(load_model(source)), sparsity, scope="global", prior=previous))
        run("ticket", level, ticket_dir, masks, rewind_weights, ticket_dir / MASK_FILE)
        if controls:
            reinit_dir, random_dir = out / f"reinit-{level:02d}", out / f"random-{level:02d}"
            reinit = reinit_weights(dense_model, recipe.seed + 1000 + level)
            run("reinit", level, reinit_dir, masks, reinit, ticket_dir / MASK_FILE)
            rand = _write_masks_once(random_dir / MASK_FILE, lambda: random_masks(masks, recipe.seed + 2000 + level))
            run("random", level, random_dir, rand, rewind_weights, random_dir / MASK_FILE)
        previous = masks
    report = {"recipe": recipe.name, "levels": levels, "rate": rate, "rewind_step": rewind_step,
              "steps": recipe.train.max_steps, "pruned": "linear layers of the blocks (not embeddings, norms, head)",
              "runs": rows}
    write_report(report, out)
    return report


def write_report(report: dict, out: Path) -> None:
    """report.json and report.html (the curve: validation loss and bits per byte against density)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmforge.evaluate.report import fmt, svg_of
    from lmforge.io import atomic_write_text

    runs = report["runs"]
    dense = [r for r in runs if r["kind"] == "dense"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((axes[0], "val_loss", "validation loss (nats/token)"),
                           (axes[1], "val_bpb", "bits per byte")):
        for kind, style in (("ticket", "o-"), ("reinit", "s--"), ("random", "^:")):
            pts = sorted(((r["density"], r[key]) for r in runs if r["kind"] == kind), reverse=True)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=kind)
        for r in dense:
            ax.axhline(r[key], color="grey", lw=0.8, label="dense")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("density of the block linears (log)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    rows = "".join(f"<tr><td>{r['kind']}</td><td>{r['level']}</td><td>{r['density']:.4f}</td>"
                   f"<td>{fmt(r['val_loss'])}</td><td>{fmt(r['val_bpb'])}</td></tr>" for r in runs)
    html = (f"<!doctype html><meta charset=utf-8><title>lottery ticket: {report['recipe']}</title>"
            f"<h1>Lottery ticket: {report['recipe']}</h1><p>{report['levels']} levels, {report['rate']:.0%} of the "
            f"remaining weights pruned per level, rewound to step {report['rewind_step']} of {report['steps']}; "
            f"pruned: {report['pruned']}.</p>{svg_of(fig)}"
            "<table border=1 cellpadding=4><tr><th>run</th><th>level</th><th>density</th><th>val loss</th>"
            f"<th>bpb</th></tr>{rows}</table>")
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.html", html)
