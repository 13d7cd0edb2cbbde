"""Several token sources sampled by weight, as one loader.

A `Mixture` has the interface of `TokenWindows.batch`: `batch(seed, draw, batch_size)` is a pure function
of its arguments, so resuming, or a rollback that skips a stretch of data, needs no loader state; the
trainer passes a global micro-batch counter as `draw`.

How a row is drawn: each row of a batch picks its source independently, with probability weight / sum of
weights (from one random stream keyed by (seed, draw)); then that source gives it a uniformly random
window, exactly the window `TokenWindows.batch(seed, draw, batch_size)` of that source would put in the
same row. So weights are shares of *rows* (hence of input tokens, every row being seq_len long), whatever
the sources' sizes: a small source with a large weight is repeated, and a large one with a small weight is
sampled thinly. A mixture of one source gives exactly that source's `TokenWindows.batch`, row for row.

`max_tokens` caps a source: only its first N tokens form its window pool (every window, inputs and
targets, lies inside them); the weight is unchanged, so a capped source is repeated more often rather
than drawn less. Use it to hold a source to a fixed budget of distinct tokens.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lmforge.data.loader import TokenWindows
from lmforge.errors import DataError, RecipeError

_CHOICE_STREAM = 1  # keys the source choice as [seed, draw, 1]; never a TokenWindows key [seed, step](, 0...)


class Mixture:
    def __init__(self, sources: list[TokenWindows], weights: list[float], names: list[str],
                 max_tokens: list[int | None] | None = None):
        where = "data.mix"
        if not sources:
            raise RecipeError("a mixture needs at least one source", where=where)
        max_tokens = [None] * len(sources) if max_tokens is None else list(max_tokens)
        if not len(sources) == len(weights) == len(names) == len(max_tokens):
            raise RecipeError(f"{len(sources)} sources but {len(weights)} weights, {len(names)} names and "
                              f"{len(max_tokens)} caps", where=where, hint="give one of each per source")
        seen = set()
        for name in names:
            if name in seen:
                raise RecipeError(f"two sources are named {name!r}", where=where, hint="names must be unique")
            seen.add(name)
        for name, w in zip(names, weights):
            if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) \
                    or not (math.isfinite(w) and w > 0):
                raise RecipeError(f"weight {w!r} is not a positive number", where=f"{where}.{name}",
                                  hint="drop the source instead of giving it weight 0")
        seq_lens = {s.seq_len for s in sources}
        if len(seq_lens) != 1:
            raise RecipeError(f"sources have different window lengths {sorted(seq_lens)}", where=where)
        self.seq_len = seq_lens.pop()
        self.names = list(names)
        self.weights = [float(w) for w in weights]
        self.sources = [self._capped(s, cap, f"{where}.{name}") for s, cap, name in zip(sources, max_tokens, names)]
        self.max_tokens = max_tokens
        self._cdf = np.cumsum(self.weights) / sum(self.weights)

    def _capped(self, source: TokenWindows, cap: int | None, where: str) -> TokenWindows:
        if cap is None:
            return source
        if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < self.seq_len + 2:
            raise RecipeError(f"max_tokens {cap!r} is not a whole number of at least {self.seq_len + 2}",
                              where=where, hint=f"a window is seq_len + 1 = {self.seq_len + 1} tokens, and "
                              "TokenWindows needs one more; raise the cap or drop it")
        if cap >= len(source.tokens):
            return source
        mask = None if source.mask is None else source.mask[:cap]
        try:
            return TokenWindows(source.tokens[:cap], self.seq_len, mask)  # slices of a memmap are views
        except DataError as e:
            raise DataError(f"within max_tokens {cap}: {e.message}", where=where, hint=e.hint) from None

    @property
    def shares(self) -> dict[str, float]:
        """The intended share of rows per source (the normalised weights)."""
        return {n: w / sum(self.weights) for n, w in zip(self.names, self.weights)}

    def sources_of(self, seed: int, draw: int, batch_size: int) -> np.ndarray:
        """Which source (index into `names`) each row of `batch(seed, draw, batch_size)` comes from; cheap,
        it reads no tokens (for per-source loss and proportions in the logs)."""
        if len(self.sources) == 1:
            return np.zeros(batch_size, dtype=np.int64)
        u = np.random.default_rng([seed, draw, _CHOICE_STREAM]).random(batch_size)
        return np.minimum(np.searchsorted(self._cdf, u, side="right"), len(self.sources) - 1)

    def batch(self, seed: int, draw: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        which = self.sources_of(seed, draw, batch_size)  # (B,)
        inputs = torch.empty(batch_size, self.seq_len, dtype=torch.int64)  # (B, T)
        targets = torch.empty(batch_size, self.seq_len, dtype=torch.int64)  # (B, T)
        for i in np.unique(which):
            rows = np.flatnonzero(which == i)
            source = self.sources[i]
            x, y = source.gather(source.starts(seed, draw, batch_size)[rows])  # (len(rows), T) each
            inputs[rows], targets[rows] = x, y
        return inputs, targets

    def realised(self, seed: int, first: int, last: int, batch_size: int) -> dict[str, float]:
        """The share of rows each source actually got over draws first .. last - 1 (half-open, like range);
        compare with `shares`."""
        counts = np.zeros(len(self.sources), dtype=np.int64)
        for draw in range(first, last):
            counts += np.bincount(self.sources_of(seed, draw, batch_size), minlength=len(self.sources))
        total = max(1, int(counts.sum()))
        return {n: int(c) / total for n, c in zip(self.names, counts)}

    def epochs(self, train_tokens: int) -> dict[str, float]:
        """How many times each source's window pool is expected to be read over `train_tokens` input tokens
        (above 1 means repetition): share * train_tokens / pool size."""
        return {n: share * train_tokens / len(s.tokens) for (n, share), s in zip(self.shares.items(), self.sources)}
