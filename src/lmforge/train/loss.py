"""The training loss, outside the model: summed token cross-entropy, normalised once per optimizer step.

Each micro-batch contributes the *sum* of its targets' losses; the step divides by the number of targets
across the whole accumulation (and, with several processes, across every rank). A mean per micro-batch,
averaged, would weight a micro-batch with few unmasked targets (a chat record that is mostly prompt) as
much as a full one: the gradient would no longer be that of the big batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmforge.data.loader import IGNORE_INDEX


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over unmasked targets of -log p(target); logits (B, T, V), targets (B, T) -> scalar (float32)."""
    return F.cross_entropy(logits.float().flatten(0, 1),  # (B*T, V)
                           targets.flatten(),              # (B*T,)
                           ignore_index=IGNORE_INDEX, reduction="sum")


def count_targets(micro_batches) -> int:
    """Targets that carry loss in a step's micro-batches [(inputs, targets), ...]."""
    return int(sum(int((y != IGNORE_INDEX).sum()) for _, y in micro_batches))
