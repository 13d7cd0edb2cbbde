"""Validation loss in nats per token and bits per byte, and the unigram-entropy baseline.

Bits per byte divides the total loss (in bits) by the UTF-8 bytes the predicted tokens stand for, so it
compares models with different tokenizers. Special tokens (bos/eos) stand for zero bytes; their loss still
counts, which makes the figure slightly pessimistic, never flattering.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from lmforge.data.loader import IGNORE_INDEX, TokenWindows
from lmforge.train.loss import cross_entropy_sum
from lmforge.train.precision import autocast


def byte_lengths(tokenizer) -> np.ndarray:
    return np.array([len(b) for b in tokenizer.token_bytes], dtype=np.int64)


@torch.no_grad()
def evaluate_loss(model, windows: TokenWindows, bytes_per_token: np.ndarray, *, max_tokens: int | None = None,
                  batch_size: int = 32, precision: str = "fp32", device: torch.device | str = "cpu",
                  per_window: bool = False) -> dict:
    """Loss over the windows' targets; masked targets (IGNORE_INDEX, e.g. a chat's prompt) do not count.
    `per_window` adds "windows": [[nats, tokens, bytes] per window] (what the evaluation harness bootstraps)."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    total_nats, n_tokens, n_bytes = 0.0, 0, 0
    rows = []
    lengths = torch.from_numpy(bytes_per_token)
    for x, y in windows.sequential(batch_size, max_tokens):
        with autocast(precision, device.type):
            logits = model(x.to(device))                           # (B, T, V)
        total_nats += cross_entropy_sum(logits, y.to(device)).item()
        kept = y[y != IGNORE_INDEX]                                 # (targets,)
        n_tokens += kept.numel()
        n_bytes += int(lengths[kept].sum())
        if per_window:
            nats = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), y.to(device),
                                                     ignore_index=IGNORE_INDEX, reduction="none").sum(1)  # (B,)
            keep = y != IGNORE_INDEX                                                                      # (B, T)
            window_bytes = (lengths[y.clamp(min=0)] * keep).sum(1)                                        # (B,)
            rows += [[n.item(), int(k), int(b)] for n, k, b in zip(nats, keep.sum(1), window_bytes)]
    model.train(was_training)
    out = summarize(total_nats, n_tokens, n_bytes)
    return {**out, "windows": rows} if per_window else out


def summarize(total_nats: float, n_tokens: int, n_bytes: int) -> dict:
    return {"loss": total_nats / max(1, n_tokens), "bpb": total_nats / math.log(2) / max(1, n_bytes),
            "tokens": n_tokens, "bytes": n_bytes}


def unigram_baseline(tokens: np.ndarray, bytes_per_token: np.ndarray, vocab_size: int) -> dict:
    """Cross-entropy of the tokens under their own unigram distribution (the entropy): what a model that
    ignores context entirely could at best reach on this text."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    entropy = float(-(p * np.log(p)).sum())
    n_bytes = int((counts * bytes_per_token[: len(counts)]).sum())
    return summarize(entropy * len(tokens), len(tokens), n_bytes)
