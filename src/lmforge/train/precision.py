"""Numeric precision of training: bf16 autocast where the hardware has native bf16, else fp32.

On a CPU without AVX-512 BF16 or AMX, bf16 matrix multiplies are emulated and run ~20x slower than fp32
(measured: 96 vs 2,260 tokens/s on an AVX2-only EPYC), so "auto" checks the CPU flags before choosing.
"""

from __future__ import annotations

import contextlib
import functools

import torch


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    from lmforge.io import cpu_flags

    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_precision(precision: str, device: str = "cpu") -> str:
    if precision != "auto":
        return precision
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def autocast(precision: str, device: str = "cpu"):
    if precision == "bf16":
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()
