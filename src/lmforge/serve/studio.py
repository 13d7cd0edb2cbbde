"""The studio's server: a FastAPI app over one map directory, plus the built front end.

The page loads each point column once as a raw little-endian typed array (8 MB for x and y of a million
points, no JSON parsing), and asks for everything else on demand: a record's text when hovered, search hits,
tags, exports. The API is documented in docs/curate.md ("The studio").
"""

from __future__ import annotations

import bisect
import json
import math
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel

from lmforge.errors import DataError
from lmforge.io import read_json
from lmforge.serve.http import run_server

STATIC_DIR = Path(__file__).resolve().parents[1] / "studio" / "dist"
SEARCH_LIMIT = 100_000  # rows a search returns (the count is always exact)
TAG_NAME = re.compile(r"^[^/\\\x00-\x1f\x7f]{1,100}$")


# --------------------------------------------------------------------------------------------- dataset rows
class RecordReader:
    """Fetches dataset records by global row (dataset order) without loading the dataset: a row maps to a
    (file, row group) by bisection over the Parquet footers, and recently read row groups stay cached."""

    def __init__(self, dataset, cache_groups: int = 16):
        import pyarrow.parquet as pq

        self.files = [dataset.path / name for name in dataset.info["files"]]
        self._pf = [pq.ParquetFile(path) for path in self.files]
        self.file_starts: list[int] = []
        self._starts: list[int] = []          # global first row of each row group
        self._loc: list[tuple[int, int]] = []  # (file index, row group index)
        total = 0
        for fi, pf in enumerate(self._pf):
            self.file_starts.append(total)
            for rg in range(pf.metadata.num_row_groups):
                self._starts.append(total)
                self._loc.append((fi, rg))
                total += pf.metadata.row_group(rg).num_rows
        self.total = total
        self._cache: OrderedDict[int, Any] = OrderedDict()
        self._cache_groups = cache_groups
        self._lock = threading.Lock()  # ParquetFile handles are not safe to share between threads

    def _group(self, g: int):
        with self._lock:
            table = self._cache.get(g)
            if table is None:
                fi, rg = self._loc[g]
                table = self._pf[fi].read_row_group(rg)
                self._cache[g] = table
                if len(self._cache) > self._cache_groups:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(g)
            return table

    def get(self, row: int) -> dict:
        g = bisect.bisect_right(self._starts, row) - 1
        return self._group(g).slice(row - self._starts[g], 1).to_pylist()[0]

    def iter_rows(self, rows) -> Iterator[dict]:
        """Records of `rows` (sorted ascending), reading each needed row group once."""
        import numpy as np

        rows = np.asarray(rows, dtype=np.int64)
        starts = np.asarray(self._starts, dtype=np.int64)
        groups = np.searchsorted(starts, rows, side="right") - 1
        bounds = np.flatnonzero(np.diff(groups)) + 1
        for chunk in np.split(np.arange(len(rows)), bounds):
            if len(chunk) == 0:
                continue
            g = int(groups[chunk[0]])
            yield from self._group(g).take(rows[chunk] - starts[g]).to_pylist()


def clean_record(record: dict) -> dict:
    """A dataset record as `lmforge data ingest` reads it back: text or messages, never both as null."""
    return {k: v for k, v in record.items() if v is not None}


