"""Generation with continuous batching: requests join and leave a running batch between decode steps.

One engine step is:

    cancelled requests leave          (their slots are freed at once: a client that hung up costs nothing)
    waiting requests are admitted     (each prompt is prefilled into a free slot of the SlotCache, and its first
                                       token sampled from the prefill's last logits)
    one decode step for every running request together
                                      (each at its own position; then each row is sampled with its own
                                       parameters and seeded generator, and its text released)

Requests finish at an end token (finish_reason "stop"), a stop string ("stop"), their token budget or the
context's end ("length"), or cancellation ("cancelled"). The same engine serves the Python API (driven by the
caller's thread: `run` / `stream`) and the server (driven by its own thread: `start`).

Token healing: a prompt's last token is often a fragment of what the model would have produced (a bare
"\n" where training text nearly always had "\n" + indentation as one token). With `heal`, we drop that token and
require the first generated token to start with its bytes, so the continuation begins sensibly.
"""

from __future__ import annotations

import codecs
import itertools
import queue
import threading
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import torch

from lmforge.errors import ModelError, RequestError
from lmforge.infer.cache import SlotCache
from lmforge.infer.sampling import SamplingParams, StopStrings, penalize_repeats, pick
from lmforge.model.transformer import COMPILE_ERRORS


@dataclass
class Chunk:
    """A piece of one request's output: the text released by this step (possibly empty while a stop string
    might still be forming), the token ids behind it, and, on the last chunk, why the request finished."""

    text: str
    tokens: list[int]
    finish_reason: str | None = None


@dataclass(eq=False)
class Request:
    prompt: list[int]
    params: SamplingParams
    first_allowed: torch.Tensor | None = None     # token healing: which tokens may come first
    drop: bytes = b""                              # ... and the prompt bytes the first token repeats
    id: int = 0
    listener: Callable[[Chunk], None] | None = None
    """Called with each chunk from the engine's thread, besides the `out` queue (an asyncio server hands it
    `loop.call_soon_threadsafe` so that no thread waits per request)."""
    tokens: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    slot: int | None = None

    def __post_init__(self):
        self.out: queue.Queue[Chunk] = queue.Queue()
        self.text = ""                             # every piece released so far
        self.cancelled = threading.Event()
        self.finished = threading.Event()
        seed = self.params.seed if self.params.seed is not None else int(torch.randint(2**62, ()))
        self.generator = torch.Generator().manual_seed(seed)
        self.seen = set(self.prompt)
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = StopStrings(self.params.stop)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def emit(self, chunk: Chunk) -> None:
        self.out.put(chunk)
        if self.listener is not None:
            try:
                self.listener(chunk)
            except Exception:  # the listener's side is gone (a closed event loop): stop producing for it
                self.listener = None
                self.cancel()

    def cancel(self) -> None:
        """Ask the engine to drop this request at its next step (safe from any thread)."""
        self.cancelled.set()

    def chunks(self, timeout: float | None = None) -> Iterator[Chunk]:
        """This request's chunks as the engine's thread produces them, until the last one."""
        while True:
            chunk = self.out.get(timeout=timeout)
            yield chunk
            if chunk.finish_reason is not None:
                return


