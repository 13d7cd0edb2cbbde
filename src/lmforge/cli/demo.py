"""`lmforge demo`: the whole spine on the Python standard library, with the figures that judge it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory."),
    recipe: str = typer.Option("tiny-code-stdlib",
                               help="The recipe to train: a YAML file or a shipped recipe's name."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Train fewer steps (a quick look)."),
):
    """Ingest the standard library, train a tokenizer and a code model, report losses and completions."""
    from rich.console import Console

    from lmforge.demo import run_demo, render_report
    from lmforge.recipes import recipe_path

    console = Console()
    report = run_demo(recipe_path(recipe), out, max_steps=max_steps, console=console)
    render_report(report, console)