# --------------------------------------------------------------------------------------------- the map
class StudioMap:
    """A map directory opened for the studio: point columns encoded for the page, records, search, tags."""

    def __init__(self, path: str | Path):
        import numpy as np
        import pyarrow.parquet as pq

        from lmforge.data.dataset import Dataset

        from lmforge.curate.mapping import MapArtifact

        self.artifact = MapArtifact(path)   # checks map.json; owns tags.json
        self.path = self.artifact.path
        self.info = self.artifact.info
        if not (self.path / "points.parquet").is_file():
            raise DataError("the map has no points.parquet", where=str(self.path), hint="rebuild the map")
        self.points = pq.read_table(self.path / "points.parquet")
        missing = [c for c in ("row", "id", "x", "y") if c not in self.points.column_names]
        if missing:
            raise DataError(f"points.parquet has no {', '.join(missing)} column", where=str(self.path),
                            hint="rebuild the map with this lmforge")
        self.n = self.points.num_rows
        if not np.array_equal(self.points.column("row").to_numpy(), np.arange(self.n)):
            raise DataError("points.parquet rows are not 0..N-1 in dataset order", where=str(self.path),
                            hint="rebuild the map")
        self.levels = int(self.info.get("levels", 0))
        topics = self.path / "topics.json"
        self.topics = read_json(topics) if topics.is_file() else {"levels": self.levels, "topics": []}
        self.topics["topics"] = self._for_display(self.topics.get("topics", []))

        ds_path = self.path / self.info.get("dataset", "")  # absolute by contract; relative to the map otherwise
        if not (ds_path / "dataset.json").is_file():
            raise DataError(f"the map's dataset {ds_path} is missing", where=str(self.path / "map.json"),
                            hint="put the dataset back at that path or rebuild the map")
        self.dataset = Dataset(ds_path)
        if len(self.dataset) != self.n:
            raise DataError(f"the map has {self.n} points but its dataset has {len(self.dataset)} records",
                            where=str(self.path / "map.json"), hint="the dataset changed since the map was built; rebuild the map")
        want = self.info.get("dataset_hash")
        if want and want != self.dataset.content_hash:
            raise DataError("the dataset changed since the map was built (content hash differs)", where=str(self.path / "map.json"),
                            hint="rebuild the map")
        self.records = RecordReader(self.dataset)
        self._ids = self.points.column("id")
        self._tags_lock = threading.Lock()
        self.columns: dict[str, tuple[dict, bytes]] = {}
        for field in self.points.schema:
            encoded = self._encode(field)
            if encoded is not None:
                self.columns[field.name] = encoded

    def _for_display(self, topics: list[dict]) -> list[dict]:
        """Topics as written plus what the page needs to place their labels: `radius`, the median distance of
        a topic's points to its (x, y) in map units (how big it is on screen at a zoom), and `display`, the
        label made distinct among siblings and free of generic words (label.distinct_labels, for maps written
        before labels were made so)."""
        import numpy as np

        from lmforge.curate.label import distinct_labels

        xy = np.stack([self.points.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in "xy"], 1)
        members: dict[tuple[int, int], np.ndarray] = {}  # (level, cluster) -> its rows
        for level in {int(t["level"]) for t in topics}:
            if f"cluster_{level}" not in self.points.column_names:
                continue
            ids = self.points.column(f"cluster_{level}").to_numpy(zero_copy_only=False)
            order = np.argsort(ids, kind="stable")
            for rows in np.split(order, np.flatnonzero(np.diff(ids[order])) + 1):
                if len(rows):
                    members[level, int(ids[rows[0]])] = rows
        out = []
        for t, shown in zip(topics, distinct_labels(topics)):
            rows = members.get((int(t["level"]), int(t["cluster"])), np.zeros(0, dtype=np.int64))
            d = np.hypot(xy[rows, 0] - t.get("x", 0.0), xy[rows, 1] - t.get("y", 0.0))
            d = d[np.isfinite(d)]
            out.append({**t, "radius": float(np.median(d)) if d.size else 0.0, "display": shown["label"]})
        return out

    # A column travels as raw bytes of one typed array; its description tells the page how to read it.
    def _encode(self, field) -> tuple[dict, bytes] | None:
        import numpy as np
        import pyarrow as pa

        name, t = field.name, field.type
        if name in ("row", "id"):
            return None
        col = self.points.column(name).combine_chunks()
        desc: dict[str, Any] = {"name": name}
        if name in ("x", "y"):
            arr = col.to_numpy(zero_copy_only=False).astype("<f4")
            finite = arr[np.isfinite(arr)]
            desc.update(kind="coord", min=float(finite.min()) if finite.size else 0.0,
                        max=float(finite.max()) if finite.size else 0.0)
        elif name.startswith("cluster_") and pa.types.is_integer(t):
            values = col.to_numpy(zero_copy_only=False)
            cats, codes = np.unique(values, return_inverse=True)
            arr = _codes(codes, len(cats))
            desc.update(kind="cluster", level=int(name.split("_", 1)[1]), categories=cats.tolist())
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t):
            enc = col.cast(pa.string()).fill_null("").dictionary_encode()
            cats = enc.dictionary.to_pylist()
            arr = _codes(enc.indices.to_numpy(zero_copy_only=False), len(cats))
            desc.update(kind="category", categories=cats)
        elif pa.types.is_boolean(t):
            arr = col.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8)
            desc.update(kind="bool", true=int(arr.sum()))
        elif name.endswith("_dup") and pa.types.is_integer(t):
            # 0: in no group, 1: kept (the group's representative), 2: redundant (a copy of the representative)
            group = col.to_numpy(zero_copy_only=False).astype(np.int64)
            arr = np.where(group < 0, 0, np.where(group == np.arange(self.n), 1, 2)).astype(np.uint8)
            desc.update(kind="group", redundant=int((arr == 2).sum()), groups=int((arr == 1).sum()))
        elif pa.types.is_integer(t) or pa.types.is_floating(t):
            values = col.to_numpy(zero_copy_only=False).astype(np.float64)
            arr = values.astype("<i4") if pa.types.is_integer(t) and _fits_int32(values) else values.astype("<f4")
            finite = values[np.isfinite(values)]
            desc.update(kind="numeric", integer=pa.types.is_integer(t),
                        min=float(finite.min()) if finite.size else 0.0,
                        max=float(finite.max()) if finite.size else 0.0)
        else:
            return None
        desc["dtype"] = str(arr.dtype).lstrip("<")
        return desc, arr.tobytes()

    def meta(self) -> dict:
        return {"format": self.info.get("format"), "version": self.info.get("version"), "map": str(self.path),
                "dataset": str(self.dataset.path), "records": self.n, "levels": self.levels,
                "embedding": self.info.get("embedding"), "signals": self.info.get("signals", []),
                "columns": [desc for desc, _ in self.columns.values()]}

    def check_rows(self, rows) -> Any:
        import numpy as np

        arr = np.unique(np.asarray(rows, dtype=np.int64))
        if arr.size and (arr[0] < 0 or arr[-1] >= self.n):
            bad = int(arr[0] if arr[0] < 0 else arr[-1])
            raise DataError(f"row {bad} is out of range", hint=f"rows are 0..{self.n - 1}")
        return arr

    def record(self, row: int) -> dict:
        from lmforge.data.dataset import record_text

        (row,) = self.check_rows([row])
        rec = self.records.get(int(row))
        point = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)  # JSON has no NaN
                 for k, v in self.points.slice(int(row), 1).to_pylist()[0].items()}
        return {"row": int(row), "record": clean_record(rec), "text": record_text(rec), "point": point}

    # ------------------------------------------------------------------------------------------- search
    def search(self, query: str, limit: int = SEARCH_LIMIT) -> dict:
        """Rows whose text contains every whitespace-separated term of `query`, case-insensitively."""
        import duckdb
        import numpy as np

        terms = [t.lower() for t in query.split()]
        if not terms:
            raise DataError("empty search query")
        files = [str(p) for p in self.records.files]
        listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        where = " AND ".join(["contains(t, ?)"] * len(terms))
        # a chat record's text is its message contents joined by newlines, like record_text
        sql = (f"SELECT filename, file_row_number FROM (SELECT filename, file_row_number, "
               f"lower(coalesce(text, array_to_string(list_transform(messages, lambda m: m.content), chr(10)))) "
               f"AS t FROM read_parquet([{listing}], filename=true, file_row_number=true)) WHERE {where}")
        con = duckdb.connect()
        try:
            hits = con.execute(sql, terms).fetchnumpy()
        finally:
            con.close()
        index = {f: i for i, f in enumerate(files)}
        starts = np.asarray(self.records.file_starts, dtype=np.int64)
        file_idx = np.fromiter((index[f] for f in hits["filename"]), dtype=np.int64, count=len(hits["filename"]))
        rows = np.sort(starts[file_idx] + np.asarray(hits["file_row_number"], dtype=np.int64))
        limit = max(0, min(int(limit), SEARCH_LIMIT))
        return {"query": query, "count": int(rows.size), "truncated": bool(rows.size > limit),
                "rows": rows[:limit].tolist()}

    # ------------------------------------------------------------------------------------------- tags
    def read_tags(self) -> dict[str, list[str]]:
        return self.artifact.tags()

    def rows_of_ids(self, ids: list[str]):
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        mask = pc.is_in(self._ids, value_set=pa.array(ids, type=pa.string()))
        return np.flatnonzero(mask.to_numpy(zero_copy_only=False))

    def tag_rows(self, name: str):
        tags = self.read_tags()
        if name not in tags:
            raise KeyError(name)
        return self.rows_of_ids(tags[name])

    def update_tag(self, name: str, rows, mode: str = "add") -> dict:
        """Add `rows` to tag `name`, replace its rows, or remove them; saved by record id in MAP/tags.json.
        Ids the map does not hold (a tag written against another map) are kept as they are."""
        if not TAG_NAME.match(name) or name != name.strip():
            raise DataError(f"bad tag name {name!r}", hint="1-100 characters, no slashes or control characters")
        rows = self.check_rows(rows)
        new_ids = self._ids.take(rows).to_pylist()
        with self._tags_lock:
            tags = self.read_tags()
            old = tags.get(name, [])
            if mode == "add":
                ids = list(dict.fromkeys(old + new_ids))
            elif mode == "replace":
                ids = list(dict.fromkeys(new_ids))
            elif mode == "remove":
                drop = set(new_ids)
                ids = [i for i in old if i not in drop]
            else:
                raise DataError(f"unknown tag mode {mode!r}", hint="add, replace or remove")
            tags[name] = ids
            self.artifact.write_tags(tags)
        return {"name": name, "ids": len(ids), "count": int(self.rows_of_ids(ids).size)}

    def delete_tag(self, name: str) -> None:
        with self._tags_lock:
            tags = self.read_tags()
            if name not in tags:
                raise KeyError(name)
            del tags[name]
            self.artifact.write_tags(tags)

    def export_lines(self, rows) -> Iterator[bytes]:
        for rec in self.records.iter_rows(rows):
            yield (json.dumps(clean_record(rec), ensure_ascii=False) + "\n").encode("utf-8")


