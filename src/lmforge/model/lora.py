"""LoRA as a module transform, in PEFT's on-disk layout.

`add_lora(model, config)` wraps the chosen linear layers of a Transformer in LoRALinear — y = W x + (α/r)·B A x,
A (r, in) Kaiming-uniform and B (out, r) zero as PEFT initialises them, so the wrapped model starts equal to the
base — and freezes everything else. The base weight W may be a quantized tensor (`quantize_base`: torchao's
int8 or int4 weight-only), which is the CPU form of QLoRA: the frozen base small, the adapters in fp32.

On disk an adapter is PEFT's: `adapter_config.json` and `adapter_model.safetensors` with keys
`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`. Adapters PEFT wrote load here (`read_adapter`)
and adapters written here load in `peft.PeftModel.from_pretrained` (both tested against peft itself).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import warnings
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from lmforge.config import Strict
from lmforge.errors import ModelError
from lmforge.io import atomic_dir, read_json, write_json

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModel -> LlamaForCausalLM; then HF's own names ("model.layers...")


class LoRAConfig(Strict):
    """A recipe's `lora:` section (and what adapter_config.json records)."""
    r: int = Field(8, gt=0, description="rank of the update B·A")
    alpha: float = Field(16.0, gt=0, description="the update is scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input (training only; PEFT's "
                           "default 0: on a CPU its random mask cost 37% of LoRA's speed, docs/compress.md)")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="linear layers to adapt, by name (q_proj, ..., down_proj); all-linear: every "
                                  "linear layer of the blocks (not the output head), as PEFT's all-linear")
    base: Literal["fp32", "int8", "int4"] = Field(
        "fp32", description="the frozen base's weights while training: fp32, or torchao weight-only int8 / "
                            "int4 (group-wise) for less memory")
    group_size: int = Field(32, gt=0, description="inputs per int4 group (base: int4)")

    def scaling(self) -> float:
        return self.alpha / self.r

    def targets(self) -> tuple[str, ...]:
        names = LINEAR_NAMES if self.target_modules == "all-linear" else tuple(self.target_modules)
        unknown = sorted(set(names) - set(LINEAR_NAMES))
        if unknown:
            raise ModelError(f"lora.target_modules names {', '.join(unknown)}, not a linear layer of the model",
                             hint=f"choose among {', '.join(LINEAR_NAMES)} or all-linear")
        return names


class LoRALinear(nn.Module):
    """A frozen `base_layer` plus a trainable low-rank update; PEFT's attribute names, so state dicts match."""

    def __init__(self, base_layer: nn.Module, r: int, scaling: float, dropout: float = 0.0):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.lora_A = nn.Linear(self.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, self.out_features, bias=False)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling = scaling

    def reset_lora(self, generator: torch.Generator | None = None) -> None:
        """PEFT's default: A as nn.Linear's Kaiming-uniform (a=√5), B zero, so the update starts at zero."""
        bound = 1 / math.sqrt(self.in_features)  # kaiming_uniform_(a=sqrt(5)) on an (r, in) matrix
        with torch.no_grad():
            self.lora_A.weight.uniform_(-bound, bound, generator=generator)
            self.lora_B.weight.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = self.lora_B(self.lora_A(self.lora_dropout(x)))               # (..., out) through (..., r)
        return self.base_layer(x) + update * self.scaling                     # (..., out)

    def delta(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling       # (out, r) @ (r, in) -> (out, in)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """{module name: LoRALinear} of a model (empty when it carries no adapter)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def add_lora(model: nn.Module, config: LoRAConfig, *, seed: int = 0,
             scalings: dict[str, float] | None = None, ranks: dict[str, int] | None = None) -> nn.Module:
    """Wrap `config.targets()` of every block in LoRALinear (in place) and freeze all other parameters.
    `ranks` / `scalings` ({module name: value}) override config's for an adapter read from disk."""
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    targets = config.targets()
    for name, parent, attr, base in list(model.block_linears()):
        if attr not in targets:
            continue
        r = (ranks or {}).get(name, config.r)
        layer = LoRALinear(base, r, (scalings or {}).get(name, config.alpha / r), config.dropout)
        layer.reset_lora(generator)
        setattr(parent, attr, layer.to(next(model.parameters()).device))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base (W + (α/r)·B A, in fp32) and unwrap it; a quantized base is
    dequantized first, so the merged model is a plain fp32 model."""
    for name, layer in lora_layers(model).items():
        parent = model.get_submodule(name.rsplit(".", 1)[0])
        base = layer.base_layer
        merged = nn.Linear(layer.in_features, layer.out_features, bias=False, device=layer.lora_A.weight.device)
        with torch.no_grad():
            merged.weight.copy_(dense_weight(base) + layer.delta().float())
        setattr(parent, name.rsplit(".", 1)[1], merged)
    return model


def dense_weight(linear: nn.Module) -> torch.Tensor:
    """A linear layer's weight as a plain fp32 tensor (dequantizing a torchao tensor)."""
    w = linear.weight
    if hasattr(w, "dequantize") and type(w) not in (torch.Tensor, nn.Parameter):
        w = w.dequantize()
    return w.detach().float()


