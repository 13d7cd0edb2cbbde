"""The llama.cpp backend (`--backend llamacpp`): a GGUF file run by llama-cpp-python behind the same engine
surface as the torch backend, so chat, generate, the server and the Python API take either.

llama.cpp computes the logits; lmforge's own sampler, stop strings, token healing and request queue do the rest,
so a request samples the same way on both backends. llama-cpp-python's high-level API holds one sequence per
context, so this engine runs one request at a time (others wait in the queue); the torch engine batches.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import torch

from lmforge.errors import ModelError
from lmforge.io import cpu_flags
from lmforge.infer.engine import Engine, Request
from lmforge.infer.local import LocalModel


def _llama(path: Path, n_ctx: int | None = None, **kwargs):
    try:
        import llama_cpp
        import llama_cpp.llama as high_level
    except ImportError as e:
        raise ModelError("the llama.cpp backend needs llama-cpp-python",
                         hint="pip install 'lmforge[llamacpp]' (it builds llama.cpp: 8-17 minutes on 2 cores)") from e
    kwargs.setdefault("n_threads", len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count())
    if "amx_int8" not in cpu_flags():
        return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx or 0, verbose=False, **kwargs)
    # On AMX CPUs llama.cpp repacks q8_0/q4_0 weights into its AMX buffer, whose batched matmul segfaults
    # (ggml-org/llama.cpp#20824; measured here: any quantized block weight, any prompt of 2+ tokens). The
    # Llama class does not expose use_extra_bufts, so it is switched off in the defaults it reads.
    default = high_level.llama_cpp.llama_model_default_params

    def without_repacking():
        params = default()
        params.use_extra_bufts = False
        return params

    high_level.llama_cpp.llama_model_default_params = without_repacking
    try:
        return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx or 0, verbose=False, **kwargs)
    finally:
        high_level.llama_cpp.llama_model_default_params = default


class GGUFTokenizer:
    """The tokenizer stored in a GGUF, through llama.cpp, with the surface the engine and LocalModel use."""

    def __init__(self, llm):
        self.llm = llm
        meta = llm.metadata
        self.bos_id = llm.token_bos() if llm.token_bos() >= 0 else None
        self.eos_id = llm.token_eos() if llm.token_eos() >= 0 else None
        self.add_bos = meta.get("tokenizer.ggml.add_bos_token", "true") == "true"
        eot = meta.get("tokenizer.ggml.eot_token_id")
        self.end_ids = {t for t in (self.eos_id, int(eot) if eot is not None else None) if t is not None}
        self.chat_template = meta.get("tokenizer.chat_template")

    @property
    def vocab_size(self) -> int:
        return self.llm.n_vocab()

    @functools.cached_property
    def token_bytes(self) -> list[bytes]:
        """Each token's bytes as llama.cpp renders it (b"" for control tokens)."""
        return [self.llm.detokenize([i], special=False) for i in range(self.vocab_size)]

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_special_tokens and self.add_bos, special=False)

    def decode(self, ids) -> str:
        return self.llm.detokenize(list(ids), special=False).decode("utf-8", errors="replace")

    def encode_chat_prompt(self, messages: list[dict]) -> list[int]:
        from lmforge.model.tokenizer import render_chat_template

        if not self.chat_template:
            raise ModelError("this GGUF carries no chat template", hint="export it with `lmforge export`, which "
                             "writes the tokenizer's template, or use generate instead of chat")
        special = {}
        for key, token in (("bos_token", self.bos_id), ("eos_token", self.eos_id)):
            if token is not None:
                special[key] = self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")
        text, _ = render_chat_template(self.chat_template, messages, add_generation_prompt=True, **special)
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


class LlamaCppEngine(Engine):
    """Engine's queue, sampling and streaming over llama.cpp's forward pass, one request at a time."""

    def __init__(self, llm, tokenizer: GGUFTokenizer):
        self.llm = llm
        self._init_scheduler(tokenizer, 1, llm.n_ctx(), tokenizer.end_ids)

    def _logits(self) -> torch.Tensor:
        # the last row llama.cpp computed (llama-cpp-python keeps no copy unless logits_all, which costs n_ctx rows)
        return torch.from_numpy(np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),)).copy())

    def _prefill(self, request: Request) -> None:
        request.slot = self._free.pop(0)
        self._running[request.slot] = request
        self.llm.reset()
        self.llm.eval(request.prompt)
        self._sample_and_emit(request, self._logits())

    def _decode(self) -> None:
        (slot, request), = self._running.items()
        self.llm.eval([request.tokens[-1]])
        self.steps += 1
        self.decoded_rows += 1
        self._sample_and_emit(request, self._logits())

    def _finish(self, request: Request, reason: str, text: str = "", tokens=None) -> None:
        if request.slot is not None:  # no SlotCache here: the next prefill resets llama.cpp's context
            self._running.pop(request.slot, None)
            self._free.append(request.slot)
            request.slot = None
        super()._finish(request, reason, text, tokens)


class LlamaCppModel(LocalModel):
    """LocalModel's generate / stream / chat / embed over a GGUF file."""

    def __init__(self, path: Path, *, max_len: int | None = None):
        self.path, self.model = Path(path), None
        self.llm = _llama(self.path, max_len)
        self.tokenizer = GGUFTokenizer(self.llm)
        self.engine = LlamaCppEngine(self.llm, self.tokenizer)

    def __repr__(self) -> str:
        return f"LlamaCppModel({self.name!r}, context {self.context_length})"

    @functools.cached_property
    def _embedder(self):
        from llama_cpp import LLAMA_POOLING_TYPE_MEAN

        return _llama(self.path, self.context_length, embedding=True, pooling_type=LLAMA_POOLING_TYPE_MEAN)

    def embed(self, texts, *, batch_size: int = 16, normalize: bool = True) -> torch.Tensor:
        """Mean-pooled final hidden states, as llama.cpp's mean pooling computes them."""
        single = isinstance(texts, str)
        rows = [torch.tensor(self._embedder.embed(t, normalize=False), dtype=torch.float32)
                for t in ([texts] if single else texts)]
        vectors = torch.stack([r.mean(0) if r.dim() == 2 else r for r in rows])
        if normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return vectors[0] if single else vectors