class TagUpdate(BaseModel):
    rows: list[int]
    mode: str = "add"  # add | replace | remove


class ExportRequest(BaseModel):
    rows: list[int]
    name: str = "selection"  # the download's file name


def _codes(codes, n_categories: int):
    import numpy as np

    dtype = np.uint8 if n_categories <= 256 else np.uint16 if n_categories <= 65536 else np.dtype("<i4")
    return codes.astype(dtype)


def _fits_int32(values) -> bool:
    return values.size == 0 or (values.min() >= -(2 ** 31) and values.max() < 2 ** 31)


def _filename(name: str) -> str:
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "export") + ".jsonl"


# --------------------------------------------------------------------------------------------- the app
def create_app(map_dir: str | Path, *, static_dir: str | Path | None = STATIC_DIR):
    """The studio app for one map. Raises DataError (before anything is served) when the map is unusable."""
    from fastapi import Body, FastAPI, HTTPException, Query, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

    smap = StudioMap(map_dir)
    app = FastAPI(title="lmforge studio", docs_url="/api/docs", openapi_url="/api/openapi.json", redoc_url=None)
    app.state.map = smap

    @app.exception_handler(DataError)
    async def _data_error(request: Request, exc: DataError):
        return JSONResponse({"detail": exc.format()}, status_code=400)

    @app.get("/api/meta")
    def meta():
        return smap.meta()

    @app.get("/api/topics")
    def topics():
        return smap.topics

    @app.get("/api/column/{name}")
    def column(name: str):
        if name not in smap.columns:
            raise HTTPException(404, f"no column {name!r}")
        desc, data = smap.columns[name]
        return Response(data, media_type="application/octet-stream",
                        headers={"X-Dtype": desc["dtype"], "Cache-Control": "no-store"})

    @app.get("/api/record/{row}")
    def record(row: int):
        if not 0 <= row < smap.n:
            raise HTTPException(404, f"row {row} is out of range (0..{smap.n - 1})")
        return smap.record(row)

    @app.get("/api/search")
    def search(q: str = Query(..., min_length=1), limit: int = Query(SEARCH_LIMIT, ge=0)):
        return smap.search(q, limit)

    @app.get("/api/tags")
    def tags():
        return {"tags": [{"name": name, "ids": len(ids), "count": int(smap.rows_of_ids(ids).size)}
                         for name, ids in smap.read_tags().items()]}

    @app.get("/api/tags/{name}")
    def tag(name: str):
        try:
            rows = smap.tag_rows(name)
        except KeyError:
            raise HTTPException(404, f"no tag {name!r}") from None
        return {"name": name, "rows": rows.tolist()}

    @app.post("/api/tags/{name}")
    def update_tag(name: str, body: TagUpdate):
        return smap.update_tag(name, body.rows, body.mode)

    @app.delete("/api/tags/{name}")
    def delete_tag(name: str):
        try:
            smap.delete_tag(name)
        except KeyError:
            raise HTTPException(404, f"no tag {name!r}") from None
        return {"deleted": name}

    def jsonl(rows, name: str):
        return StreamingResponse(smap.export_lines(rows), media_type="application/x-ndjson",
                                 headers={"Content-Disposition": f'attachment; filename="{_filename(name)}"'})

    @app.get("/api/export")
    def export_tag(tag: str = Query(..., min_length=1)):
        try:
            rows = smap.tag_rows(tag)
        except KeyError:
            raise HTTPException(404, f"no tag {tag!r}") from None
        return jsonl(rows, tag)

    @app.post("/api/export")
    def export_rows(body: ExportRequest = Body(...)):
        return jsonl(smap.check_rows(body.rows), body.name)

    static = Path(static_dir) if static_dir else None
    if static is not None and (static / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        app.mount("/", StaticFiles(directory=static, html=True), name="studio")
    else:
        @app.get("/", response_class=HTMLResponse)
        def not_built():
            return HTMLResponse("<h1>lmforge studio</h1><p>The front end is not built. Run <code>make studio</code> "
                                "(or <code>npm ci && npm run build</code> in src/lmforge/studio); the API is at "
                                "<a href='/api/docs'>/api/docs</a>.</p>", status_code=503)
    return app


# --------------------------------------------------------------------------------------------- running it
def serve(map_dir: str | Path, *, host: str = "127.0.0.1", port: int = 8765, open_browser: bool = False,
          log_level: str = "warning") -> None:
    """Serve the studio for `map_dir` until interrupted (what `lmforge studio` and `lmforge map --open` run)."""
    from rich.console import Console

    app = create_app(map_dir)
    if not (STATIC_DIR / "index.html").is_file():
        Console(stderr=True).print("[yellow]warning:[/] the studio front end is not built (run `make studio`); "
                                   "serving the API only")
    run_server(app, host=host, port=port, log_level=log_level, what=f"studio for {map_dir}",
               open_browser=open_browser)
