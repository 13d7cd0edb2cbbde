"""Optimizers: AdamW, or Muon for the hidden weight matrices with AdamW for the rest.

Muon orthogonalises each hidden matrix's Nesterov momentum with a few Newton-Schulz iterations and scales
the update to AdamW's RMS (Moonshot's "match_rms_adamw" rule), so one learning rate and schedule serve
both optimizers. Embeddings, the output head and norm gains stay with AdamW, as Muon's authors advise.

Why not `torch.optim.Muon`: it runs Newton-Schulz in bfloat16 unconditionally, which CPUs without native
bf16 emulate ~20x slower (measured: training fell from 8,500 to 3,700 tokens/s on an AVX2 CPU). This
version is the same algorithm, with Newton-Schulz in the run's precision (`train.precision`, whose `auto`
picks bf16 only where the hardware computes it natively), so `precision: fp32` is fp32 throughout.
"""

from __future__ import annotations

import math

import torch

from lmforge.train.precision import resolve_precision

# Coefficients of the quintic Newton-Schulz iteration from Muon's reference implementation.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(g: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Approximately U V^T of g = U S V^T (the nearest semi-orthogonal matrix), by Newton-Schulz."""
    a, b, c = NS_COEFFICIENTS
    x = g.to(dtype)
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.T if tall else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    def __init__(self, params, lr: float, weight_decay: float = 0.0, momentum: float = 0.95, ns_steps: int = 5,
                 ns_dtype: torch.dtype = torch.float32):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                                  "ns_steps": ns_steps})
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd, mu = group["lr"], group["weight_decay"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(mu).add_(p.grad)
                update = orthogonalize(p.grad.add(buf, alpha=mu), group["ns_steps"], self.ns_dtype)
                p.mul_(1 - lr * wd)
                p.add_(update, alpha=-lr * 0.2 * math.sqrt(max(p.shape)))  # RMS of an AdamW update


class OptimizerGroup:
    """Several optimizers that step together and checkpoint as one."""

    def __init__(self, *optimizers: torch.optim.Optimizer):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        for opt, s in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(s)


def make_optimizer(model: torch.nn.Module, spec) -> OptimizerGroup:
    """Weight decay applies to matrices only (not norm gains), as is usual for transformers. Muon's
    Newton-Schulz runs in `spec.precision` (resolved for the model's device)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    is_hidden_matrix = lambda n, p: p.dim() == 2 and not n.startswith(("embed_tokens", "lm_head"))  # noqa: E731
    if spec.optimizer == "muon":
        hidden = [p for n, p in named if is_hidden_matrix(n, p)]
        rest = [(n, p) for n, p in named if not is_hidden_matrix(n, p)]
        device = hidden[0].device.type if hidden else "cpu"
        bf16 = resolve_precision(spec.precision, device) == "bf16"
        muon = Muon(hidden, lr=spec.lr, weight_decay=spec.weight_decay, momentum=spec.muon_momentum,
                    ns_dtype=torch.bfloat16 if bf16 else torch.float32)
        return OptimizerGroup(muon, _adamw(rest, spec))
    return OptimizerGroup(_adamw(named, spec))


def _adamw(named, spec) -> torch.optim.AdamW:
    groups = [
        {"params": [p for _, p in named if p.dim() >= 2], "weight_decay": spec.weight_decay},
        {"params": [p for _, p in named if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=tuple(spec.betas), fused=True)
