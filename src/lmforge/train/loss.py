"""The training loss, outside the model: summed token cross-entropy (or, distilling, its mix with the KL
divergence from a teacher's logits), normalised once per optimizer step.

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


def distillation_sum(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, *,
                     temperature: float = 1.0, kind: str = "forward") -> torch.Tensor:
    """Sum over unmasked positions of T²·KL between the temperature-softened distributions (Hinton et al.'s
    scaling, so the gradient's size does not shrink with T). forward: KL(teacher ‖ student), which covers every
    mode of the teacher; reverse: KL(student ‖ teacher), which seeks its main mode (MiniLLM)."""
    keep = targets != IGNORE_INDEX                                                     # (B, T)
    s = F.log_softmax(student[keep].float() / temperature, -1)                         # (N, V)
    t = F.log_softmax(teacher[keep].float() / temperature, -1)                         # (N, V)
    p, q = (t, s) if kind == "forward" else (s, t)
    return (p.exp() * (p - q)).sum() * temperature ** 2


class DistillationLoss:
    """(1 - weight)·cross-entropy + weight·T²·KL against `teacher`'s logits on the same inputs, summed as
    cross_entropy_sum is. The teacher runs without gradients, in the run's precision."""

    def __init__(self, teacher: torch.nn.Module, *, temperature: float, weight: float, kind: str,
                 precision: str = "fp32"):
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature, self.weight, self.kind, self.precision = temperature, weight, kind, precision

    def __call__(self, logits: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        from lmforge.train.precision import autocast

        with torch.no_grad(), autocast(self.precision, inputs.device.type):
            teacher = self.teacher(inputs)                                             # (B, T, V)
        kl = distillation_sum(logits, teacher, targets, temperature=self.temperature, kind=self.kind)
        return (1 - self.weight) * cross_entropy_sum(logits, targets) + self.weight * kl


def language_model_loss(logits: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The default loss, in the (logits, inputs, targets) form every training loss takes."""
    return cross_entropy_sum(logits, targets)
