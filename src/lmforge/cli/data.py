"""`lmforge data ...`: ingest user files or an embedded corpus into a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from lmforge.data.corpora import CORPORA

app = typer.Typer(help="Bring data in: JSONL, Parquet, CSV, folders of text or code, embedded corpora.",
                  no_args_is_help=True)


@app.command("ingest")
def ingest(
    sources: Optional[List[Path]] = typer.Argument(None, help="Files or folders to read."),
    out: Path = typer.Option(..., "-o", "--out", help="The dataset directory to write."),
    corpus: Optional[str] = typer.Option(None, help=f"An embedded corpus instead of SOURCES: {', '.join(CORPORA)} "
                                         "(python-stdlib-instruct: chat records for instruction tuning)."),
    text_field: str = typer.Option("text", help="The field or column holding the text."),
    include: Optional[List[str]] = typer.Option(None, help="Glob of files to take from folders (repeatable)."),
    exclude: Optional[List[str]] = typer.Option(None, help="Glob of files or folders to skip (repeatable)."),
    val_fraction: float = typer.Option(0.02, min=0.0, max=1.0, help="Share of files (or rows) for validation."),
    seed: int = typer.Option(0, help="Seed of the train/validation split."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
):
    """Read SOURCES (or --corpus) into a dataset directory: Parquet files plus dataset.json."""
    from rich.console import Console

    from lmforge.errors import DataError

    if corpus and sources:
        raise DataError("give SOURCES or --corpus, not both")
    if corpus:
        from lmforge.data.corpora import build_corpus

        info = build_corpus(corpus, out, overwrite=overwrite)
    elif sources:
        from lmforge.data.ingest import ingest as run

        info = run(sources, out, text_field=text_field, include=include, exclude=exclude,
                   val_fraction=val_fraction, seed=seed, overwrite=overwrite)
    else:
        raise DataError("nothing to ingest", hint=f"give files or folders, or --corpus {' or '.join(CORPORA)}")
    c = info["counts"]
    Console().print(f"[green]wrote[/] {out}: {c['records']:,} records ({c['text']:,} text, {c['chat']:,} chat), "
                    f"{c['chars']:,} characters, {c['train']:,} train / {c['validation']:,} validation")
