"""`lmforge prune`: one-shot magnitude / Wanda pruning of a model (lmforge.compress.oneshot), or the lottery
ticket with rewinding and its controls (lmforge.compress.lottery)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def prune(
    model: Optional[Path] = typer.Argument(None, help="The model directory to prune (not with --method lottery)."),
    method: str = typer.Option("magnitude", "--method", help="magnitude, wanda (one-shot) or lottery (iterative "
                               "magnitude pruning with rewinding, from a recipe)."),
    sparsity: float = typer.Option(0.5, "--sparsity", help="Share of the block linears' weights to prune."),
    pattern: str = typer.Option("unstructured", "--pattern", help="unstructured or 2:4 (2 of every 4 inputs; a "
                                "mask only: no CPU kernel runs it faster)."),
    scope: Optional[str] = typer.Option(None, "--scope", help="Which weights compete: global (all together), "
                                        "layer (per matrix; magnitude's default) or row (per output; wanda's)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="wanda: a dataset whose train split "
                                               "calibrates the activations (default: the model's own)."),
    out: Path = typer.Option(..., "-o", "--out", help="The pruned model directory (lottery: the experiment's)."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="lottery: the recipe trained at every level."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="lottery: override a recipe key."),
    levels: int = typer.Option(3, "--levels", help="lottery: pruning rounds; density ends at (1 - rate)^levels."),
    rate: float = typer.Option(0.2, "--rate", help="lottery: share of the remaining weights pruned per level."),
    rewind_step: int = typer.Option(0, "--rewind-step", help="lottery: the step whose weights survivors rewind to."),
    controls: bool = typer.Option(True, "--controls/--no-controls", help="lottery: also train the random "
                                  "re-initialisation and random-pruning controls at every level."),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="one-shot: measure the cost against MODEL."),
):
    """Prune MODEL (or, with --method lottery, train RECIPE's lottery ticket) and report what it cost."""
    from rich.console import Console

    from lmforge.errors import ModelError, RecipeError

    console = Console()
    if method == "lottery":
        if recipe is None or model is not None:
            raise RecipeError("--method lottery trains from a recipe: give --recipe RECIPE and no MODEL")
        from lmforge.compress.lottery import lottery
        from lmforge.train.recipe import load_recipe

        try:
            report = lottery(load_recipe(recipe, list(set_ or [])), out, levels=levels, rate=rate,
                             rewind_step=rewind_step, controls=controls)
        except KeyboardInterrupt:
            console.print("[yellow]stopped[/]; run the same command to continue")
            raise typer.Exit(130)
        for r in report["runs"]:
            console.print(f"{r['kind']:>7} level {r['level']}: density {r['density']:.3f}  validation loss "
                          f"{r['val_loss']:.4f}  bpb {r['val_bpb']:.4f}")
        console.print(f"report: {out / 'report.html'}")
        return
    if model is None:
        raise ModelError("no MODEL given", hint="lmforge prune MODEL --method magnitude|wanda --sparsity S -o OUT")
    from lmforge.compress.oneshot import prune_model

    cost = prune_model(model, out, method=method, sparsity=sparsity, scope=scope, pattern=pattern,
                       calibration=calibration, measure=measure)
    line = f"pruned {cost['density']:.1%} kept ({method}, {cost['scope']}, {pattern}) -> {out}"
    if cost.get("ppl_ratio") is not None:
        line += (f"; perplexity x{cost['ppl_ratio']:.3f}, KL {cost['kl']:.4f} nats/token, top-1 agreement "
                 f"{cost['top1_agreement']:.1%} on {cost['measured_on']}")
    console.print(line)
    if pattern == "2:4":
        console.print("2:4 is a mask here: the zeros are stored and multiplied densely (no CPU kernel runs 2:4 "
                      "faster)")
