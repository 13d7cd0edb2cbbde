"""Mixture: realised proportions follow the weights within binomial error, batches are a pure function of
(seed, draw), caps bound the window pool, masks survive mixing, and one source is TokenWindows itself.

Every source holds tokens from its own value range (source i: i * 10_000 + position), so a returned row
says by itself which source and which position it came from: the tests check the rows, not only the
mixture's own account of them."""

import math

import numpy as np
import pytest
import torch

from lmforge.data.loader import IGNORE_INDEX, TokenWindows
from lmforge.data.mixture import Mixture
from lmforge.errors import DataError, RecipeError

T, SPAN = 16, 10_000


def source(i: int, n: int, mask=None) -> TokenWindows:
    return TokenWindows(np.arange(i * SPAN, i * SPAN + n, dtype=np.int64), T, mask)


def origin(x: torch.Tensor) -> np.ndarray:
    """Source index of each row, read from the tokens themselves."""
    return (x[:, 0].numpy() // SPAN).astype(np.int64)


def test_realised_proportions_follow_weights_within_binomial_error():
    weights, names = [3.0, 1.0, 0.5], ["code", "chat", "prose"]
    mix = Mixture([source(0, 4000), source(1, 900), source(2, 2000)], weights, names, [None, None, None])
    draws, batch = 400, 8
    n = draws * batch
    counts = np.zeros(3, dtype=np.int64)
    for draw in range(draws):
        x, _ = mix.batch(11, draw, batch)
        seen = origin(x)
        assert np.array_equal(seen, mix.sources_of(11, draw, batch))  # the mixture reports rows truthfully
        counts += np.bincount(seen, minlength=3)
    realised = mix.realised(11, 0, draws, batch)
    for i, name in enumerate(names):
        p = weights[i] / sum(weights)
        sigma = math.sqrt(n * p * (1 - p))  # binomial: each row picks source i with probability p
        assert abs(counts[i] - n * p) <= 4 * sigma, (name, counts[i], n * p, sigma)
        assert realised[name] == counts[i] / n
    assert mix.shares == pytest.approx({n_: w / 4.5 for n_, w in zip(names, weights)})


def test_batches_are_a_pure_function_of_seed_and_draw():
    def build():
        return Mixture([source(0, 3000), source(1, 3000)], [1, 1], ["a", "b"], [None, None])
    one, other = build(), build()
    later = one.batch(5, 42, 8)
    one.batch(5, 3, 8)  # drawing other batches first changes nothing: there is no loader state
    for a, b in zip(later, one.batch(5, 42, 8)):
        assert torch.equal(a, b)
    for a, b in zip(later, other.batch(5, 42, 8)):
        assert torch.equal(a, b)
    assert not torch.equal(later[0], one.batch(5, 43, 8)[0])
    assert not torch.equal(later[0], one.batch(6, 42, 8)[0])


def test_cap_bounds_the_window_pool():
    cap = 500
    mix = Mixture([source(0, 4000), source(1, 4000)], [1, 1], ["big", "capped"], [None, cap])
    highest = {0: 0, 1: 0}
    for draw in range(300):
        x, y = mix.batch(2, draw, 8)
        for i in (0, 1):
            rows = origin(x) == i
            if rows.any():
                pos = y[rows].numpy() - i * SPAN  # targets are the window's last tokens
                highest[i] = max(highest[i], int(pos.max()))
    assert highest[1] < cap  # no capped window reaches past the first `cap` tokens
    assert highest[1] > cap - 3 * T  # and the pool is the whole capped stretch, not less
    assert highest[0] > cap * 4  # the uncapped source is not affected
    assert mix.epochs(10_000) == pytest.approx({"big": 0.5 * 10_000 / 4000, "capped": 0.5 * 10_000 / cap})


def test_masked_source_mixed_with_text_ignores_only_masked_targets():
    n = 3000
    mask = (np.arange(n) % 4 != 0).astype(np.uint8)  # planted: positions divisible by 4 are not targets
    mix = Mixture([source(0, n), source(1, n, mask)], [1, 1], ["text", "chat"], [None, None])
    seen = set()
    for draw in range(50):
        x, y = mix.batch(9, draw, 8)
        for row_x, row_y, i in zip(x, y, origin(x)):
            seen.add(int(i))
            positions = row_x.numpy() - i * SPAN + 1  # target j is the token after input j
            assert np.array_equal(positions, np.arange(positions[0], positions[0] + T))
            if i == 0:
                assert (row_y != IGNORE_INDEX).all() and np.array_equal(row_y.numpy() - i * SPAN, positions)
            else:
                expected = np.where(positions % 4 != 0, positions + i * SPAN, IGNORE_INDEX)
                assert np.array_equal(row_y.numpy(), expected)
    assert seen == {0, 1}


def test_single_source_mixture_is_token_windows_row_for_row():
    tw = source(0, 3000)
    mix = Mixture([tw], [2.5], ["only"], [None])
    for seed, draw in [(0, 0), (1, 17), (99, 12345)]:
        for a, b in zip(mix.batch(seed, draw, 8), tw.batch(seed, draw, 8)):
            assert torch.equal(a, b)


def test_rows_get_the_window_their_source_would_give_that_row():
    a, b = source(0, 3000), source(1, 2000)
    mix = Mixture([a, b], [1, 1], ["a", "b"], [None, None])
    x, y = mix.batch(3, 8, 16)
    which = mix.sources_of(3, 8, 16)
    for i, tw in enumerate((a, b)):
        xa, ya = tw.batch(3, 8, 16)
        assert torch.equal(x[which == i], xa[which == i]) and torch.equal(y[which == i], ya[which == i])


@pytest.mark.parametrize("kwargs, message", [
    (dict(weights=[1, 0]), "weight 0 is not a positive number"),
    (dict(weights=[1, -2]), "weight -2 is not a positive number"),
    (dict(weights=[1, float("nan")]), "weight nan"),
    (dict(names=["a", "a"]), "two sources are named 'a'"),
    (dict(weights=[1]), "2 sources but 1 weights"),
    (dict(max_tokens=[None, 10]), "max_tokens 10 is not a whole number of at least 18"),
    (dict(max_tokens=[None, 1e5]), "max_tokens 100000.0 is not a whole number"),
])
def test_bad_mixtures_are_recipe_errors(kwargs, message):
    args = dict(sources=[source(0, 1000), source(1, 1000)], weights=[1, 1], names=["a", "b"],
                max_tokens=[None, None]) | kwargs
    with pytest.raises(RecipeError, match=message):
        Mixture(**args)


def test_other_invalid_mixtures():
    with pytest.raises(RecipeError, match="at least one source"):
        Mixture([], [], [], [])
    with pytest.raises(RecipeError, match="different window lengths"):
        Mixture([source(0, 1000), TokenWindows(np.arange(1000), 8)], [1, 1], ["a", "b"], [None, None])
    mask = np.r_[np.zeros(500, np.uint8), np.ones(500, np.uint8)]  # targets only after the cap
    with pytest.raises(DataError, match="within max_tokens 400: the label mask marks no token"):
        Mixture([source(0, 1000, mask)], [1], ["chat"], [400])
