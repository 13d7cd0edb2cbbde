"""`lmforge curate DATASET --recipe curate.yaml -o OUT`: apply curation steps, write the curated dataset + report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def curate(
    dataset: Path = typer.Argument(..., help="A dataset directory (from `lmforge data ingest` or an earlier curate)."),
    recipe: Path = typer.Option(..., "--recipe", "-r", help="A curation recipe YAML (see recipes/curate.yaml)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the curated dataset."),
    map_: Optional[Path] = typer.Option(None, "--map", help="The dataset's map (overrides the recipe's `map:`)."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Override a recipe key: --set seed=1."),
    engine: str = typer.Option("local", "--engine", help="local, or ray (a Ray cluster; see docs/curate.md)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
):
    """Apply the recipe's steps in order; OUT gets the curated dataset plus report.json and report.html."""
    from rich.console import Console

    from lmforge.curate.pipeline import curate as run
    from lmforge.curate.recipe import load_curate_recipe

    r = load_curate_recipe(recipe, list(set_ or []))
    report = run(dataset, r, out, map_path=map_, engine=engine, overwrite=overwrite)
    Console().print(f"[green]done[/] {report['records_before']:,} → {report['records_after']:,} records in {out} "
                    f"(report: {out / 'report.html'})")
