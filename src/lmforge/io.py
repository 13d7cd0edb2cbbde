"""Shared plumbing: atomic writes, hashing, the cache directory. Nothing domain-specific lives here."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


def cache_dir(*parts: str) -> Path:
    """lmforge's cache ($LMFORGE_CACHE, else $XDG_CACHE_HOME/lmforge, else ~/.cache/lmforge)."""
    root = os.environ.get("LMFORGE_CACHE")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lmforge")
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, *, overwrite: bool = False, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory that becomes `final` only if the block finishes.

    `durable` fsyncs every file and the directory before the rename, and the parent after it, so a power
    loss leaves either the old state or the complete new directory.

    On any exception the temporary directory is removed, so no half-written artifact is left behind.
    """
    final = Path(final)
    if final.exists() and not overwrite:
        from lmforge.errors import LmforgeError

        raise LmforgeError(f"{final} already exists", hint="pass --overwrite to replace it, or choose another output path")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if durable:
            for f in tmp.rglob("*"):
                if f.is_file():
                    fsync_path(f)
            fsync_path(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if durable:
        fsync_path(final.parent)


def fsync_path(path: Path) -> None:
    """Flush a file's or a directory's contents (a directory: its entries, e.g. a rename) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def machine_name() -> str:
    """The CPU's model name, for reports and benchmark results."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (avx2, avx512_bf16, amx_int8, ...) from /proc/cpuinfo; empty where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
