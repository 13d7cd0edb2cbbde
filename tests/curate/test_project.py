"""The 2-D projection against planted truth: Gaussian blobs in 384-D with known labels must stay apart in 2-D
(a 1-nearest-neighbour classifier on the fitted sample predicts the blob of every transformed point), and
local neighbourhoods are kept (sklearn's trustworthiness)."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.curate.project import project_2d


def blobs(n: int, k: int, *, d: int = 384, spread: float = 0.6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    label = rng.integers(0, k, n)
    x = centres[label] + spread * rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), label


@pytest.fixture(scope="module")
def planted():
    x, label = blobs(600, 5)
    done = []
    xy = project_2d(x, fit_sample=300, seed=0, progress=done.append)
    return x, label, xy, done


def test_transformed_points_land_in_their_blob(planted):
    from sklearn.neighbors import KNeighborsClassifier

    x, label, xy, _ = planted
    fit = np.sort(np.random.default_rng(0).choice(len(x), 300, replace=False))  # the documented seeded sample
    rest = np.setdiff1d(np.arange(len(x)), fit)
    knn = KNeighborsClassifier(1).fit(xy[fit], label[fit])
    assert (knn.predict(xy[rest]) == label[rest]).mean() >= 0.98
    assert xy.dtype == np.float32 and xy.shape == (600, 2) and np.isfinite(xy).all()


def test_neighbourhoods_kept(planted):
    from sklearn.manifold import trustworthiness

    x, _, xy, _ = planted
    assert trustworthiness(x, xy, n_neighbors=10, metric="cosine") > 0.85


def test_progress_counts_every_row(planted):
    assert sum(planted[3]) == 600


def test_same_seed_same_bytes(planted):
    x, _, xy, _ = planted
    again = project_2d(x, fit_sample=300, seed=0)
    assert again.tobytes() == xy.tobytes()


def test_memmap_input(planted, tmp_path):
    x, _, xy, _ = planted
    path = tmp_path / "e.npy"
    np.save(path, x)
    assert project_2d(np.load(path, mmap_mode="r"), fit_sample=300, seed=0).tobytes() == xy.tobytes()


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17, 49])
def test_tiny_inputs(n):
    x, label = blobs(max(n, 1), 2, spread=0.05)
    x = x[:n]
    xy = project_2d(x)
    assert xy.shape == (n, 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    if n >= 17 and len(set(label[:n])) == 2:  # two tight blobs: PCA separates them along one axis
        from sklearn.metrics import silhouette_score

        assert silhouette_score(xy, label[:n]) > 0.8
