"""The OpenAI-compatible server that `lmforge serve` runs: /v1/models, /v1/completions, /v1/chat/completions
(as server-sent events ending in `data: [DONE]` when `stream` is true), /v1/embeddings, /health, the OpenAPI
schema at /openapi.json (browsable at /docs), and the chat page at `/`.

Every API call becomes one engine request per choice. Each model's engine steps in its own thread and batches
every request in flight; chunks come back to the event loop through `call_soon_threadsafe`, so no thread waits
per client. A client that hangs up cancels its requests, which frees their slots at the engine's next step.

Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`: 400 for a request the client got
wrong (bad JSON, a wrong type, a value out of range, a prompt longer than the context), 401 for a missing or
wrong API key, 404 for an unknown model or path, 500 when generation itself fails. The server keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import secrets
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Literal, Union

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request

from lmforge.errors import LmforgeError, ModelError, RequestError
from lmforge.infer.engine import Chunk, Engine, prompt_ids
from lmforge.infer.sampling import SamplingParams

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the context's rest


# --------------------------------------------------------------------------------------------- the models
class ModelPool:
    """The models a server offers by id: loaded up front, or on first use from a path (catalog entries), each
    with its engine running in its own thread."""

    def __init__(self, models: dict[str, Any] | None = None, sources: dict[str, Callable[[], Any]] | None = None):
        self._loaded: dict[str, Any] = {}
        self._sources = dict(sources or {})
        self._lock = threading.Lock()
        for name, model in (models or {}).items():
            self._loaded[name] = model
            model.engine.start()

    @property
    def ids(self) -> list[str]:
        return sorted({*self._loaded, *self._sources})

    def get(self, name: str):
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._sources:
            raise ApiError(404, f"the model {name!r} does not exist; this server has {', '.join(self.ids)}",
                           param="model", code="model_not_found")
        with self._lock:
            if name not in self._loaded:
                model = self._sources[name]()
                model.engine.start()
                self._loaded[name] = model
        return self._loaded[name]

    def close(self) -> None:
        for model in self._loaded.values():
            model.engine.close()


# --------------------------------------------------------------------------------------------- errors
class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        super().__init__(message)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _api_error(e: LmforgeError) -> ApiError:
    """A request the engine or the tokenizer refused, as a 400 naming the offending field."""
    param = getattr(e, "param", None)
    code = "context_length_exceeded" if "context" in e.message and param in ("prompt", "max_tokens") else None
    return ApiError(400, e.format(), param=param, code=code)


def _validation_message(errors: list[dict]) -> tuple[str, str | None]:
    first = errors[0]
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    if first.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({first.get('ctx', {}).get('error', first.get('msg'))})", None
    where = ".".join(loc)
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return (f"{where}: {first.get('msg')}" if where else str(first.get("msg"))) + more, (loc[0] if loc else None)


# --------------------------------------------------------------------------------------------- requests
class Sampling(BaseModel):
    """The sampling fields both text endpoints take; lmforge's extensions use llama.cpp's server names."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(None, ge=1, description="Most new tokens.")
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=16, description="How many choices to generate.")
    stream: bool = False
    stream_options: dict | None = Field(None, description='{"include_usage": true} adds a last chunk with usage.')
    stop: Union[str, list[str], None] = None
    seed: int | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logprobs: Any = None
    logit_bias: dict | None = None
    user: str | None = None
    top_k: int = Field(0, ge=0, description="lmforge: keep the k likeliest tokens (0 = off).")
    min_p: float = Field(0.0, ge=0.0, lt=1.0, description="lmforge: drop tokens below min_p x the likeliest.")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, description="lmforge: CTRL's penalty (1 = off).")

    def unsupported(self) -> None:
        for name, value, off in (("presence_penalty", self.presence_penalty, 0.0),
                                 ("frequency_penalty", self.frequency_penalty, 0.0),
                                 ("logprobs", self.logprobs, None), ("logit_bias", self.logit_bias, None)):
            if value not in (off, False, {}) and value is not None:
                raise ApiError(400, f"{name} is not supported by this server"
                               + (" (repetition_penalty is)" if name.endswith("penalty") else ""), param=name)

    def params(self, max_tokens: int, choice: int) -> SamplingParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        seed = None if self.seed is None else self.seed + choice
        return SamplingParams(max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p,
                              top_k=self.top_k, min_p=self.min_p, repetition_penalty=self.repetition_penalty,
                              seed=seed, stop=stop)

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(Sampling):
    prompt: Union[str, list[str]]
    echo: bool = False
    suffix: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[ContentPart], None] = ""

    def text(self, i: int) -> str:
        if isinstance(self.content, list):
            parts = []
            for part in self.content:
                if part.type != "text" or part.text is None:
                    raise ApiError(400, f"messages[{i}]: content of type {part.type!r}: this model reads text only",
                                   param="messages")
                parts.append(part.text)
            return "".join(parts)
        return self.content or ""


