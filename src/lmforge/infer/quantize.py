"""Weight-only quantization of a model's linear layers for CPU inference, on PyTorch's own kernels:
int8 per output channel (`aten._weight_int8pack_mm`) and group-wise int4 with a scale and minimum per group
(`aten._weight_int4pack_mm_for_cpu`, tinygemm's packing). The kernels' activations run in compute_dtype() (bf16
where this CPU's kernels are clearly faster on it, measured, else fp32); each layer returns its input's dtype.

Embeddings and the output head stay as they are (the head is often tied to the embeddings, and llama.cpp's
quantized types keep it at higher precision too). Two ways in: `quantize_model` at load time (`--quantize`),
or `export_quantized`, a model directory whose safetensors hold the quantized weights (a quarter or an eighth
of fp32 on disk and in memory) and whose config.json says how (`quantization_config`, under a model_type of
its own, which transformers refuses by name instead of loading wrongly). The quality cost is measured, not
assumed: lmforge.infer.quality.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from lmforge.errors import ModelError

METHODS = ("int8", "int4")
QUANT_METHOD = "lmforge"  # config.json's quantization_config.quant_method for our exports
QUANTIZED_MODEL_TYPE = "lmforge_quantized_llama"  # ... and their model_type


# --- the arithmetic: pure functions of a weight ----------------------------------------------------------------


def int8_weights(w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Symmetric int8 per output row: w ≈ qweight * scale[:, None]."""
    w = w.detach().float()                                                        # (N, K)
    scale = (w.abs().amax(1) / 127).clamp(min=1e-12)                              # (N,)
    return {"qweight": torch.round(w / scale[:, None]).clamp(-128, 127).to(torch.int8), "scale": scale}


