"""`lmforge chat` driven in a real pseudo-terminal (pexpect), its replies checked against the Python API."""

import json
import sys

import pytest
from conftest import require, run_cli

from lmforge.infer.local import load

GREEDY = ["--temperature", "0", "--repetition-penalty", "1.0", "--max-tokens", "12"]


@pytest.fixture
def repl(trained_model):
    pexpect = require("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "lmforge.cli.main", "chat", str(trained_model), *GREEDY],
                          encoding="utf-8", timeout=60, dimensions=(40, 200))
    child.expect(">>> ")
    yield child
    child.close(force=True)


def _say(child, line: str) -> str:
    """Send a line; return what the program printed before its next prompt (the echo of the line removed)."""
    child.sendline(line)
    child.expect(">>> ")
    out = child.before.replace("\r\n", "\n")
    assert out.startswith(line + "\n")
    return out[len(line) + 1:].removesuffix("\n")


def test_conversation_history_system_prompt_and_commands(repl, trained_model, tmp_path):
    m = load(trained_model)

    def reply(messages, system=None):
        return m.chat(messages, system=system, max_tokens=12, temperature=0)

    first = _say(repl, "hello there")
    assert first == reply("hello there")
    second = _say(repl, "and again")  # the second turn is answered with the first in its prompt
    assert second == reply([{"role": "user", "content": "hello there"}, {"role": "assistant", "content": first},
                            {"role": "user", "content": "and again"}])
    assert _say(repl, "/save " + str(tmp_path / "chat.json")).startswith("(saved to")
    saved = json.loads((tmp_path / "chat.json").read_text())
    assert [x["content"] for x in saved["messages"]] == ["hello there", first, "and again", second]

    assert _say(repl, "/reset") == "(conversation cleared)"
    assert _say(repl, "hello there") == first  # nothing remembered
    assert _say(repl, "/system You answer in French.") == "(system prompt set)"
    _say(repl, "/reset")
    assert _say(repl, "bonjour") == reply("bonjour", system="You answer in French.")
    assert "unknown command" in _say(repl, "/frobnicate")
    assert "/save FILE" in _say(repl, "/help")
    repl.sendline("/exit")
    repl.expect(require("pexpect").EOF)
    repl.close()
    assert repl.exitstatus == 0


def test_ctrl_d_leaves(repl):
    repl.sendeof()
    repl.expect(require("pexpect").EOF)
    repl.close()
    assert repl.exitstatus == 0


def test_long_history_is_trimmed_to_the_context(trained_model):
    """Turns that would overflow the context drop the oldest exchanges; the system prompt stays."""
    from lmforge.infer.chat import ChatSession

    m = load(trained_model)
    session = ChatSession(m, system="sys", max_tokens=8, temperature=0)
    for i in range(40):  # the engine refuses a prompt + budget beyond the context: every turn here was accepted
        "".join(session.send(f"message number {i} " * 3))
        assert len(m.chat_prompt(session.conversation()[:-1])) < m.context_length
    assert session.conversation()[0] == {"role": "system", "content": "sys"}
    assert session.messages[-2]["content"].startswith("message number 39")
    assert len(session.messages) < 80


def test_a_message_longer_than_the_context_is_refused_and_the_chat_goes_on(trained_model):
    from lmforge.errors import RequestError
    from lmforge.infer.chat import ChatSession

    session = ChatSession(load(trained_model), max_tokens=8, temperature=0)
    with pytest.raises(RequestError, match="context"):
        "".join(session.send("word " * 2000))
    assert session.messages == []
    assert isinstance("".join(session.send("hi")), str)


def test_chat_with_a_missing_model_says_so():
    proc = run_cli("chat", "/no/such/model")
    assert proc.returncode == 2 and "error" in proc.stderr and proc.stderr.count("\n") == 1
