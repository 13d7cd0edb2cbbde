"""The dataset artifact: a directory of `data-*.parquet` files and `dataset.json` (counts, hash, parents).

Columns: id, text (null for chat records), messages (list of {role, content}; null for text records),
source, split ("train" or "validation").

The content hash (docs/data.md) is SHA-256 over the records in dataset order, each record being its
COLUMNS as a JSON object with sorted keys (`json.dumps(..., sort_keys=True, ensure_ascii=False)`, default
separators), UTF-8 encoded, concatenated with nothing between them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from lmforge.errors import DataError
from lmforge.io import read_json, write_json

FORMAT = "lmforge.dataset"
ROWS_PER_FILE = 50_000
COLUMNS = ("id", "text", "messages", "source", "split")


def _hash_record(h, record: dict) -> None:
    h.update(json.dumps({c: record.get(c) for c in COLUMNS}, sort_keys=True, ensure_ascii=False).encode("utf-8"))


def _schema():
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    types = {"id": pa.string(), "text": pa.string(), "messages": pa.list_(message), "source": pa.string(),
             "split": pa.string()}
    return pa.schema([(c, types[c]) for c in COLUMNS])


class DatasetWriter:
    """Streams records into Parquet files inside a (temporary) directory and tallies dataset.json."""

    def __init__(self, directory: Path, *, buffer_rows: int = 2048):
        self.dir = Path(directory)
        self.buffer: list[dict] = []
        self.buffer_rows = buffer_rows
        self.hash = hashlib.sha256()
        self.files: list[str] = []
        self.counts = {"records": 0, "chars": 0, "text": 0, "chat": 0, "train": 0, "validation": 0}
        self._writer = None
        self._rows_in_file = 0

    def add(self, record: dict) -> None:
        _hash_record(self.hash, record)
        c = self.counts
        c["records"] += 1
        c[record["split"]] += 1
        if record.get("messages") is not None:
            c["chat"] += 1
            c["chars"] += sum(len(m["content"]) for m in record["messages"])
        else:
            c["text"] += 1
            c["chars"] += len(record["text"])
        self.buffer.append(record)
        if len(self.buffer) >= self.buffer_rows:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.buffer:
            return
        if self._writer is None or self._rows_in_file >= ROWS_PER_FILE:
            if self._writer is not None:
                self._writer.close()
            name = f"data-{len(self.files):05d}.parquet"
            self.files.append(name)
            self._writer = pq.ParquetWriter(self.dir / name, _schema(), compression="zstd")
            self._rows_in_file = 0
        self._writer.write_table(pa.Table.from_pylist(self.buffer, schema=_schema()))
        self._rows_in_file += len(self.buffer)
        self.buffer = []

    def _resplit(self, splits: dict[int, str]) -> None:
        """Give the records at these positions (0-based, dataset order) another split: the files are
        rewritten in place (inside the temporary directory) and the hash is recomputed from them."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.hash, start = hashlib.sha256(), 0
        for name in self.files:
            rows = pq.read_table(self.dir / name).to_pylist()
            for i, row in enumerate(rows, start):
                if i in splits and row["split"] != splits[i]:
                    self.counts[row["split"]] -= 1
                    self.counts[splits[i]] += 1
                    row["split"] = splits[i]
                _hash_record(self.hash, row)
            if any(start <= i < start + len(rows) for i in splits):
                pq.write_table(pa.Table.from_pylist(rows, schema=_schema()), self.dir / name, compression="zstd")
            start += len(rows)

    def close(self, *, resplit: dict[int, str] | None = None, **meta: Any) -> dict:
        self._flush()
        if self._writer is not None:
            self._writer.close()
        if resplit:
            self._resplit(resplit)
        if self.counts["records"] == 0:
            raise DataError("no records found in the input", hint="check the paths and --include/--exclude globs")
        info = {
            "format": FORMAT,
            "version": 1,
            "content_hash": self.hash.hexdigest(),
            "counts": self.counts,
            "files": self.files,
            "columns": _schema().names,
            "parents": [],
            **meta,
        }
        write_json(self.dir / "dataset.json", info)
        return info


class Dataset:
    """A dataset directory opened for reading."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta = self.path / "dataset.json"
        if not meta.is_file():
            raise DataError("not a dataset directory (no dataset.json)", where=str(self.path),
                            hint="create one with `lmforge data ingest SRC -o DATASET`")
        self.info = read_json(meta)
        if self.info.get("format") != FORMAT:
            raise DataError(f"dataset.json has format {self.info.get('format')!r}, expected {FORMAT!r}",
                            where=str(meta))

    @property
    def content_hash(self) -> str:
        return self.info["content_hash"]

    def __len__(self) -> int:
        return self.info["counts"]["records"]

    def count(self, split: str | None = None) -> int:
        return len(self) if split is None else self.info["counts"].get(split, 0)

    def records(self, split: str | None = None, batch_size: int = 1024) -> Iterator[dict]:
        import pyarrow.parquet as pq

        for name in self.info["files"]:
            for batch in pq.ParquetFile(self.path / name).iter_batches(batch_size=batch_size):
                for rec in batch.to_pylist():
                    if split is None or rec["split"] == split:
                        yield rec


def record_text(record: dict) -> str:
    """The text a record contributes to curation: `text`, or a chat's message contents joined by newlines."""
    if record.get("messages") is not None:
        return "\n".join(m["content"] for m in record["messages"])
    return record["text"]
