"""Weight-only quantization of a model's linear layers for CPU inference, on PyTorch's own kernels:
int8 per output channel (`aten._weight_int8pack_mm`) and group-wise int4 with a scale and minimum per group
(`aten._weight_int4pack_mm_for_cpu`, tinygemm's packing). Activations stay in the model's dtype.

Embeddings and the output head stay as they are (the head is often tied to the embeddings, and llama.cpp's
quantized types keep it at higher precision too). The quality cost is measured, not assumed: see
`perplexity_change`.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.errors import ModelError

METHODS = ("int8", "int4")


class Int8Linear(nn.Module):
    """y = x @ (q * scale)^T with q int8 (out, in) and one scale per output row."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach().float()                                        # (N, K)
        scale = (w.abs().amax(1) / 127).clamp(min=1e-12)                          # (N,)
        self.register_buffer("qweight", torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(linear.weight.dtype))
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def dequantized(self) -> torch.Tensor:
        return self.qweight.float() * self.scale.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]).to(self.scale.dtype), self.qweight,
                                               self.scale)                        # (B*T, N)
        return y.view(*shape[:-1], self.out_features).to(x.dtype)


class Int4Linear(nn.Module):
    """Group-wise asymmetric int4: each run of `group_size` inputs of a row has a scale and a minimum,
    w ≈ q * scale + min with q in 0..15."""

    def __init__(self, linear: nn.Linear, group_size: int = 32):
        super().__init__()
        N, K = linear.weight.shape
        w = linear.weight.detach().float().view(N, K // group_size, group_size)   # (N, G, g)
        low, high = w.amin(-1), w.amax(-1)                                        # (N, G)
        scale = ((high - low) / 15).clamp(min=1e-12)
        q = torch.round((w - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32).view(N, K)
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2))
        # tinygemm reads w = (q - 8) * scale + zero, so its zero is the minimum plus 8 steps
        dtype = linear.weight.dtype
        self.register_buffer("scales_and_zeros", torch.stack([scale.T, (low + 8 * scale).T], -1).to(dtype)
                             .contiguous())                                       # (G, N, 2)
        self.group_size, self.in_features, self.out_features = group_size, K, N

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        dtype = self.scales_and_zeros.dtype
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]).to(dtype), self.packed,
                                                       self.group_size, self.scales_and_zeros)  # (B*T, N)
        return y.view(*shape[:-1], self.out_features).to(x.dtype)


def quantize_model(model: nn.Module, method: str, *, group_size: int = 32) -> dict:
    """Replace the linear layers of every block in place; returns what was done (layers, skipped, bytes)."""
    if method not in METHODS:
        raise ModelError(f"unknown quantization {method!r}", hint=f"choose one of {', '.join(METHODS)}")
    if next(model.parameters()).device.type != "cpu":
        raise ModelError("weight-only int8/int4 here runs on the CPU", hint="load the model on the CPU")
    done, skipped = 0, []
    for block in model.layers:
        for parent in (block.self_attn, block.mlp):
            for name, child in list(parent.named_children()):
                if not isinstance(child, nn.Linear):
                    continue
                if method == "int4" and child.in_features % group_size:
                    skipped.append(f"{name} ({child.in_features} inputs, not a multiple of {group_size})")
                    continue
                setattr(parent, name, Int8Linear(child) if method == "int8" else Int4Linear(child, group_size))
                done += 1
    weight_bytes = sum(b.numel() * b.element_size() for b in model.buffers()) + sum(
        p.numel() * p.element_size() for p in model.parameters())
    return {"method": method, "group_size": group_size if method == "int4" else None, "layers": done,
            "skipped": skipped, "bytes": weight_bytes}


@torch.no_grad()
def perplexity(model: nn.Module, windows: list[list[int]]) -> float:
    """exp of the mean next-token loss over token windows (each scored from its own start)."""
    total, count = 0.0, 0
    for ids in windows:
        x = torch.tensor([ids])
        logits = model(x)[0, :-1].float()                                         # (T-1, V)
        total += float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
        count += len(ids) - 1
    return float(torch.exp(torch.tensor(total / count)))
