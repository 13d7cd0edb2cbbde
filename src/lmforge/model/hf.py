"""Save and load the Hugging Face model layout: config.json, model.safetensors (or shards with an
index), tokenizer files, generation_config.json, plus lmforge.json (lineage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import ModelError
from lmforge.io import atomic_dir, read_json, write_json
from lmforge.model.config import ModelConfig
from lmforge.model.tokenizer import Tokenizer
from lmforge.model.transformer import Transformer

_IGNORED = ("rotary_emb.inv_freq",)


def to_hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            if model.config.tie_word_embeddings:
                continue  # shared with the embedding; safetensors stores each storage once
            out[name] = tensor
        else:
            out[f"model.{name}"] = tensor
    return {k: v.detach().contiguous() for k, v in out.items()}


def from_hf_state_dict(hf: dict[str, torch.Tensor], config: ModelConfig, where: str) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in hf.items():
        if name.endswith(_IGNORED):
            continue
        out[name.removeprefix("model.")] = tensor
    if config.tie_word_embeddings:
        out.pop("lm_head.weight", None)
    elif "lm_head.weight" not in out:
        raise ModelError("untied embeddings but no lm_head.weight in the weights", where=where)
    return out


def save_pretrained(model: Transformer, path: str | Path, *, tokenizer: Tokenizer | None = None,
                    lineage: dict[str, Any] | None = None, overwrite: bool = True,
                    generation: dict[str, Any] | None = None) -> Path:
    """Write `model` (and its tokenizer and lineage) as a Hugging Face model directory, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    config = model.config
    with atomic_dir(path, overwrite=overwrite) as tmp:
        write_json(tmp / "config.json", config.to_hf())
        save_file(to_hf_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        write_json(tmp / "generation_config.json", {
            "bos_token_id": config.bos_token_id,
            "eos_token_id": config.eos_token_id,
            "pad_token_id": config.pad_token_id,
            **(generation or {}),
        })
        if tokenizer is not None:
            tokenizer.save(tmp, model_max_length=config.max_position_embeddings)
        if lineage is not None:
            write_json(tmp / "lmforge.json", lineage)
    return path


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    single = path / "model.safetensors"
    index = path / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        shards = sorted(set(read_json(index)["weight_map"].values()))
        weights: dict[str, torch.Tensor] = {}
        for shard in shards:
            weights.update(load_file(str(path / shard)))
        return weights
    if (path / "pytorch_model.bin").is_file():
        return torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise ModelError("no model.safetensors, model.safetensors.index.json or pytorch_model.bin", where=str(path),
                     hint="MODEL must be a model directory in Hugging Face layout")


def load_model(path: str | Path, *, dtype: torch.dtype = torch.float32) -> Transformer:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelError("no config.json", where=str(path),
                         hint="MODEL must be a model directory in Hugging Face layout (e.g. RUN_DIR/model)")
    hf = read_json(path / "config.json")
    config = ModelConfig.from_hf(hf, where=str(path / "config.json"))
    with torch.device("meta"):
        model = Transformer(config)
    state = from_hf_state_dict(_read_weights(path), config, str(path))
    if hf.get("quantization_config"):  # an int8/int4 export (lmforge.infer.quantize): its layers come built
        from lmforge.infer.quantize import load_quantized

        state = load_quantized(model, state, hf["quantization_config"], str(path))
    expected = {k for k, v in model.state_dict().items() if v.is_meta}
    expected -= {"lm_head.weight"} if config.tie_word_embeddings else set()
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ModelError(f"weights do not match config.json (missing: {sorted(missing)[:5]}, "
                         f"unexpected: {sorted(unexpected)[:5]})", where=str(path))
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=False, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    # The rotary tables are buffers computed from the config, not weights: rebuild them off the meta device.
    from lmforge.model.transformer import rotary_tables

    model.rope_cos, model.rope_sin = rotary_tables(config.head_dim, config.max_position_embeddings,
                                                   config.rope_theta)
    return model.eval()


def load_pretrained(path: str | Path, *, dtype: torch.dtype = torch.float32) -> tuple[Transformer, Tokenizer | None]:
    """Load a model directory (lmforge's or any Llama-family directory transformers wrote)."""
    path = Path(path)
    model = load_model(path, dtype=dtype)
    tokenizer = Tokenizer.from_dir(path) if (path / "tokenizer.json").is_file() else None
    return model, tokenizer


def read_lineage(path: str | Path) -> dict[str, Any]:
    file = Path(path) / "lmforge.json"
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