# --- the frozen base in int8 / int4 ------------------------------------------------------------------------


@contextlib.contextmanager
def quiet_torchao():
    """Importing torchao on a CPU build logs a warning per CUDA kernel library it cannot load and torch logs
    deprecations for its enums: noise to a user, silenced for the import only."""
    loggers = [logging.getLogger(name) for name in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def quantize_base(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Put the wrapped layers' frozen bases into torchao's weight-only int8 (per output row) or int4 (per
    `group_size` inputs); returns the layers left in fp32 (int4 needs in_features divisible by the group)."""
    if config.base == "fp32":
        return []
    with quiet_torchao():
        from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, quantize_
        from torchao.quantization.granularity import PerGroup

    skipped = []
    for name, layer in lora_layers(model).items():
        base = layer.base_layer
        if config.base == "int4" and base.in_features % config.group_size:
            skipped.append(f"{name} ({base.in_features} inputs, not a multiple of {config.group_size})")
            continue
        how = (Int8WeightOnlyConfig() if config.base == "int8" else
               IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(config.group_size)))
        holder = nn.Sequential(base)
        quantize_(holder, how)
        layer.base_layer = holder[0].requires_grad_(False)
    return skipped


# --- PEFT's layout on disk ---------------------------------------------------------------------------------


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapters' weights under PEFT's names."""
    out = {}
    for name, layer in lora_layers(model).items():
        for part in ("lora_A", "lora_B"):
            out[f"{PEFT_PREFIX}model.{name}.{part}.weight"] = getattr(layer, part).weight.detach().contiguous()
    return out


def load_adapter_state_dict(model: nn.Module, weights: dict[str, torch.Tensor], where: str) -> None:
    layers = lora_layers(model)
    expected = set(adapter_state_dict(model))
    if set(weights) != expected:
        missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
        raise ModelError("the adapter's weights do not match the model's adapted layers "
                         f"(missing {missing[:3]}, unexpected {extra[:3]})", where=where)
    with torch.no_grad():
        for key, tensor in weights.items():
            name, part = key.removeprefix(f"{PEFT_PREFIX}model.").rsplit(".", 2)[:2]
            getattr(layers[name], part).weight.copy_(tensor)


def save_adapter(model: nn.Module, path: str | Path, config: LoRAConfig, *, base: str | None = None,
                 lineage: dict | None = None) -> Path:
    """Write the adapters of `model` as a PEFT adapter directory, atomically."""
    from safetensors.torch import save_file

    names = sorted({n.rsplit(".", 1)[1] for n in lora_layers(model)})
    with atomic_dir(Path(path)) as tmp:
        write_json(tmp / ADAPTER_CONFIG, {
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base,
            "r": config.r, "lora_alpha": config.alpha, "lora_dropout": config.dropout,
            "target_modules": names, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
            "use_dora": False, "init_lora_weights": True, "modules_to_save": None, "inference_mode": True,
            "rank_pattern": {}, "alpha_pattern": {}})
        save_file(adapter_state_dict(model), str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        if lineage is not None:
            write_json(tmp / "lmforge.json", lineage)
    return Path(path)


# adapter_config.json keys whose non-default values change what the adapter computes and that we do not model
_UNSUPPORTED = {"use_dora": False, "fan_in_fan_out": False, "bias": "none", "modules_to_save": None,
                "layer_replication": None, "lora_bias": False}


def _pattern_value(pattern: dict, name: str, default):
    """PEFT's rank_pattern / alpha_pattern: a key matches a module whose name ends with it (or by regex)."""
    for key, value in pattern.items():
        if name == key or name.endswith("." + key) or re.fullmatch(key, name):
            return value
    return default


def read_adapter(path: str | Path) -> tuple[LoRAConfig, dict[str, int], dict[str, float], dict[str, torch.Tensor]]:
    """A PEFT LoRA adapter directory: (config, ranks, scalings, weights), ranks and scalings per module name."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_file, weights_file = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    if not cfg_file.is_file() or not weights_file.is_file():
        raise ModelError(f"not a PEFT adapter directory: needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}",
                         where=str(path), hint="give the adapter/ directory a LoRA run or PEFT wrote")
    raw = read_json(cfg_file)
    if raw.get("peft_type") != "LORA":
        raise ModelError(f"adapter type {raw.get('peft_type')!r} is not LoRA", where=str(cfg_file))
    for key, default in _UNSUPPORTED.items():
        if raw.get(key, default) not in (default, [], {}, None):
            raise ModelError(f"adapter_config.json sets {key}={raw[key]!r}, which lmforge does not apply",
                             where=str(cfg_file), hint="merge it with peft's merge_and_unload instead")
    weights = {k.replace(".default.", "."): v for k, v in load_file(str(weights_file)).items()}
    names = sorted({k.removeprefix(f"{PEFT_PREFIX}model.").rsplit(".", 2)[0] for k in weights})
    bad = [n for n in names if not re.fullmatch(r"layers\.\d+\.(self_attn|mlp)\.\w+_proj", n)]
    if bad:
        raise ModelError(f"the adapter adapts {bad[0]}, not a linear layer of a Llama block", where=str(weights_file))
    r, alpha = int(raw["r"]), float(raw["lora_alpha"])
    ranks, scalings = {}, {}
    for name in names:
        rank = int(weights[f"{PEFT_PREFIX}model.{name}.lora_A.weight"].shape[0])
        a = float(_pattern_value(raw.get("alpha_pattern") or {}, name, alpha))
        ranks[name] = rank
        scalings[name] = a / math.sqrt(rank) if raw.get("use_rslora") else a / rank
    config = LoRAConfig(r=r, alpha=alpha, dropout=0.0, target_modules=sorted({n.rsplit(".", 1)[1] for n in names}))
    return config, ranks, scalings, weights


def apply_adapter(model: nn.Module, path: str | Path) -> nn.Module:
    """`model` with the adapter at `path` attached (unmerged): exactly the modules and ranks it names."""
    config, ranks, scalings, weights = read_adapter(path)
    add_lora(model, config, ranks=ranks, scalings=scalings)
    for name in [n for n in lora_layers(model) if n not in ranks]:  # same suffix, not adapted in this file
        parent, attr = name.rsplit(".", 1)
        setattr(model.get_submodule(parent), attr, lora_layers(model)[name].base_layer)
    load_adapter_state_dict(model, weights, str(Path(path) / ADAPTER_WEIGHTS))
    return model.requires_grad_(False)


def merge_adapter(base: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """A model directory: `base` (a Llama-family directory) with the LoRA adapter at `adapter` (written by
    lmforge or by PEFT) merged in, its tokenizer and chat template copied; lineage says what was merged."""
    from lmforge.model.hf import load_pretrained, read_lineage, save_pretrained

    model, tokenizer = load_pretrained(base)
    merge_lora(apply_adapter(model, adapter))
    lineage = read_lineage(base) if (Path(base) / "lmforge.json").is_file() else {}
    lineage.pop("evals", None)  # measured on the base, not on this model
    lineage["merged"] = {"base": str(Path(base).resolve()), "adapter": str(Path(adapter).resolve())}
    return save_pretrained(model, out, tokenizer=tokenizer, lineage=lineage, overwrite=False)
