"""`lmforge.load(name_or_path)`: a model you can call from Python — generate, stream, chat, embed.

    import lmforge
    model = lmforge.load("runs/demo/model")            # a path, or a name from `lmforge models list`
    model.generate("def fibonacci(n):", max_tokens=64, temperature=0)
    for piece in model.stream("import os\\n", max_tokens=32):
        print(piece, end="")
    model.chat([{"role": "user", "content": "Write a haiku"}])
    model.embed(["def f(): pass", "class A: ..."])      # (2, hidden_size), mean-pooled hidden states

Sampling keywords are SamplingParams' fields (max_tokens, temperature, top_k, top_p, min_p,
repetition_penalty, seed, stop). A list of prompts is generated as one batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch

from lmforge.errors import ModelError
from lmforge.infer.engine import Engine, end_ids, prompt_ids
from lmforge.infer.sampling import SamplingParams


def model_id(path: Path) -> str:
    """A model's name from its path: a run's model directory (RUN/model) is named after its run."""
    path = Path(path)
    name = path.stem if path.suffix == ".gguf" else path.name
    return path.parent.name if name == "model" and path.parent.name else name


def resolve_path(name_or_path: str | Path) -> Path:
    """A model path, or a catalog name resolved to its path."""
    from lmforge.infer.catalog import resolve_model

    return resolve_model(name_or_path)


def load(name_or_path: str | Path, *, backend: str = "auto", dtype: torch.dtype = torch.float32,
         max_batch: int = 8, max_len: int | None = None, quantize: str | None = None,
         compile: bool = False) -> "LocalModel":
    """Load a model directory (lmforge's or any Llama-family directory transformers wrote), a GGUF file, or a
    catalog name. `backend`: "torch", "llamacpp" (a GGUF through llama-cpp-python) or "auto" (llamacpp for a
    .gguf, torch otherwise). `quantize` ("int8" | "int4") makes the torch backend's linear layers weight-only
    quantized (lmforge.infer.quantize). `compile` runs the torch backend's decode step compiled on static shapes
    (lmforge.infer.engine.Engine)."""
    from lmforge.model.hf import load_pretrained

    if backend not in ("auto", "torch", "llamacpp"):
        raise ModelError(f"unknown backend {backend!r}", hint="choose torch, llamacpp or auto")
    path = resolve_path(name_or_path)
    gguf = path if path.suffix == ".gguf" else next(iter(sorted(path.glob("*.gguf"))), None) if path.is_dir() else None
    if backend == "llamacpp" or (backend == "auto" and path.suffix == ".gguf"):
        if gguf is None:
            raise ModelError("the llama.cpp backend runs a GGUF file, and there is none here", where=str(path),
                             hint="lmforge export MODEL --format gguf -o model.gguf")
        if quantize:
            raise ModelError("--quantize is for the torch backend", hint="a GGUF is quantized when exported "
                             "(--type q8_0|q4_0)")
        if compile:
            raise ModelError("--compile is for the torch backend", hint="llama.cpp runs its own compiled kernels")
        from lmforge.infer.llamacpp import LlamaCppModel

        return LlamaCppModel(gguf, max_len=max_len)
    if path.suffix == ".gguf":
        raise ModelError("a GGUF file runs on the llama.cpp backend", where=str(path), hint="use --backend llamacpp")
    model, tokenizer = load_pretrained(path, dtype=dtype)
    if quantize:
        from lmforge.infer.quantize import quantize_model

        quantize_model(model, quantize)
    if tokenizer is None:
        raise ModelError("no tokenizer.json", where=str(path), hint="the model directory needs its tokenizer files")
    return LocalModel(model, tokenizer, path=path, max_batch=max_batch, max_len=max_len, compile=compile)


class LocalModel:
    """A loaded model and its tokenizer, with one generation engine (continuous batching) behind every call."""

    def __init__(self, model, tokenizer, *, path: Path | None = None, max_batch: int = 8,
                 max_len: int | None = None, compile: bool = False):
        self.model, self.tokenizer, self.path = model, tokenizer, path
        self.engine = Engine(model, tokenizer, max_batch=max_batch, max_len=max_len,
                             stop_ids=end_ids(tokenizer, path), compile=compile)

    @property
    def name(self) -> str:
        return model_id(self.path) if self.path is not None else "model"

    @property
    def context_length(self) -> int:
        return self.engine.max_len

    def __repr__(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        return f"LocalModel({self.name!r}, {params:,} parameters, context {self.context_length})"

    # --- text in, text out -----------------------------------------------------------------------

    def generate(self, prompt: str | list[str], *, heal: bool = True, **sampling) -> str | list[str]:
        """The continuation of `prompt` (without the prompt); a list of prompts runs as one batch."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        params = SamplingParams(**sampling)
        requests = [self.engine.submit(prompt_ids(self.tokenizer, p), params, heal=heal) for p in prompts]
        self.engine.run(requests)
        texts = [r.text for r in requests]
        return texts[0] if isinstance(prompt, str) else texts

    def stream(self, prompt: str, *, heal: bool = True, **sampling) -> Iterator[str]:
        """The continuation of `prompt` as text pieces, as they are generated."""
        request = self.engine.submit(prompt_ids(self.tokenizer, prompt), SamplingParams(**sampling), heal=heal)
        for chunk in self.engine.stream(request):
            if chunk.text:
                yield chunk.text

    def chat(self, messages: str | list[dict], *, system: str | None = None, stream: bool = False,
             **sampling) -> str | Iterator[str]:
        """The assistant's reply to `messages` (a list of {"role", "content"} or one user message as a string),
        through the chat template that came with the tokenizer."""
        pieces = self.stream_ids(self.chat_prompt(messages, system=system), **sampling)
        return pieces if stream else "".join(pieces)

    def stream_ids(self, ids: list[int], *, heal: bool = False, **sampling) -> Iterator[str]:
        """The continuation of prompt ids as text pieces (what chat turns and the server run on)."""
        request = self.engine.submit(ids, SamplingParams(**sampling), heal=heal)
        for chunk in self.engine.stream(request):
            if chunk.text:
                yield chunk.text

    def chat_prompt(self, messages: str | list[dict], *, system: str | None = None) -> list[int]:
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        if system is not None:
            messages = [{"role": "system", "content": system}, *[m for m in messages if m["role"] != "system"]]
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
                raise ModelError(f"message {i} must be {{'role': ..., 'content': str}}, got {m!r}")
        return self.tokenizer.encode_chat_prompt(messages)

    # --- vectors ---------------------------------------------------------------------------------

    @torch.no_grad()
    def embed(self, texts: str | list[str], *, batch_size: int = 16, normalize: bool = True) -> torch.Tensor:
        """Mean of the final hidden states over each text's tokens: (N, hidden_size), unit length by default.
        Right padding is exact here: in a causal model no real token attends to the padding after it."""
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        out = []
        param = next(self.model.parameters())
        for start in range(0, len(texts), batch_size):
            ids = [prompt_ids(self.tokenizer, t)[: self.context_length] for t in texts[start:start + batch_size]]
            width = max(len(x) for x in ids)
            batch = torch.zeros(len(ids), width, dtype=torch.long, device=param.device)       # (B, T)
            keep = torch.zeros(len(ids), width, 1, dtype=torch.float32, device=param.device)  # (B, T, 1)
            for i, x in enumerate(ids):
                batch[i, :len(x)] = torch.tensor(x)
                keep[i, :len(x)] = 1.0
            hidden = self.model.hidden(batch).float()                                         # (B, T, C)
            pooled = (hidden * keep).sum(1) / keep.sum(1)                                     # (B, C)
            out.append(torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled)
        vectors = torch.cat(out)
        return vectors[0] if single else vectors
