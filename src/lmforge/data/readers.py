"""Readers turn user files into records: {"id", "text"} or {"id", "messages"}, plus "source".

"source" names where a record came from independently of how its path was spelled: a file given directly
by its name, a file inside a folder by its path relative to that folder. Every reader stops at the first bad
row with a DataError that names the file, the line (or row) and the reason; nothing is skipped silently.
"""

from __future__ import annotations

import csv
import fnmatch
import io
import json
from pathlib import Path
from typing import Iterator

from lmforge.errors import DataError

Record = dict
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
DEFAULT_EXCLUDE = (".*", "*/.*", "__pycache__", "*/__pycache__/*", "*.pyc")


def _decode(raw: bytes, where: str, *, file_start: bool = True) -> str:
    """UTF-8 text. A byte-order mark at the start of a file (many editors and spreadsheet exports write one)
    marks the encoding and is not part of the text."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"not valid UTF-8 (byte 0x{raw[e.start]:02x} at line {line}, offset {e.start})", where=where,
                        hint="convert the file to UTF-8 or exclude it") from None
    return text.removeprefix("\ufeff") if file_start else text


def _record(obj: dict, where: str, text_field: str, rid: str, source: str) -> Record:
    if "messages" in obj and text_field not in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError("'messages' must be a non-empty list of {role, content} objects", where=where)
        clean = []
        for i, m in enumerate(messages):
            if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
                raise DataError(f"messages[{i}] needs string 'role' and 'content' fields", where=where)
            clean.append({"role": m["role"], "content": m["content"]})
        return {"id": str(obj.get("id", rid)), "text": None, "messages": clean, "source": source}
    if text_field not in obj:
        fields = ", ".join(sorted(map(str, obj))) or "none"
        raise DataError(f"no '{text_field}' field (fields: {fields})", where=where,
                        hint="pass --text-field NAME, or give chat records a 'messages' list")
    text = obj[text_field]
    if not isinstance(text, str):
        raise DataError(f"'{text_field}' must be a string, got {type(text).__name__}", where=where)
    return {"id": str(obj.get("id", rid)), "text": text, "messages": None, "source": source}


def json_objects(path: Path) -> Iterator[tuple[int, str, dict]]:
    """(line number, "file:line", object) for each non-blank line of a JSONL file (gzipped when it ends in .gz);
    a line that is not UTF-8 or not a JSON object stops with a DataError naming file:line."""
    import gzip

    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            line = _decode(raw, where, file_start=lineno == 1).strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"malformed JSON ({e.msg}: column {e.colno})", where=where) from None
            if not isinstance(obj, dict):
                raise DataError(f"expected a JSON object, got {type(obj).__name__}", where=where)
            yield lineno, where, obj


def read_jsonl(path: Path, text_field: str = "text") -> Iterator[Record]:
    for lineno, where, obj in json_objects(path):
        yield _record(obj, where, text_field, f"{path.name}:{lineno}", path.name)


def read_csv(path: Path, text_field: str = "text") -> Iterator[Record]:
    text = _decode(path.read_bytes(), str(path))
    delimiter = "\t" if path.suffix == ".tsv" else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    if reader.fieldnames is None or text_field not in reader.fieldnames:
        cols = ", ".join(reader.fieldnames or []) or "none"
        raise DataError(f"no '{text_field}' column (columns: {cols})", where=f"{path}:1",
                        hint="pass --text-field NAME")
    for row in reader:
        where = f"{path}:{reader.line_num}"
        if None in row:
            raise DataError(f"row has more fields than the header's {len(reader.fieldnames)}", where=where)
        if row[text_field] is None:
            raise DataError(f"row has no value for '{text_field}'", where=where)
        yield _record(row, where, text_field, f"{path.name}:{reader.line_num}", path.name)


def read_parquet(path: Path, text_field: str = "text") -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"not a readable Parquet file ({e})", where=str(path)) from None
    names = pf.schema_arrow.names
    if text_field not in names and "messages" not in names:
        raise DataError(f"no '{text_field}' or 'messages' column (columns: {', '.join(names)})", where=str(path),
                        hint="pass --text-field NAME")
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for obj in batch.to_pylist():
            row += 1
            obj = {k: v for k, v in obj.items() if v is not None}
            yield _record(obj, f"{path}:row {row}", text_field, f"{path.name}:{row}", path.name)


def _matches(rel: str, patterns) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in patterns)


def list_files(root: Path, include=None, exclude=None) -> list[Path]:
    """Files under `root` matching `include` and not `exclude`, sorted; excluded folders are not entered."""
    import os

    include = list(include or ["*"])
    exclude = list(DEFAULT_EXCLUDE) + list(exclude or [])
    files = []
    for folder, dirs, names in os.walk(root):
        rel_folder = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel_folder == "." else rel_folder + "/"
        dirs[:] = [d for d in dirs if not _matches(prefix + d, exclude)]
        for name in names:
            rel = prefix + name
            if _matches(rel, include) and not _matches(rel, exclude):
                files.append(Path(folder) / name)
    return sorted(files)


def read_folder(root: Path, include=None, exclude=None, *, skip_invalid: bool = False,
                source_prefix: str = "") -> Iterator[Record]:
    """One record per file; binary files (with NUL bytes) are skipped, other non-UTF-8 files are errors."""
    for path in list_files(root, include, exclude):
        raw = path.read_bytes()
        if b"\0" in raw:
            continue
        rel = path.relative_to(root).as_posix()
        try:
            text = _decode(raw, str(path))
        except DataError:
            if skip_invalid:
                continue
            raise
        yield {"id": source_prefix + rel, "text": text, "messages": None, "source": source_prefix + rel}


def read_source(src: Path, text_field: str = "text", include=None, exclude=None) -> Iterator[Record]:
    if not src.exists():
        raise DataError("no such file or directory", where=str(src))
    if src.is_dir():
        return read_folder(src, include, exclude)
    suffix = src.suffix.lower()
    if suffix in JSONL_SUFFIXES or (suffix == ".gz" and Path(src.stem).suffix.lower() in JSONL_SUFFIXES):
        return read_jsonl(src, text_field)
    if suffix in (".csv", ".tsv"):
        return read_csv(src, text_field)
    if suffix == ".parquet":
        return read_parquet(src, text_field)
    return iter([{"id": src.name, "text": _decode(src.read_bytes(), str(src)), "messages": None,
                  "source": src.name}])
