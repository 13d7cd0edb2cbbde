"""Topic caps against a brute-force oracle: the largest common cap c with c <= share * sum(min(size, c))."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lmforge.curate.balance import topic_cap
from lmforge.errors import RecipeError


def best_cap(sizes, share):
    feasible = [c for c in range(0, max(sizes) + 1) if c <= share * sum(min(n, c) for n in sizes)]
    return max(feasible)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=2, max_size=8), st.floats(0.05, 1.0), st.integers(0, 3))
@example([5, 9, 3], 0.3, 0)  # always one impossible share: 3 topics cannot each hold <= 30%
def test_topic_cap_matches_brute_force(sizes, share, seed):
    clusters = np.repeat(np.arange(len(sizes)) * 7 + 3, sizes)   # arbitrary labels
    np.random.default_rng(seed).shuffle(clusters)
    if share * len(sizes) < 1:  # k topics cannot each hold under 1/k of the records: refused, not returned
        with pytest.raises(RecipeError, match=f"impossible with {len(sizes)} topics"):
            topic_cap(clusters, share, seed=seed)
        return
    keep = topic_cap(clusters, share, seed=seed)
    c = best_cap(sizes, share)
    kept = np.array([(keep & (clusters == lab)).sum() for lab in np.arange(len(sizes)) * 7 + 3])
    assert kept.tolist() == [min(n, c) for n in sizes]
    assert kept.max() <= share * kept.sum() + 1e-9


def test_topic_cap_is_seeded_and_impossible_share_is_an_error():
    clusters = np.array([0] * 80 + [1] * 10 + [2] * 10)
    a, b = topic_cap(clusters, 0.5, seed=1), topic_cap(clusters, 0.5, seed=1)
    assert (a == b).all() and not (a == topic_cap(clusters, 0.5, seed=2)).all()
    assert a[:80].sum() == 20 and a[80:].all()
    with pytest.raises(RecipeError, match="impossible with 3 topics"):
        topic_cap(clusters, 0.3)
