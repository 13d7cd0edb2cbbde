"""`lmforge serve`'s OpenAI-compatible API, driven by the official `openai` client and checked against the
Python API (itself checked against transformers): same weights, same greedy text, same embeddings."""

import base64
import json
import threading
import time

import numpy as np
import pytest
import torch
from conftest import require, run_cli

from lmforge.infer.engine import prompt_ids
from lmforge.infer.local import load

openai = require("openai")
httpx = require("httpx")

PROMPTS = ["def main(", "import os\n", "class Config:\n    def", "for i in range(", "    return "]
GREEDY = {"temperature": 0, "max_tokens": 12}


@pytest.fixture(scope="module")
def model(trained_model):
    return load(trained_model, max_batch=8)


@pytest.fixture(scope="module")
def server(model):
    from lmforge.serve.http import start_server
    from lmforge.serve.openai import ModelPool, create_app

    pool = ModelPool({"trained": model})
    url, stop = start_server(create_app(pool))
    yield url, pool
    stop()
    pool.close()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[0] + "v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def reference(trained_model):
    """The Python API on its own copy of the weights (the served model's engine runs in its thread)."""
    return load(trained_model)


def test_models_health_and_openapi(client, server):
    assert [m.id for m in client.models.list().data] == ["trained"]
    assert client.models.retrieve("trained").owned_by == "lmforge"
    assert httpx.get(server[0] + "health").json() == {"status": "ok", "models": ["trained"]}
    paths = httpx.get(server[0] + "openapi.json").json()["paths"]
    for path in ("/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/health"):
        assert path in paths


def test_completion_equals_the_python_api(client, reference):
    out = client.completions.create(model="trained", prompt=PROMPTS[0], **GREEDY)
    assert out.choices[0].text == reference.generate(PROMPTS[0], **GREEDY)
    assert out.choices[0].finish_reason in ("stop", "length")
    assert out.usage.prompt_tokens == len(prompt_ids(reference.tokenizer, PROMPTS[0]))
    assert 1 <= out.usage.completion_tokens <= 12
    batch = client.completions.create(model="trained", prompt=PROMPTS[:3], **GREEDY)
    assert [c.text for c in sorted(batch.choices, key=lambda c: c.index)] == reference.generate(PROMPTS[:3], **GREEDY)
    echoed = client.completions.create(model="trained", prompt=PROMPTS[1], echo=True, **GREEDY)
    assert echoed.choices[0].text == PROMPTS[1] + reference.generate(PROMPTS[1], **GREEDY)


def test_streamed_completion_joins_to_the_whole_text(client, reference):
    pieces, reasons = [], []
    for chunk in client.completions.create(model="trained", prompt=PROMPTS[2], stream=True, **GREEDY):
        pieces.append(chunk.choices[0].text)
        reasons.append(chunk.choices[0].finish_reason)
    assert "".join(pieces) == reference.generate(PROMPTS[2], **GREEDY)
    assert len(pieces) > 2 and reasons[-1] in ("stop", "length") and set(reasons[:-1]) == {None}


def test_chat_plain_and_streamed(client, reference):
    messages = [{"role": "system", "content": "You write Python."}, {"role": "user", "content": "a loop please"}]
    expected = reference.chat(messages, **GREEDY)
    out = client.chat.completions.create(model="trained", messages=messages, **GREEDY)
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == expected
    assert out.usage.prompt_tokens == len(reference.chat_prompt(messages))
    stream = client.chat.completions.create(model="trained", messages=messages, stream=True,
                                            stream_options={"include_usage": True}, **GREEDY)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert chunks[-1].usage.completion_tokens == out.usage.completion_tokens
    # content as a list of text parts, as newer clients send it
    parts = [{"role": "system", "content": [{"type": "text", "text": "You write Python."}]},
             {"role": "user", "content": [{"type": "text", "text": "a loop "}, {"type": "text", "text": "please"}]}]
    assert client.chat.completions.create(model="trained", messages=parts, **GREEDY).choices[0].message.content \
        == expected


def test_the_stream_is_server_sent_events_ending_in_done(server):
    body = {"model": "trained", "messages": [{"role": "user", "content": "hi"}], "stream": True, **GREEDY}
    with httpx.stream("POST", server[0] + "v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")


def test_sampling_with_a_seed_repeats(client):
    args = {"model": "trained", "prompt": "def ", "max_tokens": 16, "temperature": 1.0, "top_p": 0.9, "seed": 5}
    a, b = (client.completions.create(**args).choices[0].text for _ in range(2))
    assert a == b
    many = client.completions.create(**{**args, "n": 3})
    assert len(many.choices) == 3 and many.choices[0].text == a  # choice k is seeded seed + k


