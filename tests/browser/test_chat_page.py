"""The chat page `lmforge serve` shows at `/`, in a real Chromium against a real server and a small trained model:
a conversation whose replies equal the Python API's (greedy), a system prompt, regenerate, stop mid-stream (the
server's slot freed), conversations kept across a reload, an API key asked for on 401."""

from __future__ import annotations

import time

import pytest

from lmforge.infer.local import load

from .pages import save_artifact

pytestmark = pytest.mark.browser

MAX_TOKENS = 12


@pytest.fixture(scope="module")
def model(trained_model):
    return load(trained_model)


@pytest.fixture(scope="module")
def reference(trained_model):
    return load(trained_model)


@pytest.fixture(scope="module")
def server(model, studio_dist):
    from lmforge.serve.http import start_server
    from lmforge.serve.openai import ModelPool, create_app

    pool = ModelPool({"trained": model})
    url, stop = start_server(create_app(pool))
    yield url, pool
    stop()


def _open(chromium, url):
    page = chromium.new_page(viewport={"width": 1100, "height": 760})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=30_000)
    return page, errors


# Every value body[data-state] takes, kept by an observer: a short reply on a quiet machine can start and end
# between two polls of wait_for_function, so "it was streaming" is read from the record, not by polling.
_RECORD_STATES = """() => {
  window.__states = [];
  if (!window.__observer) {
    window.__observer = new MutationObserver(records => records.forEach(r => window.__states.push(
      r.oldValue, document.body.dataset.state)));
    window.__observer.observe(document.body, {attributes: true, attributeFilter: ['data-state'],
                                              attributeOldValue: true});
  }
}"""


def _send(page, text: str):
    page.fill("#prompt", text)
    page.evaluate(_RECORD_STATES)
    page.click("#send")
    page.wait_for_function("window.__states.includes('streaming') && document.body.dataset.state !== 'streaming'",
                           timeout=60_000)


def _assistant_texts(page) -> list[str]:
    return page.eval_on_selector_all(".msg.assistant .text", "els => els.map(e => e.textContent)")


def test_a_conversation_with_system_prompt_and_regenerate(chromium, server, reference):
    page, errors = _open(chromium, server[0])
    assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == ["trained"]
    page.fill("#temperature", "0")
    page.fill("#max-tokens", str(MAX_TOKENS))
    page.click("#system-box summary")
    page.fill("#system", "You write Python.")
    _send(page, "a loop please")
    history = [{"role": "user", "content": "a loop please"}]
    first = reference.chat(history, system="You write Python.", max_tokens=MAX_TOKENS, temperature=0)
    assert _assistant_texts(page) == [first]
    _send(page, "and a class")
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": "and a class"}]
    second = reference.chat(history, system="You write Python.", max_tokens=MAX_TOKENS, temperature=0)
    assert _assistant_texts(page) == [first, second]
    page.click("#regenerate")
    page.wait_for_function("document.body.dataset.state === 'idle'", timeout=60_000)
    assert _assistant_texts(page) == [first, second]  # greedy: the same reply again, in place
    save_artifact(page, "chat-page.png")
    # kept in this browser: a reload shows the conversation in the list and reopens it
    page.reload()
    page.wait_for_function("document.body.dataset.state === 'idle'", timeout=30_000)
    assert page.eval_on_selector_all("#chats li span", "els => els.map(e => e.textContent)") == ["a loop please"]
    assert _assistant_texts(page) == [first, second]
    assert page.input_value("#system") == "You write Python."
    assert not errors


def test_stop_mid_stream_frees_the_slot(chromium, server, monkeypatch):
    engine = server[1].get("trained").engine
    decode = engine._decode

    def slow_decode():  # 30 ms a token, so that a click lands mid-reply
        time.sleep(0.03)
        decode()

    monkeypatch.setattr(engine, "_decode", slow_decode)
    page, errors = _open(chromium, server[0])
    page.click("#new-chat")
    page.fill("#temperature", "1")
    page.fill("#max-tokens", "200")
    page.fill("#prompt", "write a long function")
    page.click("#send")
    page.wait_for_function("(document.querySelector('.msg.assistant .text')?.textContent ?? '').length > 3",
                           timeout=30_000)
    page.click("#stop")
    page.wait_for_function("document.body.dataset.state === 'idle'", timeout=10_000)
    assert page.text_content(".msg.assistant .note") == "stopped"
    deadline = time.monotonic() + 10
    while engine._running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine._running
    assert not errors


def test_the_page_asks_for_the_api_key(chromium, model, studio_dist):
    from lmforge.serve.http import start_server
    from lmforge.serve.openai import ModelPool, create_app

    url, stop = start_server(create_app(ModelPool({"trained": model}), api_key="k3y"))
    try:
        page, _ = _open(chromium, url)
        assert page.evaluate("document.body.dataset.state") == "error"
        assert page.is_visible("#api-key")
        page.fill("#api-key", "k3y")
        page.dispatch_event("#api-key", "change")
        page.wait_for_function("document.body.dataset.state === 'idle'", timeout=10_000)
        assert page.eval_on_selector_all("#model option", "os => os.map(o => o.value)") == ["trained"]
    finally:
        stop()
