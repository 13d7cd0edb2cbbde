"""Text generation: prefill the prompt into a KV cache, then sample one token at a time.

Token healing: a prompt's last token is often a fragment of what the model would have produced (a bare
"\n" where training text nearly always had "\n" + indentation as one token). We drop that token and
require the first generated token to start with its bytes, so the continuation begins sensibly.
"""

from __future__ import annotations

import codecs
from typing import Iterator

import torch

from lmforge.errors import ModelError
from lmforge.model.transformer import KVCache


def penalize_repeats(logits: torch.Tensor, seen: list[int], penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (as in transformers and llama.cpp): a token already in the sequence has its
    logit divided by `penalty` when positive, multiplied when negative."""
    if penalty == 1.0 or not seen:
        return logits
    idx = torch.tensor(sorted(set(seen)), dtype=torch.long)
    picked = logits[idx]
    return logits.index_copy(0, idx, torch.where(picked > 0, picked / penalty, picked * penalty))


def sample(logits: torch.Tensor, *, temperature: float, top_p: float, top_k: int | None,
           generator: torch.Generator | None) -> int:
    """One token id from a 1-D logits vector. temperature 0 is greedy."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits.float() / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token is always kept)
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


def prompt_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's ids as the model's own tokenizer says (BOS only where its files add it), so a model continues
    the prompt as transformers' `generate(**tokenizer(prompt))` does, and as the trainer packed its documents."""
    ids = tokenizer.encode(prompt, add_special_tokens=True)
    if not ids and tokenizer.bos_id is not None:
        ids = [tokenizer.bos_id]  # as transformers' generate() starts from nothing
    if not ids:
        raise ModelError("the prompt is empty and the tokenizer has no BOS token to start from",
                         hint="give a prompt of at least one character")
    return ids


def heal_prompt(tokenizer, ids: list[int]) -> tuple[list[int], bytes, torch.Tensor | None]:
    """Drop the prompt's last (non-special) token; returns the shorter ids, the dropped bytes and a mask of
    the tokens allowed first (those that start with the dropped bytes)."""
    if len(ids) < 2 or not tokenizer.token_bytes[ids[-1]]:
        return ids, b"", None
    drop = tokenizer.token_bytes[ids[-1]]
    mask = torch.tensor([b.startswith(drop) for b in tokenizer.token_bytes], dtype=torch.bool)
    return ids[:-1], drop, mask


@torch.no_grad()
def generate_ids(model, prompt_ids: list[int], *, max_tokens: int, temperature: float = 0.8, top_p: float = 1.0,
                 top_k: int | None = None, seed: int | None = None, stop_ids: set[int] | frozenset = frozenset(),
                 first_token_mask: torch.Tensor | None = None, repetition_penalty: float = 1.0) -> Iterator[int]:
    """Yield up to `max_tokens` new token ids after `prompt_ids`, stopping at any of `stop_ids`."""
    model.eval()
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    cache = KVCache(model.config, 1, len(prompt_ids) + max_tokens, dtype, device)
    x = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    seen = list(prompt_ids)
    for i in range(max_tokens):
        logits = model(x, cache=cache, last_only=True)[0, -1].float().cpu()
        logits = penalize_repeats(logits, seen, repetition_penalty)
        if i == 0 and first_token_mask is not None and bool(first_token_mask.any()):
            logits = logits.masked_fill(~first_token_mask, float("-inf"))
        token = sample(logits, temperature=temperature, top_p=top_p, top_k=top_k, generator=generator)
        if token in stop_ids:
            return
        yield token
        seen.append(token)
        x = torch.tensor([[token]], dtype=torch.long, device=device)


def stream_text(model, tokenizer, prompt: str, *, max_tokens: int = 128, temperature: float = 0.8,
                top_p: float = 0.95, top_k: int | None = None, seed: int | None = None,
                repetition_penalty: float = 1.0, heal: bool = True) -> Iterator[str]:
    """Yield the continuation of `prompt` as text pieces, as they are generated."""
    ids = prompt_ids(tokenizer, prompt)
    mask, drop = None, b""
    if heal:
        ids, drop, mask = heal_prompt(tokenizer, ids)
    stop = {t for t in (tokenizer.eos_id,) if t is not None}
    # An incremental UTF-8 decoder holds back a multi-byte character until its last byte has arrived.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for i, token in enumerate(generate_ids(model, ids, max_tokens=max_tokens, temperature=temperature,
                                           top_p=top_p, top_k=top_k, seed=seed, stop_ids=stop,
                                           first_token_mask=mask, repetition_penalty=repetition_penalty)):
        raw = tokenizer.token_bytes[token]
        piece = decoder.decode(raw[len(drop):] if i == 0 else raw)
        if piece:
            yield piece
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail


def generate_text(model, tokenizer, prompt: str, **kwargs) -> str:
    """The continuation of `prompt` (without the prompt itself)."""
    return "".join(stream_text(model, tokenizer, prompt, **kwargs))
