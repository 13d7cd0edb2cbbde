"""The model config. Field names are Hugging Face's Llama `config.json` keys, one to one."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lmforge.errors import ModelError


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vocab_size: int = Field(4096, gt=0)
    hidden_size: int = Field(256, gt=0)
    intermediate_size: int = Field(704, gt=0)
    num_hidden_layers: int = Field(6, gt=0)
    num_attention_heads: int = Field(8, gt=0)
    num_key_value_heads: int | None = Field(None, gt=0, description="None means multi-head (= attention heads)")
    head_dim: int | None = Field(None, gt=0, description="None means hidden_size // num_attention_heads")
    max_position_embeddings: int = Field(256, gt=0)
    rms_norm_eps: float = Field(1e-5, gt=0)
    rope_theta: float = Field(10000.0, gt=0)
    tie_word_embeddings: bool = True
    initializer_range: float = Field(0.02, gt=0)
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    @model_validator(mode="after")
    def _check_heads(self) -> "ModelConfig":
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                    f"{self.num_attention_heads}; set head_dim explicitly"
                )
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads {self.num_attention_heads} must be a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary embeddings")
        return self

    def num_parameters(self, *, embeddings: bool = True) -> int:
        d, f, h, kv, hd = (self.hidden_size, self.intermediate_size, self.num_attention_heads,
                           self.num_key_value_heads, self.head_dim)
        per_layer = d * hd * (2 * h + 2 * kv) + 3 * d * f + 2 * d
        n = self.num_hidden_layers * per_layer + d
        if embeddings:
            n += self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return n

    # --- Hugging Face interchange -------------------------------------------------------------

    def to_hf(self) -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            **self.model_dump(),
            "hidden_act": "silu",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "pretraining_tp": 1,
            "rope_scaling": None,
            # transformers >= 5 reads rope_parameters; older versions read rope_theta. Write both.
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "use_cache": True,
            "torch_dtype": "float32",
        }

    @classmethod
    def from_hf(cls, hf: dict[str, Any], *, where: str = "config.json") -> "ModelConfig":
        if hf.get("model_type") not in ("llama", None) and "LlamaForCausalLM" not in hf.get("architectures", []):
            raise ModelError(f"model_type {hf.get('model_type')!r} is not a Llama model", where=where,
                             hint="lmforge loads Llama-architecture models")
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", None):
            raise ModelError(f"rope type {rope_type!r} is not supported yet", where=where,
                             hint="only the default rotary embedding is implemented")
        for key, ok in (("attention_bias", False), ("mlp_bias", False), ("hidden_act", "silu")):
            if hf.get(key, ok) != ok:
                raise ModelError(f"{key}={hf[key]!r} is not supported", where=where,
                                 hint=f"lmforge's Llama has {key}={ok!r}")
        fields = {k: hf[k] for k in cls.model_fields if k in hf and hf[k] is not None}
        if "rope_theta" in rope:
            fields["rope_theta"] = rope["rope_theta"]
        for tok in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if isinstance(fields.get(tok), list):  # some configs list several end tokens; keep the first
                fields[tok] = fields[tok][0]
        return cls(**fields)