class ChatRequest(Sampling):
    messages: list[Message] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list | None = None
    response_format: dict | None = None

    def unsupported(self) -> None:
        super().unsupported()
        if self.tools:
            raise ApiError(400, "tools are not supported by this server", param="tools")
        if self.response_format and self.response_format.get("type") not in (None, "text"):
            raise ApiError(400, "response_format other than text is not supported by this server",
                           param="response_format")


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    input: Union[str, list[str], list[int], list[list[int]]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None


# --------------------------------------------------------------------------------------------- running them
class Job:
    """One API call's engine requests (one per choice), their chunks arriving on the event loop's queue."""

    def __init__(self, engine: Engine, prompts: list[list[int]], params: list[SamplingParams], heal: bool):
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[int, Chunk]] = asyncio.Queue()
        self.requests = []
        try:
            for i, (ids, p) in enumerate(zip(prompts, params)):
                listener = (lambda chunk, i=i: loop.call_soon_threadsafe(self.queue.put_nowait, (i, chunk)))
                self.requests.append(engine.submit(ids, p, heal=heal, listener=listener))
        except LmforgeError as e:
            self.cancel()
            raise _api_error(e) from None
        self.engine = engine
        self._open = len(self.requests)  # choices whose last chunk has not arrived yet

    @property
    def finished(self) -> bool:
        return self._open == 0

    async def next_chunk(self, timeout: float | None = None) -> tuple[int, Chunk]:
        """The next chunk of any choice; raises asyncio.TimeoutError after `timeout` seconds without one."""
        i, chunk = await asyncio.wait_for(self.queue.get(), timeout)
        if chunk.finish_reason == "error":
            error = self.engine.last_error
            raise ApiError(500, f"generation failed: {type(error).__name__}: {error}")
        self._open -= chunk.finish_reason is not None
        return i, chunk

    async def chunks(self) -> AsyncIterator[tuple[int, Chunk]]:
        try:
            while not self.finished:
                yield await self.next_chunk()
        finally:
            self.cancel()  # a client gone mid-stream (this generator closed early) frees its slots

    def cancel(self) -> None:
        for r in self.requests:
            if not r.done:
                r.cancel()

    def completion_tokens(self) -> int:
        return sum(len(r.tokens) for r in self.requests)