class Engine:
    """Runs `model` over many requests at once, up to `max_batch` in flight, each with up to `max_len`
    prompt + generated tokens (default: the model's context).

    `compile` runs the decode step through torch.compile on static shapes: every step decodes all `max_batch`
    rows over all `max_len` cached positions (masked), so it compiles once, on the first step; eager decoding
    instead trims both to what is in flight. Which pays off depends on the model's size and `max_len`
    (benchmarks/decode_speed.py measures both); a compiler that fails is reported and the engine runs eager."""

    def __init__(self, model, tokenizer, *, max_batch: int = 8, max_len: int | None = None,
                 stop_ids: Iterable[int] = (), compile: bool = False):
        model.eval()
        self.model = model
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self._init_scheduler(tokenizer, max_batch, max_len or model.config.max_position_embeddings, stop_ids)
        self.cache = SlotCache(model.config, max_batch, self.max_len, self.dtype, self.device)
        model.extend_rotary(self.max_len)
        self._compiled = torch.compile(self._static_step, dynamic=False) if compile else None

    def _init_scheduler(self, tokenizer, max_batch: int, max_len: int, stop_ids: Iterable[int]) -> None:
        """The queues and counters every backend shares (lmforge.infer.llamacpp's engine reuses them)."""
        self.tokenizer, self.max_len = tokenizer, max_len
        self.stop_ids = frozenset(stop_ids)
        self._free = list(range(max_batch))
        self._waiting: deque[Request] = deque()
        self._running: dict[int, Request] = {}     # slot -> request
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._closing = False
        self.steps = 0                              # decode steps taken (batching is measured from these)
        self.decoded_rows = 0                       # requests advanced summed over those steps
        self.last_error: Exception | None = None

    # --- submitting ------------------------------------------------------------------------------

    def submit(self, prompt: list[int], params: SamplingParams, *, heal: bool = False,
               listener: Callable[[Chunk], None] | None = None) -> Request:
        """Queue a request; raises RequestError when it cannot fit the context."""
        if not prompt:
            raise RequestError("the prompt is empty", param="prompt",
                               hint="give at least one token (the tokenizer has no BOS to start from)")
        if len(prompt) >= self.max_len:
            raise RequestError(f"the prompt is {len(prompt)} tokens; this model's context is {self.max_len}",
                               param="prompt", hint="shorten the prompt")
        if len(prompt) + params.max_tokens > self.max_len:
            raise RequestError(f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceeds this "
                               f"model's context of {self.max_len} tokens", param="max_tokens",
                               hint=f"ask for at most {self.max_len - len(prompt)} new tokens")
        request = Request(list(prompt), params, id=next(self._ids), listener=listener)
        if heal:
            request.prompt, request.drop, request.first_allowed = heal_prompt(self.tokenizer, request.prompt)
        with self._lock:
            self._waiting.append(request)
            self._lock.notify()
        return request

    # --- driving ---------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return bool(self._waiting or self._running)

    def run(self, requests: list[Request]) -> None:
        """Step in the caller's thread until `requests` are done (or hand them to the running thread)."""
        if self._thread is not None:
            for r in requests:
                r.finished.wait()
            return
        while not all(r.done for r in requests):
            self.step()

    def stream(self, request: Request) -> Iterator[Chunk]:
        """The request's chunks as they come, stepping in the caller's thread when no engine thread runs; a
        consumer that stops early (a closed generator) cancels the request."""
        try:
            if self._thread is not None:
                yield from request.chunks()
                return
            while True:
                while not request.out.empty():
                    chunk = request.out.get()
                    yield chunk
                    if chunk.finish_reason is not None:
                        return
                self.step()
        finally:
            if not request.done:
                request.cancel()
                if self._thread is None:
                    self._drop_cancelled()

    def start(self) -> "Engine":
        """Step in a background thread whenever work is queued (the server's mode)."""
        if self._thread is None:
            self._closing = False  # a closed engine can be started again (a second server over the same model)
            self._thread = threading.Thread(target=self._loop, name="lmforge-engine", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        with self._lock:
            self._closing = True
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self.busy and not self._closing:
                    self._lock.wait()
                if self._closing:
                    return
            try:
                self.step()
            except Exception as e:  # a failed step must not hang every client: end what was in flight, go on
                self.last_error = e
                for request in [*self._running.values(), *self._waiting]:
                    self._finish(request, "error")
                self._waiting.clear()

    @torch.no_grad()
    def step(self) -> None:
        """Admit what fits, then advance every running request by one token."""
        self._drop_cancelled()
        while self._free:
            with self._lock:
                if not self._waiting:
                    break
                request = self._waiting.popleft()
            if request.cancelled.is_set():
                self._finish(request, "cancelled")
                continue
            self._prefill(request)
        if self._running:
            self._decode()

    # --- the work --------------------------------------------------------------------------------

    def _prefill(self, request: Request) -> None:
        request.slot = slot = self._free.pop(0)
        self._running[slot] = request
        ids = torch.tensor([request.prompt], dtype=torch.long, device=self.device)    # (1, T)
        logits = self.model(ids, cache=self.cache.prefill(slot), last_only=True)[0, -1]  # (V,)
        self._sample_and_emit(request, logits)

    def _static_step(self, last: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        return self.model(last, cache=self.cache.decode(active, static=True), last_only=True)[:, -1]

    def _compiled_step(self, last: torch.Tensor, active: torch.Tensor) -> torch.Tensor | None:
        """The compiled step's logits, or None once the compiler has failed (then the engine stays eager)."""
        try:
            return self._compiled(last, active)
        except COMPILE_ERRORS as e:
            warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                          "decoding in eager mode")
            self._compiled = None
            return None

    def _decode(self) -> None:
        # slots are taken lowest-first, so eager rows stay few; a compiled step always takes every row
        rows = self.cache.slots if self._compiled is not None else max(self._running) + 1
        active = torch.zeros(rows, dtype=torch.bool, device=self.device)
        last = torch.zeros(rows, 1, dtype=torch.long, device=self.device)
        for slot, request in self._running.items():
            active[slot] = True
            last[slot, 0] = request.tokens[-1]
        logits = self._compiled_step(last, active) if self._compiled is not None else None
        if logits is None:
            active, last = active[:max(self._running) + 1], last[:max(self._running) + 1]
            logits = self.model(last, cache=self.cache.decode(active), last_only=True)[:, -1]  # (rows, V)
        self.steps += 1
        self.decoded_rows += len(self._running)
        for slot, request in list(self._running.items()):
            self._sample_and_emit(request, logits[slot])

    def _sample_and_emit(self, request: Request, logits: torch.Tensor) -> None:
        params = request.params
        logits = logits.float().cpu()                                                  # (V,)
        if params.repetition_penalty != 1.0:
            logits = penalize_repeats(logits, torch.tensor(sorted(request.seen)), params.repetition_penalty)
        first = not request.tokens
        if first and request.first_allowed is not None and bool(request.first_allowed.any()):
            logits = logits.masked_fill(~request.first_allowed, float("-inf"))
        token = pick(logits, params, request.generator)
        if token in self.stop_ids:
            return self._finish(request, "stop", request._stops.flush())
        request.tokens.append(token)
        request.seen.add(token)
        raw = self.tokenizer.token_bytes[token] if self.tokenizer is not None else b""
        if first and request.drop:
            raw = raw[len(request.drop):]
        text, stopped = request._stops.feed(request._utf8.decode(raw))
        if stopped:
            return self._finish(request, "stop", text, [token])
        full = len(request.prompt) + len(request.tokens) >= self.max_len
        if len(request.tokens) >= params.max_tokens or full:
            tail = request._stops.feed(request._utf8.decode(b"", final=True))[0] + request._stops.flush()
            return self._finish(request, "length", text + tail, [token])
        request.text += text
        request.emit(Chunk(text, [token]))

    def _finish(self, request: Request, reason: str, text: str = "", tokens: list[int] | None = None) -> None:
        if request.slot is not None:
            self._running.pop(request.slot, None)
            self.cache.free(request.slot)
            self._free.append(request.slot)
            self._free.sort()
            request.slot = None
        request.finish_reason = reason
        request.text += text
        request.finished.set()
        request.emit(Chunk(text, tokens or [], reason))

    def _drop_cancelled(self) -> None:
        for request in [r for r in self._running.values() if r.cancelled.is_set()]:
            self._finish(request, "cancelled")


def generate_ids(model, prompt: list[int], *, stop_ids: Iterable[int] = (), **sampling) -> list[int]:
    """The new token ids after `prompt` (token level, no tokenizer needed): one request through an Engine."""
    engine = Engine(model, None, max_batch=1, max_len=len(prompt) + sampling.get("max_tokens", 128),
                    stop_ids=stop_ids)
    request = engine.submit(prompt, SamplingParams(**sampling))
    engine.run([request])
    return request.tokens


# --- prompts ---------------------------------------------------------------------------------------


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


def end_ids(tokenizer, model_dir=None) -> set[int]:
    """The tokens that end a generation: the tokenizer's EOS, lmforge's end-of-turn, and whatever the model's
    generation_config.json names (transformers' Llama-3 chat models end turns with an id of their own)."""
    from lmforge.model.tokenizer import END_OF_TURN

    ids = {t for t in (tokenizer.eos_id, tokenizer.backend.token_to_id(END_OF_TURN)) if t is not None}
    if model_dir is not None:
        from pathlib import Path

        from lmforge.io import read_json

        path = Path(model_dir) / "generation_config.json"
        if path.is_file():
            eos = read_json(path).get("eos_token_id")
            ids |= set(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
    return ids
