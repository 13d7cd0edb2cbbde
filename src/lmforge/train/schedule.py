"""Learning-rate schedule: linear warmup, then cosine decay to min_lr_ratio * lr."""

import math


def lr_at(step: int, *, lr: float, warmup: int, total: int, min_ratio: float) -> float:
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
