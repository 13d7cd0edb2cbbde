"""The cluster hierarchy against planted truth (nested Gaussian blobs in 384-D, adjusted Rand index; with and
without their UMAP layout), its
Ward merges against scipy's Ward linkage, and the exact nesting property on structured and structureless data."""

from __future__ import annotations

import numpy as np
import pytest

from lmforge.curate.cluster import cluster_hierarchy, level_sizes, ward_merges


def nested_blobs(n_coarse=4, n_fine=3, per=100, d=384, seed=0):
    """Coarse centres far apart, fine centres around each, points around those; unit vectors."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(size=(n_coarse, d)) * 1.0
    fine = coarse[:, None, :] + rng.normal(size=(n_coarse, n_fine, d)) * 0.45
    fine_label = np.repeat(np.arange(n_coarse * n_fine), per)
    x = fine.reshape(-1, d)[fine_label] + rng.normal(size=(len(fine_label), d)) * 0.12
    perm = rng.permutation(len(x))
    x, fine_label = x[perm], fine_label[perm]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), fine_label // n_fine, fine_label


def assert_nested(h: np.ndarray):
    for lvl in range(1, h.shape[1]):
        for c in np.unique(h[:, lvl]):
            assert len(np.unique(h[h[:, lvl] == c, lvl - 1])) == 1, f"level {lvl} cluster {c} has two parents"


def test_planted_levels_recovered():
    from sklearn.metrics import adjusted_rand_score

    x, coarse, fine = nested_blobs()
    h = cluster_hierarchy(x, None, levels=3, sizes=[4, 12, 30], seed=0)
    assert h.dtype == np.int32 and h.shape == (len(x), 3)
    assert adjusted_rand_score(coarse, h[:, 0]) > 0.95
    assert adjusted_rand_score(fine, h[:, 1]) > 0.95
    assert_nested(h)
    assert [len(np.unique(h[:, k])) for k in range(3)] == [4, 12, 30]


def test_default_sizes_nested_and_deterministic():
    x, coarse, _ = nested_blobs(per=40)
    h = cluster_hierarchy(x, None, seed=3)
    assert_nested(h)
    assert np.array_equal(h, cluster_hierarchy(x, None, seed=3))
    assert [len(np.unique(h[:, k])) for k in range(3)] == level_sizes(len(x), 3)


def test_ids_by_parent_then_size():
    x, _, _ = nested_blobs(per=30, seed=1)
    h = cluster_hierarchy(x, None, levels=4, sizes=[3, 6, 12, 24], seed=0)
    assert_nested(h)
    for lvl in range(4):
        ids = np.unique(h[:, lvl])
        assert np.array_equal(ids, np.arange(len(ids)))  # dense 0..k-1
        sizes = np.bincount(h[:, lvl])
        parent = np.array([h[h[:, lvl] == c, lvl - 1][0] if lvl else 0 for c in ids])
        assert np.all(np.diff(parent) >= 0)  # children of one parent are consecutive
        for p in np.unique(parent):
            assert np.all(np.diff(sizes[parent == p]) <= 0)  # largest first


def test_planted_levels_recovered_on_the_map():
    """What `lmforge map` does: fine regions of the 2-D layout (UMAP of the blobs), merged by embedding."""
    from sklearn.metrics import adjusted_rand_score

    from lmforge.curate.project import project_2d

    x, coarse, fine = nested_blobs(per=60)
    xy = project_2d(x, seed=0)
    h = cluster_hierarchy(x, xy, levels=3, sizes=[4, 12, 30], seed=0)
    assert adjusted_rand_score(coarse, h[:, 0]) > 0.95
    assert adjusted_rand_score(fine, h[:, 1]) > 0.9
    assert_nested(h)


@pytest.mark.parametrize("n", [0, 1, 2, 5, 40])
def test_structureless_and_tiny_inputs(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    for levels in (3, 5):
        for h in (cluster_hierarchy(x, xy, levels=levels, seed=0), cluster_hierarchy(x, None, levels=levels)):
            assert h.shape == (n, levels)
            assert_nested(h)


def test_level_sizes_scale_with_n():
    assert level_sizes(100_000) == [10, 47, 224]
    for n in (10, 300, 5000, 100_000, 10**7):
        s = level_sizes(n, 3)
        assert s == sorted(s) and s[0] >= 1 and s[-1] <= min(n, 500)
    c, m, f = level_sizes(100_000)
    assert 8 <= c <= 12 and 30 <= m <= 60 and 100 <= f <= 300


def test_ward_matches_scipy_unit_weights():
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import adjusted_rand_score

    pts = np.random.default_rng(0).normal(size=(60, 5))
    ours = ward_merges(pts, np.ones(60), [2, 5, 11, 30])
    z = linkage(pts, method="ward")
    for t, labels in zip([2, 5, 11, 30], ours):
        assert adjusted_rand_score(fcluster(z, t, criterion="maxclust"), labels) == 1.0


def test_weighted_ward_equals_repeated_points():
    """A point of weight w merges like w coincident copies of it in an unweighted Ward linkage."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(1)
    pts = rng.normal(size=(25, 4))
    w = rng.integers(1, 6, 25)
    rep = np.repeat(np.arange(25), w)
    z = linkage(pts[rep], method="ward")
    for t, labels in zip([3, 7, 12], ward_merges(pts, w.astype(float), [3, 7, 12])):
        theirs = fcluster(z, t, criterion="maxclust")
        assert adjusted_rand_score(theirs, labels[rep]) == 1.0
