"""`lmforge tokenizer ...`: train a byte-level BPE tokenizer on a dataset."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Tokenizers: train a byte-level BPE on your data.", no_args_is_help=True)


@app.command("train")
def train(
    dataset: Path = typer.Argument(..., help="A dataset directory (from `lmforge data ingest`)."),
    out: Path = typer.Option(..., "-o", "--out", help="The tokenizer directory to write."),
    vocab_size: int = typer.Option(4096, help="Vocabulary size, special tokens included."),
    min_frequency: int = typer.Option(2, help="Merges seen fewer times than this are not learned."),
    overwrite: bool = typer.Option(False, help="Replace OUT if it exists."),
):
    """Train a byte-level BPE on DATASET's train split; writes tokenizer.json + tokenizer_config.json."""
    from rich.console import Console

    from lmforge.data.dataset import Dataset
    from lmforge.train.prepare import train_tokenizer

    tok = train_tokenizer(Dataset(dataset), out, vocab_size, min_frequency=min_frequency, overwrite=overwrite)
    Console().print(f"[green]wrote[/] {out}: {tok.vocab_size:,} tokens")