def int4_weights(w: torch.Tensor, group_size: int) -> dict[str, torch.Tensor]:
    """Asymmetric int4 per run of `group_size` inputs: w ≈ q * scale + min with q in 0..15, stored two to a byte
    (even column in the low nibble) with tinygemm's (G, N, 2) scales and zeros (zero = min + 8 * scale, as its
    kernel reads w = (q - 8) * scale + zero)."""
    N, K = w.shape
    w = w.detach().float().view(N, K // group_size, group_size)                   # (N, G, g)
    low, high = w.amin(-1), w.amax(-1)                                            # (N, G)
    scale = ((high - low) / 15).clamp(min=1e-12)
    q = torch.round((w - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.uint8).view(N, K)
    return {"qweight": q[:, 0::2] | (q[:, 1::2] << 4),                            # (N, K/2)
            "scales_and_zeros": torch.stack([scale.T, (low + 8 * scale).T], -1).contiguous()}  # (G, N, 2)


# --- the layers ------------------------------------------------------------------------------------------------

@functools.cache
def compute_dtype() -> torch.dtype:
    """The activation dtype the quantized kernels run fastest in on this CPU, measured once per process.

    Measured (torch 2.13, 2-core Xeon with AMX, 768x2048, one row): _weight_int8pack_mm takes 1,670 us on fp32
    activations against 150 us on bf16 (a dense fp32 matmul: 206 us); int4 2,800 us against 140 us. Which dtype
    has the fast path is the build's and the CPU's business, so ask the machine rather than assume."""
    import time

    q = int8_weights(torch.randn(512, 512))
    best = None
    for dtype in (torch.float32, torch.bfloat16):
        x, scale = torch.randn(1, 512, dtype=dtype), q["scale"].to(dtype)
        torch.ops.aten._weight_int8pack_mm(x, q["qweight"], scale)
        start = time.perf_counter()
        for _ in range(5):
            torch.ops.aten._weight_int8pack_mm(x, q["qweight"], scale)
        took = time.perf_counter() - start
        if best is None or took < best[0] * 0.8:  # bf16 only when clearly faster: it costs some precision
            best = (took, dtype)
    return best[1]



class Int8Linear(nn.Module):
    """y = x @ (qweight * scale)^T with qweight int8 (out, in) and one scale per output row."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype | None = None):
        super().__init__()
        # a copy, never a view: tensors read from safetensors need not be aligned as the vector kernels require
        # (an unaligned one segfaults _weight_int8pack_mm on bf16 activations here)
        self.register_buffer("qweight", qweight.to(torch.int8, copy=True).contiguous())
        self.register_buffer("scale", scale.to(dtype or compute_dtype(), copy=True))  # its dtype is the kernel's
        self.out_features, self.in_features = qweight.shape

    @classmethod
    def from_linear(cls, linear: nn.Linear, dtype: torch.dtype | None = None) -> "Int8Linear":
        return cls(**int8_weights(linear.weight), dtype=dtype)

    def dequantized(self) -> torch.Tensor:
        return self.qweight.float() * self.scale.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, shape[-1]).to(self.scale.dtype), self.qweight,
                                               self.scale)                        # (B*T, N)
        return y.view(*shape[:-1], self.out_features).to(x.dtype)


class Int4Linear(nn.Module):
    """Group-wise int4 (int4_weights), packed for the CPU kernel at construction: the packed layout depends on
    the CPU's vector width, so what travels on disk is int4_weights' plain nibbles."""

    def __init__(self, qweight: torch.Tensor, scales_and_zeros: torch.Tensor, group_size: int,
                 dtype: torch.dtype | None = None):
        super().__init__()
        N, half = qweight.shape
        q = torch.stack([qweight & 0xF, qweight >> 4], -1).view(N, 2 * half).to(torch.int32)  # (N, K)
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2), persistent=False)
        self.register_buffer("scales_and_zeros",                                             # (G, N, 2)
                             scales_and_zeros.to(dtype or compute_dtype(), copy=True).contiguous())
        self.group_size, self.in_features, self.out_features = group_size, 2 * half, N

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 32, dtype: torch.dtype | None = None) -> "Int4Linear":
        return cls(**int4_weights(linear.weight, group_size), group_size=group_size, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        dtype = self.scales_and_zeros.dtype
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x.reshape(-1, shape[-1]).to(dtype), self.packed,
                                                       self.group_size, self.scales_and_zeros)  # (B*T, N)
        return y.view(*shape[:-1], self.out_features).to(x.dtype)


# --- a whole model ---------------------------------------------------------------------------------------------


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ModelError(f"unknown quantization {method!r}", hint=f"choose one of {', '.join(METHODS)}")


def quantizable(model: nn.Module, method: str, group_size: int = 32):
    """The linear layers of every block that `method` can take: ([(name, parent, attribute, linear)], skipped)."""
    chosen, skipped = [], []
    for name, parent, attr, child in model.block_linears():
        if not isinstance(child, nn.Linear):
            continue
        if method == "int4" and child.in_features % group_size:
            skipped.append(f"{name} ({child.in_features} inputs, not a multiple of {group_size})")
            continue
        chosen.append((name, parent, attr, child))
    return chosen, skipped


def _summary(model: nn.Module, method: str, group_size: int, layers: int, skipped: list[str]) -> dict:
    weight_bytes = sum(b.numel() * b.element_size() for b in model.buffers() if not b.is_meta) + sum(
        p.numel() * p.element_size() for p in model.parameters())
    return {"method": method, "group_size": group_size if method == "int4" else None, "layers": layers,
            "skipped": skipped, "bytes": weight_bytes,
            "compute_dtype": str(compute_dtype()).removeprefix("torch.")}


def quantize_model(model: nn.Module, method: str, *, group_size: int = 32) -> dict:
    """Replace the linear layers of every block in place; returns what was done (layers, skipped, bytes)."""
    _check_method(method)
    if next(model.parameters()).device.type != "cpu":
        raise ModelError("weight-only int8/int4 here runs on the CPU", hint="load the model on the CPU")
    if any(isinstance(m, (Int8Linear, Int4Linear)) for m in model.modules()):
        raise ModelError("this model is already quantized", hint="drop --quantize")
    chosen, skipped = quantizable(model, method, group_size)
    for _, parent, attr, linear in chosen:
        setattr(parent, attr, Int8Linear.from_linear(linear) if method == "int8"
                else Int4Linear.from_linear(linear, group_size))
    return _summary(model, method, group_size, len(chosen), skipped)


def export_quantized(model_dir: str | os.PathLike, out_dir: str | os.PathLike, method: str, *,
                     group_size: int = 32) -> Path:
    """Write `model_dir` as a new model directory with int8/int4 linear weights (tokenizer, chat template and
    lineage copied; lineage gains `quantization`). Nothing is left behind when it fails."""
    from safetensors.torch import save_file

    from lmforge.io import atomic_dir, read_json, write_json
    from lmforge.model.hf import load_model, to_hf_state_dict

    _check_method(method)
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists():
        raise ModelError("the output already exists", where=str(out_dir), hint="choose a new folder or remove it")
    config = read_json(model_dir / "config.json")
    if config.get("quantization_config"):
        raise ModelError("this model is already quantized", where=str(model_dir),
                         hint="export from the fp32 model it came from")
    model = load_model(model_dir)
    chosen, skipped = quantizable(model, method, group_size)
    tensors = to_hf_state_dict(model)
    for name, _, _, linear in chosen:
        del tensors[f"model.{name}.weight"]
        stored = int8_weights(linear.weight) if method == "int8" else int4_weights(linear.weight, group_size)
        tensors.update({f"model.{name}.{k}": v.contiguous() for k, v in stored.items()})
    spec = {"quant_method": QUANT_METHOD, "method": method, "group_size": group_size if method == "int4" else None,
            "skipped": skipped}
    lineage = read_json(model_dir / "lmforge.json") if (model_dir / "lmforge.json").is_file() else {}
    lineage = {k: v for k, v in lineage.items() if k != "exports"}
    lineage["quantization"] = {**spec, "source": str(model_dir.resolve())}
    weights = {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "config.json",
               "lmforge.json"}
    with atomic_dir(out_dir, overwrite=False) as tmp:
        # model_type is what transformers dispatches on: a name it does not know makes it refuse the directory
        # (an unknown quantization_config alone it ignores, and would load random weights for the linears)
        write_json(tmp / "config.json", {**config, "model_type": QUANTIZED_MODEL_TYPE, "quantization_config": spec})
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        for f in model_dir.iterdir():  # tokenizer files, chat template, generation config
            if f.is_file() and f.name not in weights and not f.name.startswith("model-") and f.suffix != ".gguf":
                shutil.copy2(f, tmp / f.name)
        write_json(tmp / "lmforge.json", lineage)
    return out_dir


def load_quantized(model: nn.Module, state: dict[str, torch.Tensor], spec: dict,
                   where: str) -> dict[str, torch.Tensor]:
    """Put the quantized layers an export stored (`state`, the model's own names) into `model` (built on the
    meta device); returns the rest of `state` for load_state_dict."""
    method, group_size = spec.get("method"), spec.get("group_size") or 32
    if spec.get("quant_method") != QUANT_METHOD or method not in METHODS:
        raise ModelError(f"quantization_config {spec!r} is not one lmforge wrote", where=where,
                         hint="lmforge loads fp32/bf16 Llama directories and its own int8/int4 exports")
    state = dict(state)
    chosen, _ = quantizable(model, method, group_size)
    for name, parent, attr, _ in chosen:
        try:
            if method == "int8":
                layer = Int8Linear(state.pop(f"{name}.qweight"), state.pop(f"{name}.scale"))
            else:
                layer = Int4Linear(state.pop(f"{name}.qweight"), state.pop(f"{name}.scales_and_zeros"),
                                   group_size)
        except KeyError as e:
            raise ModelError(f"the quantized weights lack {e.args[0]}", where=where,
                             hint="re-export the model with lmforge export --format torch") from None
        setattr(parent, attr, layer)
    return state
