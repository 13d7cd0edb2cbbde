"""The Llama architecture, top to bottom in one file.

RMSNorm, rotary position embeddings, grouped-query attention through `scaled_dot_product_attention`,
a SwiGLU feed-forward, tied or untied embeddings. Module and parameter names are Hugging Face's, so a
state dict moves between the two with only the `model.` prefix added or removed (see `model/hf.py`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from lmforge.model.config import ModelConfig


# What a failing torch.compile raises (a missing or broken C++ compiler, an unsupported op); anything else
# raised through a compiled model is a real bug and propagates.
COMPILE_ERRORS = (torch._dynamo.exc.BackendCompilerFailed, torch._inductor.exc.CppCompileError)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 whatever the activation dtype, as the reference implementation does.
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rotary_tables(head_dim: int, positions: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape (positions, head_dim), halves duplicated (the "rotate half" convention)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)
    angles = torch.outer(torch.arange(positions, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class KVCache:
    """Preallocated keys and values for every layer, every row at the same position `pos`.

    The model talks to a cache through three calls, so another layout (lmforge.infer.cache.SlotCache: one slot per
    request, each at its own position) can stand in: `positions(T)` (where the new tokens sit: an int start shared
    by every row, or a (B, T) tensor), `update(layer, k, v)` (store the new keys and values; return every key and
    value to attend to and a boolean mask, None where plain causal attention is right) and `advance(T)`.
    """

    def __init__(self, config: ModelConfig, batch: int, max_len: int, dtype: torch.dtype, device=None):
        shape = (config.num_hidden_layers, batch, config.num_key_value_heads, max_len, config.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.pos = 0
        self.max_len = max_len

    def positions(self, length: int) -> int:
        return self.pos

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        T = k.shape[2]
        end = self.pos + T
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        mask = None  # a prompt from 0 is plain causal; one new token sees every key
        if self.pos > 0 and T > 1:  # a chunk after a filled cache: query i sees every past key and the chunk up to i
            mask = torch.ones(T, end, dtype=torch.bool, device=k.device).tril(diagonal=self.pos)
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end], mask

    def advance(self, length: int) -> None:
        self.pos += length


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv, self.head_dim = (config.num_attention_heads, config.num_key_value_heads,
                                                  config.head_dim)
        d = config.hidden_size
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def forward(self, x, cos, sin, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        mask = None
        if cache is not None:
            k, v, mask = cache.update(self.layer, k, v)                       # (B, n_kv, S, hd), S >= T
        # Grouped-query attention: SDPA shares each key/value head across its group of query heads itself
        # (enable_gqa), which is cheaper than materialising repeated keys and values.
        gqa = self.n_kv != self.n_heads
        causal = mask is None and T > 1 and k.shape[2] == T
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=gqa)  # (B, H, T, hd)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rotary_tables(config.head_dim, config.max_position_embeddings, config.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.activation_checkpointing = False
        self.reset_parameters()

    def reset_parameters(self, seed: int | None = None) -> None:
        """Normal(0, initializer_range) weights; residual output projections scaled by 1/sqrt(2 * layers)."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        std = self.config.initializer_range
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 1:
                    p.fill_(1.0)
                elif name.endswith(("o_proj.weight", "down_proj.weight")):
                    p.normal_(0.0, std / math.sqrt(2 * self.config.num_hidden_layers), generator=gen)
                else:
                    p.normal_(0.0, std, generator=gen)

    def block_linears(self):
        """(name, parent, attribute, module) of every linear layer inside the blocks, in order: what LoRA adapts,
        quantization shrinks and pruning thins (never the embeddings or the output head). `module` is whatever
        sits there now (nn.Linear, or a wrapper such as LoRALinear or a quantized layer)."""
        for i, block in enumerate(self.layers):
            for part, parent in (("self_attn", block.self_attn), ("mlp", block.mlp)):
                for attr, child in parent.named_children():
                    if attr.endswith("_proj"):
                        yield f"layers.{i}.{part}.{attr}", parent, attr, child

    def extend_rotary(self, positions: int) -> None:
        """Make the rotary tables cover `positions` (generating past the trained context)."""
        if positions > self.rope_cos.shape[0]:
            cos, sin = rotary_tables(self.config.head_dim, max(positions, 2 * self.rope_cos.shape[0]),
                                     self.config.rope_theta)
            self.rope_cos, self.rope_sin = cos.to(self.rope_cos.device), sin.to(self.rope_sin.device)

    def _rotary(self, positions: int | torch.Tensor, length: int, dtype: torch.dtype):
        """cos and sin for `length` new tokens: (T, head_dim) from an int start shared by every row, or
        (B, 1, T, head_dim) from a (B, T) tensor of per-row positions (whose caller, the engine, has extended
        the tables to its context beforehand: reading the tensor here would cost a sync and break a compiled
        step)."""
        if isinstance(positions, int):
            end = positions + length
            self.extend_rotary(end)
            return self.rope_cos[positions:end].to(dtype), self.rope_sin[positions:end].to(dtype)
        return self.rope_cos[positions][:, None].to(dtype), self.rope_sin[positions][:, None].to(dtype)

    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None, last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, V) for `input_ids` (B, T); the loss lives outside the model (lmforge.train.loss).

        `last_only` computes logits for the final position only (what generation needs). With a `cache`,
        positions continue where the cache says (KVCache).
        """
        x = self.hidden(input_ids, cache)                                         # (B, T, C)
        if last_only:
            x = x[:, -1:]                                                         # (B, 1, C)
        return self.lm_head(x)                                                    # (B, T, V)

    def hidden(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """The final normalised hidden states (B, T, C): what the head reads, and what embeddings pool. With
        `activation_checkpointing` set, training recomputes each block's activations in the backward pass
        instead of keeping them."""
        x = self.embed_tokens(input_ids)                                          # (B, T, C)
        start = cache.positions(input_ids.shape[1]) if cache is not None else 0
        device = x.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        cos, sin = self._rotary(start, input_ids.shape[1], dtype)                 # (T, hd) or (B, 1, T, hd)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.layers:
            if recompute:
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, use_reentrant=False)
            else:
                x = block(x, cos, sin, cache)                                     # (B, T, C)
        if cache is not None:
            cache.advance(input_ids.shape[1])
        return self.norm(x)                                                       # (B, T, C)