async def _collect(job: Job, http_request) -> tuple[list[str], list[str]]:
    """Every choice's whole text and finish reason; gives up (freeing the slots) if the client disconnects."""
    texts = [""] * len(job.requests)
    reasons = [""] * len(job.requests)
    try:
        while not job.finished:
            try:
                i, chunk = await job.next_chunk(timeout=1.0)
            except asyncio.TimeoutError:
                if await http_request.is_disconnected():
                    break
                continue
            texts[i] += chunk.text
            reasons[i] = chunk.finish_reason or reasons[i]
    finally:
        job.cancel()
    return texts, reasons


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _sse(obj: dict | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


def _event_stream(job: Job, make_chunk: Callable[[int, str, str | None], dict], *, first: list[dict] = (),
                  usage: Callable[[], dict] | None = None):
    async def events():
        for obj in first:
            yield _sse(obj)
        try:
            async for i, chunk in job.chunks():
                if chunk.text or chunk.finish_reason:
                    yield _sse(make_chunk(i, chunk.text, chunk.finish_reason))
        except ApiError as e:
            yield _sse(e.body())
        if usage is not None:
            yield _sse(usage())
        yield _sse("[DONE]")

    from fastapi.responses import StreamingResponse

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _room(model, prompts: list[list[int]]) -> int:
    return max(1, model.context_length - max(len(p) for p in prompts))


# --------------------------------------------------------------------------------------------- the app
def create_app(pool: ModelPool, *, api_key: str | None = None, chat_page: bool = True):
    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from lmforge import __version__

    app = FastAPI(title="lmforge", version=__version__,
                  description="An OpenAI-compatible API over models you trained (docs/running.md).")
    app.state.pool = pool
    app.router.add_event_handler("shutdown", pool.close)

    @app.exception_handler(ApiError)
    async def _api(request, e: ApiError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        message, param = _validation_message(e.errors())
        return JSONResponse(ApiError(400, message, param=param).body(), status_code=400)

    @app.exception_handler(LmforgeError)
    async def _lmforge(request, e: LmforgeError):
        err = _api_error(e)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, e: StarletteHTTPException):
        return JSONResponse(ApiError(e.status_code, str(e.detail)).body(), status_code=e.status_code)

    if api_key:
        @app.middleware("http")
        async def _auth(request: Request, call_next):
            if request.url.path.startswith("/v1/"):
                given = request.headers.get("authorization", "")
                token = given[7:] if given.lower().startswith("bearer ") else ""
                if not hmac.compare_digest(token.encode(), api_key.encode()):
                    err = ApiError(401, "incorrect or missing API key (send it as 'Authorization: Bearer KEY')",
                                   code="invalid_api_key")
                    return JSONResponse(err.body(), status_code=401)
            return await call_next(request)

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": int(app.state.started), "owned_by": "lmforge"}

    app.state.started = time.time()

    @app.get("/health", summary="Liveness, and the models this server offers")
    def health():
        return {"status": "ok", "models": pool.ids}

    @app.get("/v1/models", summary="The models this server offers")
    def list_models():
        return {"object": "list", "data": [model_card(n) for n in pool.ids]}

    @app.get("/v1/models/{name:path}", summary="One model")
    def get_model(name: str):
        if name not in pool.ids:
            raise ApiError(404, f"the model {name!r} does not exist", param="model", code="model_not_found")
        return model_card(name)

    @app.post("/v1/completions", summary="Continue a prompt")
    async def completions(body: CompletionRequest, http_request: Request):
        body.unsupported()
        if body.suffix:
            raise ApiError(400, "suffix (fill-in-the-middle) is not supported by this server", param="suffix")
        model = await asyncio.to_thread(pool.get, body.model)
        texts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not texts:
            raise ApiError(400, "prompt is an empty list", param="prompt")
        prompts = [prompt_ids(model.tokenizer, t) for t in texts for _ in range(body.n)]
        max_tokens = body.max_tokens or COMPLETIONS_DEFAULT_MAX_TOKENS
        try:
            params = [body.params(max_tokens, k % body.n) for k in range(len(prompts))]
        except RequestError as e:
            raise _api_error(e) from None
        job = Job(model.engine, prompts, params, heal=True)
        ident, created = f"cmpl-{secrets.token_hex(12)}", int(time.time())
        prompt_tokens = sum(len(p) for p in prompts[::body.n])

        def prefix(k: int) -> str:
            return texts[k // body.n] if body.echo else ""

        if body.stream:
            def chunk(k, text, reason):
                return {"id": ident, "object": "text_completion", "created": created, "model": body.model,
                        "choices": [{"index": k, "text": text, "logprobs": None, "finish_reason": reason}]}

            first = [chunk(k, prefix(k), None) for k in range(len(prompts))] if body.echo else []
            usage = (lambda: {"id": ident, "object": "text_completion", "created": created, "model": body.model,
                              "choices": [], "usage": _usage(prompt_tokens, job.completion_tokens())})
            return _event_stream(job, chunk, first=first, usage=usage if body.include_usage else None)
        outs, reasons = await _collect(job, http_request)
        return {"id": ident, "object": "text_completion", "created": created, "model": body.model,
                "choices": [{"index": k, "text": prefix(k) + t, "logprobs": None, "finish_reason": r}
                            for k, (t, r) in enumerate(zip(outs, reasons))],
                "usage": _usage(prompt_tokens, job.completion_tokens())}

    @app.post("/v1/chat/completions", summary="The assistant's reply to a conversation")
    async def chat_completions(body: ChatRequest, http_request: Request):
        body.unsupported()
        model = await asyncio.to_thread(pool.get, body.model)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text(i)}
                    for i, m in enumerate(body.messages)]
        try:
            ids = model.chat_prompt(messages)
        except ModelError as e:
            raise ApiError(400, e.format(), param="messages") from None
        prompts = [ids] * body.n
        max_tokens = body.max_completion_tokens or body.max_tokens or _room(model, prompts)
        try:
            params = [body.params(max_tokens, k) for k in range(body.n)]
        except RequestError as e:
            raise _api_error(e) from None
        job = Job(model.engine, prompts, params, heal=False)
        ident, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())

        def envelope(choices: list[dict], **more) -> dict:
            return {"id": ident, "object": "chat.completion.chunk", "created": created, "model": body.model,
                    "system_fingerprint": None, "choices": choices, **more}

        if body.stream:
            def chunk(k, text, reason):
                return envelope([{"index": k, "delta": {"content": text} if text else {}, "logprobs": None,
                                  "finish_reason": reason}])

            first = [envelope([{"index": k, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                "finish_reason": None}]) for k in range(body.n)]
            usage = lambda: envelope([], usage=_usage(len(ids), job.completion_tokens()))  # noqa: E731
            return _event_stream(job, chunk, first=first, usage=usage if body.include_usage else None)
        outs, reasons = await _collect(job, http_request)
        return {"id": ident, "object": "chat.completion", "created": created, "model": body.model,
                "system_fingerprint": None,
                "choices": [{"index": k, "message": {"role": "assistant", "content": t}, "logprobs": None,
                             "finish_reason": r} for k, (t, r) in enumerate(zip(outs, reasons))],
                "usage": _usage(len(ids), job.completion_tokens())}

    @app.post("/v1/embeddings", summary="Mean-pooled final hidden states of each input")
    async def embeddings(body: EmbeddingRequest):
        model = await asyncio.to_thread(pool.get, body.model)
        inputs = [body.input] if isinstance(body.input, str) else list(body.input)
        if not inputs or not all(isinstance(x, str) for x in inputs):
            raise ApiError(400, "input must be a string or a non-empty list of strings (token arrays are not "
                           "supported)", param="input")
        if any(not x for x in inputs):
            raise ApiError(400, "input contains an empty string", param="input")
        vectors = await asyncio.to_thread(model.embed, inputs)                             # (N, C)
        if body.dimensions is not None and body.dimensions != vectors.shape[-1]:
            raise ApiError(400, f"this model's embeddings have {vectors.shape[-1]} dimensions; it cannot give "
                           f"{body.dimensions}", param="dimensions")
        tokens = sum(len(prompt_ids(model.tokenizer, x)) for x in inputs)

        def encode(v):
            if body.encoding_format == "base64":
                return base64.b64encode(v.float().numpy().astype("<f4").tobytes()).decode("ascii")
            return v.tolist()

        return {"object": "list", "model": body.model,
                "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    if chat_page:
        from lmforge.serve.chat_page import mount_chat_page

        mount_chat_page(app)
    return app

