"""`lmforge data ingest`: user files (or an embedded corpus) into the dataset artifact."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

from lmforge.data.dataset import DatasetWriter
from lmforge.io import atomic_dir


def split_score(key: str, seed: int = 0) -> float:
    """Where `key` falls in [0, 1): the first 8 bytes of SHA-256 of "{seed}:{key}" (UTF-8), big-endian,
    divided by 2**64. Stable across machines and runs."""
    digest = hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(key: str, val_fraction: float, seed: int = 0) -> str:
    """Deterministic split from a stable hash of `key` (a file path or record id)."""
    return "validation" if split_score(key, seed) < val_fraction else "train"


class Splitter:
    """`assign_split` for a stream of records, remembering what it takes to give a dataset of two or more
    records one record in each split at the end: if none fell in validation, the train record with the
    lowest score moves there; if none fell in train, the validation record with the highest score moves
    there (the first such record on a tie). A fraction of exactly 0 or 1 is taken at its word."""

    def __init__(self, val_fraction: float, seed: int = 0):
        self.val_fraction, self.seed = val_fraction, seed
        self.n = 0
        self.counts = {"train": 0, "validation": 0}
        self.extreme: dict[str, tuple[float, int]] = {}   # split -> (score, position) of its edge record

    def __call__(self, key: str) -> str:
        score = split_score(key, self.seed)
        split = "validation" if score < self.val_fraction else "train"
        best = self.extreme.get(split)
        if best is None or (score < best[0] if split == "train" else score > best[0]):
            self.extreme[split] = (score, self.n)
        self.counts[split] += 1
        self.n += 1
        return split

    def fixes(self) -> dict[int, str]:
        """{position: split} of the record to move, if any."""
        if self.n < 2 or not 0 < self.val_fraction < 1:
            return {}
        for empty, other in (("validation", "train"), ("train", "validation")):
            if self.counts[empty] == 0:
                return {self.extreme[other][1]: empty}
        return {}


def write_dataset(records: Iterable[dict], out: str | Path, *, overwrite: bool = False, progress: bool = True,
                  resplit: Callable[[], dict[int, str]] | None = None, **meta) -> dict:
    """Write records (each with its `split`) to a dataset directory atomically; returns dataset.json.
    `resplit`, called once all records are written, may move records to another split ({position: split})."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with atomic_dir(out, overwrite=overwrite) as tmp:
        writer = DatasetWriter(tmp)
        with Progress(SpinnerColumn(), TextColumn("[bold]ingest[/] {task.completed} records"), TimeElapsedColumn(),
                      disable=not progress, transient=True) as bar:
            task = bar.add_task("ingest")
            for rec in records:
                writer.add(rec)
                bar.advance(task)
        return writer.close(resplit=resplit() if resplit else None, **meta)


def split_key(record: dict, from_folder: bool) -> str:
    """What a record's split is hashed from: a folder's file by its relative path (a file never straddles
    the split), a row of a file by "{file name}#{id}"; never by how the path was spelled."""
    return record["source"] if from_folder else f"{record['source']}#{record['id']}"


def ingest(sources: list[str | Path], out: str | Path, *, text_field: str = "text", include=None, exclude=None,
           val_fraction: float = 0.02, seed: int = 0, overwrite: bool = False, progress: bool = True) -> dict:
    """Read JSONL / Parquet / CSV files and folders of text into one dataset.

    Files in folders are split into train/validation by path (a file never straddles the split);
    rows of tabular files by record id (see `split_key`, `Splitter`).
    """
    from lmforge.data.readers import read_source

    paths = [Path(s) for s in sources]
    splitter = Splitter(val_fraction, seed)

    def records() -> Iterator[dict]:
        for src in paths:
            for rec in read_source(src, text_field, include, exclude):
                rec["split"] = splitter(split_key(rec, src.is_dir()))
                yield rec

    return write_dataset(records(), out, overwrite=overwrite, progress=progress, resplit=splitter.fixes,
                         sources=[str(p) for p in paths], val_fraction=val_fraction, split_seed=seed)
