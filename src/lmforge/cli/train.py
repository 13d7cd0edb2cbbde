"""`lmforge train RECIPE`: train a model from a YAML recipe."""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer


def train(
    recipe: Optional[Path] = typer.Argument(None, help="A recipe YAML (see recipes/) or a shipped recipe's name (tiny-code-stdlib); optional with --resume."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a recipe key: --set train.lr=1e-3."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: runs/<recipe name>)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Shorthand for --set train.max_steps=N."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Shorthand for --set "
                                                   "train.checkpoint_interval=N."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run directory's saved run (the same command "
                                "without it does too); needed only without RECIPE. Only max_steps and "
                                "eval/log/checkpoint settings may change."),
    register: Optional[str] = typer.Option(None, "--register", metavar="NAME", help="When done, add the model to "
                                           "the catalog as NAME (lmforge chat NAME, lmforge serve NAME)."),
):
    """Train RECIPE; the run directory gets recipe.yaml, overrides.yaml, checkpoints/, metrics.jsonl and model/."""
    from rich.console import Console

    from lmforge.train.recipe import resolve_run
    from lmforge.train.trainer import train as run

    overrides = list(set_ or []) + ([f"train.max_steps={max_steps}"] if max_steps is not None else []) + (
        [f"train.checkpoint_interval={checkpoint_every}"] if checkpoint_every is not None else [])
    r, run_dir, source = resolve_run(recipe, overrides, out, resume=resume)
    if register:
        from lmforge.infer import catalog

        catalog.check_free_name(register)  # fail now, not after training
    result = run(r, run_dir, resume=resume, source=source)
    console = Console(quiet=os.environ.get("RANK", "0") != "0")  # under torchrun, rank 0 reports
    if result["interrupted"]:
        console.print(f"[yellow]stopped[/] at step {result['steps']} with a checkpoint; run the same command "
                      "to continue")
        raise typer.Exit(130)
    v = result["validation"]
    if result["finished_already"]:
        console.print(f"[green]finished[/]: {run_dir} already trained {result['steps']} steps (validation loss "
                      f"{v['loss']:.4f}); raise --max-steps to train further, or choose another --out")
    else:
        console.print(f"[green]done[/] {result['steps']} steps: validation loss {v['loss']:.4f} nats/token, "
                      f"{v['bpb']:.4f} bits/byte; model in {result['model']}")
    if register and os.environ.get("RANK", "0") == "0":
        entry = catalog.add(result["model"], name=register)
        console.print(f"registered as [bold]{entry['name']}[/]: lmforge chat {entry['name']}")
