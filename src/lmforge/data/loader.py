"""Batches from a packed token shard.

Training batches are random windows whose positions derive from (seed, step) alone, so a resumed run
sees exactly the batches an uninterrupted run would have seen, with no loader state to save.

A shard may come with a label mask (one uint8 per token, 1 = train on this token, as chat data marks the
assistant's tokens): targets whose mask is 0 become IGNORE_INDEX, which the loss skips. Inputs never
change, so the model still reads the whole conversation.
"""

from __future__ import annotations

import numpy as np
import torch

IGNORE_INDEX = -100  # torch's cross_entropy default ignore_index: masked targets cost nothing


class TokenWindows:
    """Windows of `seq_len + 1` tokens from one shard; inputs are the first `seq_len`, targets the last."""

    def __init__(self, tokens: np.ndarray, seq_len: int, mask: np.ndarray | None = None):
        from lmforge.errors import DataError

        if len(tokens) < seq_len + 2:
            raise DataError(f"only {len(tokens)} tokens, fewer than one window of {seq_len + 1}",
                            hint="add data or lower train.seq_len")
        if mask is not None:
            if mask.ndim != 1 or len(mask) != len(tokens):
                raise DataError(f"label mask has shape {tuple(mask.shape)}, the tokens {len(tokens)}",
                                hint="the mask needs one value per token; re-pack the data")
            if not mask.any():
                raise DataError("the label mask marks no token as a target", hint="nothing would be trained on; "
                                "check the chat records have assistant turns")
        self.tokens = tokens
        self.mask = mask
        self.seq_len = seq_len

    @property
    def n_starts(self) -> int:
        """How many window starts random batches draw from (0 .. n_starts - 1)."""
        return len(self.tokens) - self.seq_len - 1

    def starts(self, seed: int, step: int, batch_size: int) -> np.ndarray:
        """The window starts of `batch(seed, step, batch_size)`: a pure function of its arguments."""
        rng = np.random.default_rng([seed, step])
        return rng.integers(0, self.n_starts, size=batch_size)

    def gather(self, starts) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) for windows beginning at `starts`; masked targets are IGNORE_INDEX."""
        rows = np.stack([self.tokens[s: s + self.seq_len + 1] for s in starts]).astype(np.int64)  # (B, T+1)
        t = torch.from_numpy(rows)
        inputs, targets = t[:, :-1], t[:, 1:]  # (B, T) each
        if self.mask is None:
            return inputs, targets
        keep = np.stack([self.mask[s + 1: s + self.seq_len + 1] for s in starts]) != 0  # (B, T)
        return inputs, targets.masked_fill(torch.from_numpy(~keep), IGNORE_INDEX)

    def batch(self, seed: int, step: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gather(self.starts(seed, step, batch_size))

    def sequential(self, batch_size: int, max_tokens: int | None = None):
        """Non-overlapping windows for evaluation, yielding (inputs, targets). With `max_tokens` below the
        split's size, the windows are spread evenly over the whole split, not taken from its start, so a
        partial evaluation sees every part of the data."""
        total = (len(self.tokens) - 1) // self.seq_len
        n_windows = total if max_tokens is None else max(1, min(total, max_tokens // self.seq_len))
        chosen = np.linspace(0, total - 1, n_windows).round().astype(np.int64)
        for first in range(0, n_windows, batch_size):
            yield self.gather(chosen[first: first + batch_size] * self.seq_len)

    def targets(self, max_tokens: int | None = None) -> np.ndarray:
        """The target tokens `sequential` predicts, in order (for baselines over the same tokens); masked
        targets are left out, since no loss is taken on them."""
        y = np.concatenate([y.numpy().ravel() for _, y in self.sequential(64, max_tokens)])
        return y if self.mask is None else y[y != IGNORE_INDEX]
