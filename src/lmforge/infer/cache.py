"""A KV cache with one slot per request, each at its own length: what lets the engine decode requests of
different lengths in one batch (continuous batching) without left padding.

The model sees a slot cache through a view that speaks the model's cache protocol (lmforge.model.transformer
.KVCache): a prefill view writes one request's prompt into its slot; a decode view runs one new token for the
first `rows` slots at once, each at its own position, attending only to its own filled keys.
"""

from __future__ import annotations

import torch

from lmforge.model.config import ModelConfig


class SlotCache:
    """Preallocated keys and values: (layers, slots, kv_heads, max_len, head_dim), and each slot's length."""

    def __init__(self, config: ModelConfig, slots: int, max_len: int, dtype: torch.dtype, device=None):
        shape = (config.num_hidden_layers, slots, config.num_key_value_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = torch.zeros(slots, dtype=torch.long, device=device)  # filled positions per slot
        self.slots, self.max_len = slots, max_len

    def free(self, slot: int) -> None:
        self.lengths[slot] = 0

    def prefill(self, slot: int) -> "_Prefill":
        return _Prefill(self, slot, int(self.lengths[slot]))

    def decode(self, active: torch.Tensor, *, static: bool = False) -> "_Decode":
        """A view for one token in each of the first len(active) slots; rows where `active` is False are
        computed (their slot is free, so whatever they write is overwritten before it is read) but not advanced.
        `static` attends over all max_len positions (masked) instead of the longest filled span, so every step has
        the same shapes and a compiled step never recompiles."""
        return _Decode(self, active, static)


class _Prefill:
    def __init__(self, cache: SlotCache, slot: int, start: int):
        self.cache, self.slot, self.start = cache, slot, start

    def positions(self, length: int) -> int:
        return self.start

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        c, s, T = self.cache, self.slot, k.shape[2]
        end = self.start + T
        c.k[layer, s, :, self.start:end] = k[0]                               # (n_kv, T, hd)
        c.v[layer, s, :, self.start:end] = v[0]
        mask = None
        if self.start > 0:  # continuing a filled slot: query i sees every past key and the chunk up to i
            mask = torch.ones(T, end, dtype=torch.bool, device=k.device).tril(diagonal=self.start)
        return c.k[layer, s:s + 1, :, :end], c.v[layer, s:s + 1, :, :end], mask

    def advance(self, length: int) -> None:
        self.cache.lengths[self.slot] = self.start + length


class _Decode:
    def __init__(self, cache: SlotCache, active: torch.Tensor, static: bool = False):
        rows = active.shape[0]
        self.cache, self.active = cache, active
        self.pos = cache.lengths[:rows].clone()                               # (B,) where each new token goes
        self.rows = torch.arange(rows, device=active.device)
        span = cache.max_len if static else int(self.pos.max()) + 1           # keys any row can see
        keys = torch.arange(span, device=active.device)
        self.mask = (keys[None, :] <= self.pos[:, None])[:, None, None, :]    # (B, 1, 1, S)
        self.span = span

    def positions(self, length: int) -> torch.Tensor:
        return self.pos[:, None]                                              # (B, 1)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        c, B = self.cache, k.shape[0]
        c.k[layer, self.rows, :, self.pos] = k[:, :, 0]                       # (B, n_kv, hd) at each row's position
        c.v[layer, self.rows, :, self.pos] = v[:, :, 0]
        return c.k[layer, :B, :, :self.span], c.v[layer, :B, :, :self.span], self.mask

    def advance(self, length: int) -> None:
        self.cache.lengths[:self.rows.shape[0]] += self.active.long()