def test_embeddings_equal_the_python_api_in_both_encodings(client, server, reference):
    texts = ["import sys", "def add(a, b):\n    return a + b"]
    expected = reference.embed(texts).numpy()
    b64 = client.embeddings.create(model="trained", input=texts)  # the client asks for base64 by default
    floats = client.embeddings.create(model="trained", input=texts, encoding_format="float")
    for out in (b64, floats):
        got = np.array([d.embedding for d in sorted(out.data, key=lambda d: d.index)], dtype=np.float32)
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert b64.usage.prompt_tokens == sum(len(prompt_ids(reference.tokenizer, t)) for t in texts)
    raw = httpx.post(server[0] + "v1/embeddings",
                     json={"model": "trained", "input": "x", "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert vec.shape == (reference.model.config.hidden_size,) and abs(np.linalg.norm(vec) - 1) < 1e-5


def test_32_concurrent_requests_complete_and_are_batched(client, server, reference):
    prompts = [PROMPTS[i % len(PROMPTS)] + " " * (i // len(PROMPTS)) for i in range(32)]
    expected = {p: reference.generate(p, **GREEDY) for p in set(prompts)}
    engine = server[1].get("trained").engine
    steps, rows = engine.steps, engine.decoded_rows
    results: dict[int, str] = {}

    def ask(i):
        results[i] = client.completions.create(model="trained", prompt=prompts[i], **GREEDY).choices[0].text

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 32
    assert all(results[i] == expected[prompts[i]] for i in range(32))
    # 32 requests of <= 12 tokens decoded one by one take ~32 x 11 steps; batched, each step advances many
    assert (engine.decoded_rows - rows) / max(1, engine.steps - steps) > 3


BAD = [
    ("not json", "/v1/completions", "{\"model\": ", 400, None),
    ("wrong type", "/v1/completions", {"model": "trained", "prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
    ("negative max_tokens", "/v1/completions", {"model": "trained", "prompt": "x", "max_tokens": -3}, 400,
     "max_tokens"),
    ("huge max_tokens", "/v1/completions", {"model": "trained", "prompt": "x", "max_tokens": 10**9}, 400,
     "max_tokens"),
    ("prompt past the context", "/v1/completions", {"model": "trained", "prompt": "x = 1\n" * 400}, 400, "prompt"),
    ("unknown model", "/v1/chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]},
     404, "model"),
    ("no messages", "/v1/chat/completions", {"model": "trained", "messages": []}, 400, "messages"),
    ("bad role", "/v1/chat/completions", {"model": "trained", "messages": [{"role": "robot", "content": "x"}]},
     400, "messages"),
    ("temperature out of range", "/v1/chat/completions",
     {"model": "trained", "messages": [{"role": "user", "content": "x"}], "temperature": -1}, 400, "temperature"),
    ("an image", "/v1/chat/completions", {"model": "trained", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}, 400, "messages"),
    ("token-array embeddings", "/v1/embeddings", {"model": "trained", "input": [[1, 2, 3]]}, 400, "input"),
    ("no such path", "/v1/nothing", {}, 404, None),
]


@pytest.mark.parametrize("what,path,body,status,param", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_openai_shaped_errors_and_the_server_goes_on(server, client, what, path, body, status,
                                                                      param):
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, str) else \
        {"json": body}
    r = httpx.post(server[0] + path.lstrip("/"), timeout=30, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["message"] and error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert client.completions.create(model="trained", prompt="x", max_tokens=2).choices[0].text is not None


def test_the_client_sees_errors_as_its_own_exceptions(client):
    with pytest.raises(openai.BadRequestError, match="context"):
        client.completions.create(model="trained", prompt="y", max_tokens=100_000)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_a_client_that_hangs_up_frees_its_slot(server, monkeypatch):
    engine = server[1].get("trained").engine
    ended = []
    finish = engine._finish
    monkeypatch.setattr(engine, "_finish", lambda request, reason, *a, **k: (ended.append(
        (reason, len(request.tokens))), finish(request, reason, *a, **k))[1])
    body = {"model": "trained", "prompt": "def ", "max_tokens": 200, "temperature": 1.0, "seed": 1,
            "stop": ["\x00never"], "stream": True}
    with httpx.stream("POST", server[0] + "v1/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
        assert engine._running  # generating for us
    deadline = time.monotonic() + 20
    while not ended and time.monotonic() < deadline:
        time.sleep(0.01)
    [(reason, tokens)] = ended
    assert reason == "cancelled" and tokens < 200
    assert not engine._running and not engine._waiting


def test_api_key(model):
    from lmforge.serve.http import start_server
    from lmforge.serve.openai import ModelPool, create_app

    url, stop = start_server(create_app(ModelPool({"trained": model}), api_key="s3cret"))
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "v1", api_key="wrong", max_retries=0).models.list()
        assert httpx.get(url + "v1/models").status_code == 401
        good = openai.OpenAI(base_url=url + "v1", api_key="s3cret", max_retries=0)
        assert good.completions.create(model="trained", prompt="x", max_tokens=2).choices
        assert httpx.get(url + "health").status_code == 200  # liveness needs no key
    finally:
        stop()


@pytest.fixture(scope="module")
def gguf_file(trained_model, tmp_path_factory):
    file = tmp_path_factory.mktemp("served") / "coder-q8_0.gguf"
    run_cli("export", trained_model, "--type", "q8_0", "--no-measure", "-o", file, check=True)
    return file


@pytest.mark.parametrize("kind", ["model directory", "gguf file"])
def test_lmforge_serve_command(trained_model, gguf_file, kind):
    """`lmforge serve MODEL` in its own process, for a model directory (torch backend) and a GGUF (llama.cpp):
    the name it serves and greedy text equal to the Python API's on the same backend."""
    import subprocess
    import sys

    from lmforge.serve.http import free_port

    path, name = (trained_model, "trained") if kind == "model directory" else (gguf_file, "coder-q8_0")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lmforge.cli.main", "serve", str(path), "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.3)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        assert [m.id for m in c.models.list().data] == [name]  # RUN/model is named after its run, a GGUF by its file
        served = c.completions.create(model=name, prompt="def ", **GREEDY).choices[0].text
        assert served == load(path).generate("def ", **GREEDY) and served
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_with_nothing_to_serve_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "empty"))
    proc = run_cli("serve", "--port", "0")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: nothing to serve: no MODEL given and the catalog is empty "
                                                "(lmforge serve RUN_DIR/model, or lmforge models import PATH first)"]
