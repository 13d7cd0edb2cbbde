"""Embedded corpora: real data every machine already has. `python-stdlib` is the running interpreter's
standard-library source, split into train/validation by file."""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from lmforge.errors import DataError
from lmforge.io import cache_dir, sha256_text

CORPORA = ("python-stdlib",)
STDLIB_VAL_FRACTION = 0.02
STDLIB_EXCLUDE = ("site-packages", "site-packages/*", "*/site-packages/*", "__pycache__")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files() -> list[Path]:
    from lmforge.data.readers import list_files

    return list_files(stdlib_root(), include=["*.py"], exclude=STDLIB_EXCLUDE)


def build_corpus(name: str, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> dict:
    from lmforge.data.ingest import assign_split, write_dataset
    from lmforge.data.readers import read_folder

    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}", hint=f"available: {', '.join(CORPORA)}")
    root = stdlib_root()

    def records():
        # A handful of stdlib test files are deliberately not UTF-8 (encoding tests); they are left out.
        for rec in read_folder(root, ["*.py"], STDLIB_EXCLUDE, skip_invalid=True):
            rec["split"] = assign_split(rec["source"], STDLIB_VAL_FRACTION)
            yield rec

    return write_dataset(records(), out, overwrite=overwrite, progress=progress, corpus=name,
                         python=sys.version.split()[0], sources=[str(root)], val_fraction=STDLIB_VAL_FRACTION)


def cached_corpus(name: str, *, progress: bool = True) -> Path:
    """The corpus as a dataset in lmforge's cache, built on first use; keyed by the files it reads."""
    if name not in CORPORA:
        raise DataError(f"unknown corpus {name!r}", hint=f"available: {', '.join(CORPORA)}")
    files = stdlib_files()
    key = sha256_text(sys.version, *(f"{p}:{p.stat().st_size}" for p in files))[:16]
    path = cache_dir("datasets") / f"{name}-{key}"
    if not (path / "dataset.json").is_file():
        build_corpus(name, path, overwrite=True, progress=progress)
    return path
