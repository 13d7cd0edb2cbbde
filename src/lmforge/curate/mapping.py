"""`lmforge map`: the map artifact of a dataset, and its reader.

Stages, each a streaming pass over the dataset or a call on per-record arrays, each with a progress bar:

  read       ids, sources, splits (three Arrow columns)
  signals    length, words, repetition, short-answer flag                  (signals.py)
  embed      sentence embeddings, chunk by chunk, into embeddings.npy     (engine.embed -> embed.py, cached)
  exact      exact-duplicate groups of normalised texts                   (dedup.exact_groups)
  near       MinHash signatures per chunk, then LSH + exact Jaccard       (engine.minhash, dedup.near_groups)
  semantic   cosine >= threshold groups over the embeddings               (dedup.semantic_groups)
  umap       2-D layout, fitted on a sample, the rest transformed         (project.py)
  clusters   nested coarse-to-fine hierarchy                              (cluster.py)
  labels     c-TF-IDF keywords for every cluster                          (label.py)
  write      points.parquet, topics.json, map.json

Memory: texts are never all held at once (passes read the Parquet row groups again; random access for the
near-duplicate check reads only the row groups it needs); embeddings live in a memory-mapped .npy; what stays
in memory is a few numbers per record (MinHash signatures: 512 bytes). The heavy record-parallel stages
(embedding, MinHash) are calls to the engine's pure batch functions, so `--engine ray` runs them on a cluster
with identical results.

The artifact (directory, written atomically) is specified in docs/curate.md; `MapArtifact` reads it.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from lmforge.data.dataset import Dataset, record_text
from lmforge.errors import DataError, LmforgeError
from lmforge.io import atomic_dir, read_json, write_json

FORMAT = "lmforge.map"
VERSION = 1
SIGNALS = ["length", "words", "short_answer", "repetition", "exact_dup", "near_dup", "semantic_dup"]
CHUNK = 4096          # records per batch of a streaming pass
EMBED_CHUNK = 4096    # records per engine.embed call (and per embedding cache entry)
SPAN_DISTRIBUTED = 1 << 18  # records per engine call when the engine spreads a call over workers (Ray)
NUM_PERM, NGRAM = 128, 5
STAGES = ["read", "signals", "embed", "exact", "near", "semantic", "umap", "clusters", "labels", "write"]


class DatasetTexts(Sequence[str]):
    """The `record_text` of every record, by row, read lazily from the dataset's Parquet row groups (the last
    one read is cached, so ascending access decodes each row group once)."""

    def __init__(self, dataset: Dataset):
        import pyarrow.parquet as pq

        self._files = [pq.ParquetFile(dataset.path / name) for name in dataset.info["files"]]
        self._loc: list[tuple[int, int]] = []
        starts = [0]
        for fi, pf in enumerate(self._files):
            for rg in range(pf.metadata.num_row_groups):
                self._loc.append((fi, rg))
                starts.append(starts[-1] + pf.metadata.row_group(rg).num_rows)
        self._starts = np.asarray(starts, dtype=np.int64)
        self._cached: tuple[int, list[str]] = (-1, [])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _group(self, g: int) -> list[str]:
        if self._cached[0] != g:
            fi, rg = self._loc[g]
            table = self._files[fi].read_row_group(rg, columns=["text", "messages"])
            self._cached = (g, [record_text(r) for r in table.to_pylist()])
        return self._cached[1]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        g = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self._group(g)[i - int(self._starts[g])]

    def __iter__(self) -> Iterator[str]:
        for g in range(len(self._loc)):
            yield from self._group(g)

    def chunks(self, size: int = CHUNK) -> Iterator[tuple[int, list[str]]]:
        """(first row, texts) batches of `size` records in dataset order."""
        return _batched(self, size)


def _batched(items: Iterable, size: int) -> Iterator[tuple[int, list]]:
    """(index of the first item, list of up to `size` items) batches."""
    batch: list = []
    start = 0
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield start, batch
            start += size
            batch = []
    if batch:
        yield start, batch


class _Stages:
    """One transient rich progress bar per stage (rate and ETA when the total is known) and its wall time."""

    def __init__(self, progress: bool):
        from rich.console import Console

        self.progress = progress and Console().is_terminal  # a log file gets no bars (nor their blank lines)
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task):
                return Text(f"{task.speed:,.0f} records/s" if task.speed else "", style="progress.data.speed")

        columns = ([TextColumn(f"[bold]{name:9}[/]"), BarColumn(), MofNCompleteColumn(), Rate(),
                    TimeRemainingColumn()] if total is not None else
                   [TextColumn(f"[bold]{name:9}[/]"), SpinnerColumn(), TimeElapsedColumn()])
        t0 = time.perf_counter()
        with Progress(*columns, disable=not self.progress, transient=True) as bar:
            task = bar.add_task(name, total=total)
            yield lambda k: bar.advance(task, k)
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def _redundant(groups: np.ndarray) -> int:
    return int(((groups != -1) & (groups != np.arange(len(groups)))).sum())


def _check_params(dataset: Path, out: Path, *, levels: int, fit_sample: int, near_threshold: float,
                  semantic_threshold: float, overwrite: bool) -> None:
    if not 3 <= levels <= 8:
        raise LmforgeError(f"--levels {levels}: a map has 3 to 8 levels")
    if fit_sample < 100:
        raise LmforgeError(f"--fit-sample {fit_sample}: UMAP needs at least 100 points to fit")
    if not 0 < near_threshold < 1:
        raise LmforgeError(f"--near-threshold {near_threshold}: a Jaccard threshold is in (0, 1)")
    if not 0 < semantic_threshold <= 1:
        raise LmforgeError(f"--semantic-threshold {semantic_threshold}: a cosine threshold is in (0, 1]")
    d, o = dataset.resolve(), out.resolve()
    if o == d or d in o.parents or o in d.parents:
        raise LmforgeError(f"the map {out} would overlap the dataset {dataset}", hint="write the map elsewhere")
    if out.exists() and not overwrite:
        raise LmforgeError(f"{out} already exists", hint="choose another output path or pass --overwrite")


def build_map(dataset: str | Path, out: str | Path, *, model: str | None = None, max_seq_length: int = 256,
              fit_sample: int = 20_000, levels: int = 3, near_threshold: float = 0.8,
              semantic_threshold: float = 0.95, seed: int = 0, engine: str = "local", top_k: int = 5,
              overwrite: bool = False, progress: bool = True, timings: dict | None = None) -> dict:
    """Build the map of `dataset` into the directory `out` (atomically) and return its map.json.

    Same dataset and parameters, same bytes in every file. `timings`, when given, receives each stage's
    wall-clock seconds (the stage names are STAGES)."""
    dataset, out = Path(dataset), Path(out)
    ds = Dataset(dataset)  # bad input fails here, before any heavy import or work
    _check_params(dataset, out, levels=levels, fit_sample=fit_sample, near_threshold=near_threshold,
                  semantic_threshold=semantic_threshold, overwrite=overwrite)
    from lmforge.curate.embed import describe, get_embedder

    embedder = get_embedder(model, max_seq_length=max_seq_length)  # a bad --model or length fails here

    import pyarrow as pa
    import pyarrow.parquet as pq

    from lmforge.curate import dedup, signals
    from lmforge.curate.cluster import cluster_hierarchy
    from lmforge.curate.engine import get_engine
    from lmforge.curate.label import label_clusters
    from lmforge.curate.project import MIN_DIST, N_NEIGHBORS, project_2d

    eng = get_engine(engine)
    n = len(ds)
    # a distributed engine needs many records per call to keep its workers busy
    embed_span, minhash_span = (EMBED_CHUNK, CHUNK) if eng.name == "local" else (SPAN_DISTRIBUTED,) * 2
    texts = DatasetTexts(ds)
    if len(texts) != n:
        raise DataError(f"dataset.json counts {n} records but its Parquet files hold {len(texts)}",
                        where=str(dataset), hint="re-create the dataset")
    stage = _Stages(progress)

    with atomic_dir(out, overwrite=overwrite) as tmp:
        with stage("read", n) as advance:
            cols: dict[str, list] = {"id": [], "source": [], "split": []}
            for name in ds.info["files"]:
                for batch in pq.ParquetFile(ds.path / name).iter_batches(batch_size=65536,
                                                                          columns=list(cols)):
                    for c in cols:
                        cols[c].append(batch.column(c))
                    advance(batch.num_rows)
            meta = {c: pa.chunked_array(v, type=pa.string()) for c, v in cols.items()}

        with stage("signals", n) as advance:
            length, words = np.empty(n, np.int32), np.empty(n, np.int32)
            repetition, short = np.empty(n, np.float32), np.empty(n, bool)
            for start, recs in _batched(ds.records(), CHUNK):
                t = [record_text(r) for r in recs]
                sl = slice(start, start + len(t))
                length[sl], words[sl] = signals.lengths(t)
                repetition[sl] = signals.repetition_ratio(t)
                short[sl] = signals.short_answers(recs)
                advance(len(t))

        with stage("embed", n) as advance:
            emb = np.lib.format.open_memmap(tmp / "embeddings.npy", mode="w+", dtype=np.float32,
                                            shape=(n, embedder.dim))
            for start, chunk in texts.chunks(embed_span):
                # cached per row range: a second map of the same dataset (and model, length) embeds nothing
                emb[start:start + len(chunk)] = eng.embed(
                    chunk, model=model, max_seq_length=max_seq_length,
                    cache_key=f"{ds.content_hash}:{start}:{start + len(chunk)}", progress=False)
                advance(len(chunk))
            emb.flush()
            del emb
            emb = np.load(tmp / "embeddings.npy", mmap_mode="r")

        with stage("exact", n) as advance:
            def counted() -> Iterator[str]:
                for _, batch in texts.chunks(CHUNK):
                    yield from batch
                    advance(len(batch))

            exact = dedup.exact_groups(counted())

        with stage("near", n) as advance:
            sig = np.empty((n, NUM_PERM), dtype=np.uint32)
            for start, chunk in texts.chunks(minhash_span):
                sig[start:start + len(chunk)] = eng.minhash(chunk, num_perm=NUM_PERM, ngram=NGRAM, seed=seed)
                advance(len(chunk))
            near = dedup.near_groups(texts, threshold=near_threshold, num_perm=NUM_PERM, ngram=NGRAM, seed=seed,
                                     signatures=sig)
            del sig

        with stage("semantic"):
            semantic = dedup.semantic_groups(emb, threshold=semantic_threshold)

        with stage("umap", n) as advance:
            xy = project_2d(emb, fit_sample=fit_sample, seed=seed, progress=advance)

        with stage("clusters"):
            hierarchy = cluster_hierarchy(emb, xy, levels=levels, seed=seed)

        with stage("labels", n) as advance:
            topics = label_clusters(iter(texts), hierarchy, xy, top_k=top_k, progress=advance)

        with stage("write"):
            table = pa.table({
                "row": pa.array(np.arange(n, dtype=np.int64)),
                **meta,
                "x": pa.array(xy[:, 0]), "y": pa.array(xy[:, 1]),
                **{f"cluster_{k}": pa.array(hierarchy[:, k]) for k in range(levels)},
                "length": pa.array(length), "words": pa.array(words), "short_answer": pa.array(short),
                "repetition": pa.array(repetition), "exact_dup": pa.array(exact.astype(np.int64)),
                "near_dup": pa.array(near.astype(np.int64)), "semantic_dup": pa.array(semantic.astype(np.int64)),
            })
            pq.write_table(table, tmp / "points.parquet", compression="zstd")
            write_json(tmp / "topics.json", {"levels": levels, "topics": topics})
        info = {
            "format": FORMAT, "version": VERSION, "dataset": str(dataset.resolve()),
            "dataset_hash": ds.content_hash, "records": n,
            "embedding": describe(embedder),
            "levels": levels, "signals": SIGNALS,
            "params": {"fit_sample": fit_sample, "near_threshold": near_threshold,
                       "semantic_threshold": semantic_threshold, "seed": seed, "engine": engine,
                       "top_k": top_k, "minhash": {"num_perm": NUM_PERM, "ngram": NGRAM},
                       "umap": {"n_neighbors": N_NEIGHBORS, "min_dist": MIN_DIST, "metric": "cosine"}},
            "stats": {
                "clusters": [int(len(np.unique(hierarchy[:, k]))) for k in range(levels)],
                "redundant": {"exact": _redundant(exact), "near": _redundant(near),
                              "semantic": _redundant(semantic)},
                "short_answers": int(short.sum()),
            },
        }
        write_json(tmp / "map.json", info)
        del emb  # release the memory map before the directory is renamed
    if timings is not None:
        timings.update(stage.seconds)
    return info


class MapArtifact:
    """A map directory opened for reading (see the contract in docs/curate.md)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        meta = self.path / "map.json"
        if not meta.is_file():
            raise DataError("not a map directory (no map.json)", where=str(self.path),
                            hint="build one with `lmforge map DATASET -o MAP`")
        self.info: dict = read_json(meta)
        if self.info.get("format") != FORMAT:
            raise DataError(f"map.json has format {self.info.get('format')!r}, expected {FORMAT!r}",
                            where=str(meta))
        if self.info.get("version") != VERSION:
            raise DataError(f"map.json version {self.info.get('version')} is not supported (expected {VERSION})",
                            where=str(meta), hint="rebuild the map with this lmforge")

    @property
    def levels(self) -> int:
        return int(self.info["levels"])

    def __len__(self) -> int:
        return int(self.info["records"])

    def points(self, columns: list[str] | None = None):
        """points.parquet as a pyarrow Table (memory-mapped)."""
        import pyarrow.parquet as pq

        return pq.read_table(self.path / "points.parquet", columns=columns, memory_map=True)

    def topics(self) -> dict:
        """topics.json: {"levels": L, "topics": [...]}."""
        return read_json(self.path / "topics.json")

    def embeddings(self) -> np.ndarray:
        """float32 [N, dim], L2-normalised, memory-mapped read-only."""
        return np.load(self.path / "embeddings.npy", mmap_mode="r")

    def dataset(self) -> Dataset:
        return Dataset(self.info["dataset"])

    def tags(self) -> dict[str, list[str]]:
        """{tag name: [record id, ...]} from tags.json (written by the studio); {} when there is none."""
        import json

        path = self.path / "tags.json"
        if not path.is_file():
            return {}
        try:
            tags = read_json(path).get("tags", {})
        except (json.JSONDecodeError, AttributeError) as e:
            raise DataError(f"tags.json is not valid ({e})", where=str(path), hint="fix or remove the file") from None
        if not isinstance(tags, dict) or not all(isinstance(v, list) for v in tags.values()):
            raise DataError('tags.json must be {"tags": {"name": ["record id", ...]}}', where=str(path))
        return {str(k): [str(i) for i in v] for k, v in tags.items()}

    def write_tags(self, tags: dict[str, list[str]]) -> None:
        write_json(self.path / "tags.json", {"tags": {str(k): [str(i) for i in v] for k, v in tags.items()}})
