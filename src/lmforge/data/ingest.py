"""`lmforge data ingest`: user files (or an embedded corpus) into the dataset artifact."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable, Iterator

from lmforge.data.dataset import DatasetWriter
from lmforge.io import atomic_dir


def assign_split(key: str, val_fraction: float, seed: int = 0) -> str:
    """Deterministic split from a stable hash of `key` (a file path or record id)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    return "validation" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def write_dataset(records: Iterable[dict], out: str | Path, *, overwrite: bool = False, progress: bool = True,
                  **meta) -> dict:
    """Write records (each with its `split`) to a dataset directory atomically; returns dataset.json."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with atomic_dir(out, overwrite=overwrite) as tmp:
        writer = DatasetWriter(tmp)
        with Progress(SpinnerColumn(), TextColumn("[bold]ingest[/] {task.completed} records"), TimeElapsedColumn(),
                      disable=not progress, transient=True) as bar:
            task = bar.add_task("ingest")
            for rec in records:
                writer.add(rec)
                bar.advance(task)
        return writer.close(**meta)


def ingest(sources: list[str | Path], out: str | Path, *, text_field: str = "text", include=None, exclude=None,
           val_fraction: float = 0.02, seed: int = 0, overwrite: bool = False, progress: bool = True) -> dict:
    """Read JSONL / Parquet / CSV files and folders of text into one dataset.

    Files in folders are split into train/validation by path (a file never straddles the split);
    rows of tabular files by record id.
    """
    from lmforge.data.readers import read_source

    paths = [Path(s) for s in sources]

    def records() -> Iterator[dict]:
        for src in paths:
            for rec in read_source(src, text_field, include, exclude):
                key = rec["source"] if src.is_dir() else f"{rec['source']}#{rec['id']}"
                rec["split"] = assign_split(key, val_fraction, seed)
                yield rec

    return write_dataset(records(), out, overwrite=overwrite, progress=progress,
                         sources=[str(p) for p in paths], val_fraction=val_fraction, split_seed=seed)
