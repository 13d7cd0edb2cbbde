"""2-D layout of the embeddings with UMAP (n_neighbors 15, min_dist 0.1, cosine).

Large inputs: UMAP is fitted on a seeded sample of `fit_sample` rows and every other row is placed with
`UMAP.transform`, chunk by chunk, so memory and time grow with the sample, not with the dataset. Measured
on 20,000 embedded pieces of stdlib source: fitted on 5,000 and transforming the other 15,000 (~2,700 rows/s)
keeps neighbourhoods as well as fitting all 20,000 (sklearn trustworthiness at 10 neighbours 0.93 vs 0.92).

The neighbour graphs come from an exact faiss inner-product search (embeddings are unit vectors, so
cosine distance = 1 - inner product) instead of UMAP's own pynndescent: the numba compilation of
pynndescent costs ~45 s in every fresh process, more than fitting 20,000 points, and exact neighbours
are also what UMAP computes itself below 4,096 points (benchmarks/map_stages.py, 5,000 records: 9.6 s
against 48.3 s for umap-learn with its own neighbours).

Deterministic: `random_state=seed` makes UMAP single-threaded, and that is the choice here (same data, same
bytes); `n_jobs=-1` without a seed measured no faster on these 2-core machines (fit of 20,000 points:
9.8 s seeded vs 9.8-10.1 s unseeded). Fewer than SMALL points: PCA, since UMAP's neighbourhoods mean
nothing on a handful of points.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np

SMALL = 50
N_NEIGHBORS = 15
MIN_DIST = 0.1
CHUNK = 10_000  # rows per transform call: UMAP runs 100 epochs on up to 10,000 new points, 30 beyond


def _unit(x) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


class _ExactIndex:
    """The two things `UMAP.transform` asks of its search index (`query`, `_angular_trees`), answered by an
    exact faiss search over the fitted sample."""

    _angular_trees = True

    def __init__(self, fitted: np.ndarray):
        import faiss

        self.index = faiss.IndexFlatIP(fitted.shape[1])
        self.index.add(fitted)

    def query(self, x: np.ndarray, k: int, epsilon: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        sim, idx = self.index.search(_unit(x), k)
        return idx.astype(np.int32), np.maximum(1.0 - sim, 0.0).astype(np.float32)


def _import_umap():
    """umap, with numba's on-disk cache turned on for its compiled functions.

    umap-learn compiles its numba functions in every new process (~10 s on an idle 2-core machine, 30-40 s
    on a busy one) because it does not ask numba to cache them; asking here makes the second and later
    processes load them from disk instead (measured: first projection of 505 points 12.5 s -> 2.5 s)."""
    import umap
    import umap.layouts
    import umap.umap_
    import umap.utils

    with contextlib.suppress(Exception):  # an optimisation only: never let a numba change break the map
        from numba.core.dispatcher import Dispatcher

        for mod in (umap.umap_, umap.layouts, umap.utils):
            for obj in vars(mod).values():
                if isinstance(obj, Dispatcher):
                    obj.enable_caching()
    return umap


def _pca(x: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA

    n = x.shape[0]
    out = np.zeros((n, 2), dtype=np.float32)
    if n >= 2:
        k = min(2, n, x.shape[1])
        out[:, :k] = PCA(n_components=k, svd_solver="full").fit_transform(x.astype(np.float64))
    return out


def project_2d(embeddings, *, fit_sample: int = 20_000, seed: int = 0, n_neighbors: int = N_NEIGHBORS,
               min_dist: float = MIN_DIST, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """float32 [n, 2] coordinates of `embeddings` (float [n, d], an array or a memmap).

    `progress(k)` is called as k more rows are placed (the fit counts as the sample's rows).
    """
    import warnings

    n = embeddings.shape[0]
    if n < max(SMALL, 2 * n_neighbors):
        out = _pca(_unit(embeddings))
        if progress:
            progress(n)
        return out
    umap = _import_umap()
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, fit_sample, replace=False)) if n > fit_sample else np.arange(n)
    fitted = _unit(embeddings[fit_rows])
    index = _ExactIndex(fitted)
    knn_idx, knn_dist = index.query(fitted, n_neighbors)
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, metric="cosine", random_state=seed,
                        precomputed_knn=(knn_idx, knn_dist), n_jobs=1)
    out = np.empty((n, 2), dtype=np.float32)
    with warnings.catch_warnings():  # "no search index": we give it ours below
        warnings.filterwarnings("ignore", message=r".*(precomputed_knn|n_jobs|disconnected).*")
        out[fit_rows] = reducer.fit_transform(fitted)
    if progress:
        progress(len(fit_rows))
    if len(fit_rows) == n:
        return out
    # UMAP.transform finds the new rows' neighbours through this attribute (umap-learn 0.5); a precomputed
    # graph leaves it empty, so hand it the exact index (tests/curate/test_project.py checks the placement)
    reducer._knn_search_index = index
    rest = np.setdiff1d(np.arange(n), fit_rows, assume_unique=True)
    for s in range(0, len(rest), CHUNK):
        rows = rest[s:s + CHUNK]
        out[rows] = reducer.transform(_unit(embeddings[rows]))
        if progress:
            progress(len(rows))
    return out
