"""Per-topic caps: no cluster above a set share of what remains."""

from __future__ import annotations

import numpy as np

from lmforge.errors import RecipeError


def topic_cap(clusters: np.ndarray, max_share: float, *, seed: int = 0) -> np.ndarray:
    """Which records to keep so that no cluster holds more than `max_share` of the kept records.

    Caps are a water level: cap = floor(max_share * kept), kept = sum(min(size, cap)); iterating from
    kept = n lowers both until they agree, which keeps as many records as the constraint allows with one
    common cap. Inside a capped cluster a seeded random subset is kept."""
    clusters = np.asarray(clusters)
    labels, inverse, sizes = np.unique(clusters, return_inverse=True, return_counts=True)
    if max_share * len(labels) < 1:
        raise RecipeError(f"topic_cap max_share {max_share} is impossible with {len(labels)} topics",
                          hint=f"use max_share >= {1 / len(labels):.3g} or a finer cluster level")
    kept_total = int(sizes.sum())
    while True:
        cap = int(np.floor(max_share * kept_total))
        new_total = int(np.minimum(sizes, cap).sum())
        if new_total == kept_total:
            break
        kept_total = new_total
    keep = np.ones(len(clusters), dtype=bool)
    rng = np.random.default_rng(seed)
    for k in np.flatnonzero(sizes > cap):
        members = np.flatnonzero(inverse == k)
        keep[rng.permutation(members)[cap:]] = False
    return keep
