"""Batches from a packed token shard.

Training batches are random windows whose positions derive from (seed, step) alone, so a resumed run
sees exactly the batches an uninterrupted run would have seen, with no loader state to save.
"""

from __future__ import annotations

import numpy as np
import torch


class TokenWindows:
    def __init__(self, tokens: np.ndarray, seq_len: int):
        if len(tokens) < seq_len + 2:
            from lmforge.errors import DataError

            raise DataError(f"only {len(tokens)} tokens, fewer than one window of {seq_len + 1}",
                            hint="add data or lower train.seq_len")
        self.tokens = tokens
        self.seq_len = seq_len

    def batch(self, seed: int, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([seed, step])
        starts = rng.integers(0, len(self.tokens) - self.seq_len - 1, size=batch_size)
        rows = np.stack([self.tokens[s: s + self.seq_len + 1] for s in starts]).astype(np.int64)
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]

    def sequential(self, batch_size: int, max_tokens: int | None = None):
        """Non-overlapping windows for evaluation, yielding (inputs, targets). With `max_tokens` below the
        split's size, the windows are spread evenly over the whole split, not taken from its start, so a
        partial evaluation sees every part of the data."""
        total = (len(self.tokens) - 1) // self.seq_len
        n_windows = total if max_tokens is None else max(1, min(total, max_tokens // self.seq_len))
        chosen = np.linspace(0, total - 1, n_windows).round().astype(np.int64)
        for first in range(0, n_windows, batch_size):
            rows = np.stack([self.tokens[i * self.seq_len: i * self.seq_len + self.seq_len + 1]
                             for i in chosen[first: first + batch_size]])
            t = torch.from_numpy(rows.astype(np.int64))
            yield t[:, :-1], t[:, 1:]

    def targets(self, max_tokens: int | None = None) -> np.ndarray:
        """The target tokens `sequential` predicts, in order (for baselines over the same tokens)."""
        return np.concatenate([y.numpy().ravel() for _, y in self.sequential(64, max_tokens)])
