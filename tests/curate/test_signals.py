"""Per-record signals against closed forms and a plain-Python implementation of each documented definition."""

from __future__ import annotations

import random
import re
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from lmforge.curate import signals

STDLIB = Path(sysconfig.get_paths()["stdlib"])
WORD = re.compile(r"[0-9a-z_\u0080-\U0010ffff]+")


def oracle_repetition(text: str, n: int = 5) -> float:
    """Gopher / RedPajama-V2: characters of words covered by a word n-gram that occurs >= 2 times, over all
    word characters."""
    words = WORD.findall(text.lower())
    grams: dict[tuple, list[int]] = {}
    for i in range(len(words) - n + 1):
        grams.setdefault(tuple(words[i:i + n]), []).append(i)
    covered = set()
    for starts in grams.values():
        if len(starts) > 1:
            for s in starts:
                covered.update(range(s, s + n))
    total = sum(map(len, words))
    return sum(len(words[i]) for i in covered) / total if total else 0.0


def stdlib_texts(limit: int = 400) -> list[str]:
    out = []
    for path in sorted((STDLIB / "email").glob("*.py")) + sorted((STDLIB / "json").glob("*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        out += ["\n".join(lines[i:i + 25]) for i in range(0, len(lines), 25)]
    return out[:limit]


def test_lengths_are_characters_and_whitespace_words():
    texts = ["", "one", "two  words\n", "ünïcode 日本 ", "\t a\nb  c "] + stdlib_texts(50)
    chars, words = signals.lengths(texts)
    assert chars.dtype == np.int32 and words.dtype == np.int32
    assert chars.tolist() == [len(t) for t in texts]
    assert words.tolist() == [len(re.findall(r"\S+", t)) for t in texts]


def test_repetition_closed_forms():
    ten = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    other = "lambda mu nu xi omicron pi rho sigma tau upsilon"
    r = signals.repetition_ratio([
        ten,                       # nothing repeats
        ten + " " + ten,           # everything is inside a repeated 5-gram
        ten + " " + ten + " " + other,  # the first 20 words are, the last 10 are not
        "a b c d",                 # shorter than one 5-gram
        "",
        "x x x x x x",            # one 5-gram twice ("x x x x x" at 0 and 1): all six words
    ])
    ten_chars = len(ten.replace(" ", ""))
    expect = [0.0, 1.0, 2 * ten_chars / (2 * ten_chars + len(other.replace(" ", ""))), 0.0, 0.0, 1.0]
    np.testing.assert_allclose(r, expect, rtol=1e-6)
    assert r.dtype == np.float32


def test_repetition_matches_the_reference_definition_on_real_text():
    rng = random.Random(0)
    texts = stdlib_texts(300)
    # plant repetition: some texts get one of their own lines repeated a few times
    for i in rng.sample(range(len(texts)), 60):
        lines = texts[i].splitlines()
        texts[i] = "\n".join(lines + [rng.choice(lines)] * rng.randint(1, 4))
    texts += ["Ünïcode wörds répétés, wörds répétés, wörds répétés encore une fois ici"]
    got = signals.repetition_ratio(texts, batch=64)
    expect = np.array([oracle_repetition(t) for t in texts])
    np.testing.assert_allclose(got, expect, atol=1e-6)
    assert 0.05 < (expect > 0.2).mean() < 0.9  # the planted repetition shows up, not everything is repetitive


def chat(reply: str, *, turns: int = 1, last: str | None = None) -> dict:
    messages = []
    for _ in range(turns):
        messages += [{"role": "user", "content": "How do I parse a JSON string in Python?"},
                     {"role": "assistant", "content": reply}]
    if last is not None:
        messages[-1] = {"role": "assistant", "content": last}
    return {"id": "c", "text": None, "messages": messages}


LONG = "Use json.loads on the string to get a Python object back."


@pytest.mark.parametrize("record, expect", [
    (chat("Yes."), True),
    (chat("Use json.loads."), True),
    (chat("four words right here"), True),    # 4 < 5
    (chat("five words are right here"), False),
    (chat(LONG), False),
    (chat(LONG, turns=3, last="ok"), True),  # any reply
    (chat("ok", turns=3, last=LONG), True),
    ({"messages": [{"role": "user", "content": "hi"}]}, False),  # no reply to judge
    ({"text": "### Instruction:\nParse JSON.\n\n### Response:\njson.loads"}, True),
    ({"text": f"### Instruction:\nParse JSON.\n\n### Response:\n{LONG}"}, False),
    ({"text": "User: how do I parse JSON?\nAssistant: json.loads"}, True),
    ({"text": "Question: what parses JSON?\nAnswer: json.loads does."}, True),
    ({"text": "<|user|>parse json<|assistant|>" + LONG}, False),
    ({"text": "[INST] parse json [/INST] loads"}, True),
    ({"text": "def f(x):\n    return x  # a: b"}, False),  # code: no layout, never flagged
    ({"text": "Answer: 42"}, False),  # a response marker with no prompt before it
])
def test_short_answers(record, expect):
    assert signals.short_answers([record]).tolist() == [expect]


def test_short_answers_last_only_and_threshold():
    recs = [chat(LONG, turns=2, last="ok"), chat("ok", turns=2, last=LONG)]
    assert signals.short_answers(recs, last_only=True).tolist() == [True, False]
    assert signals.short_answers([chat("one two three")], min_words=3).tolist() == [False]
    assert signals.short_answers([chat("one two three")], min_words=4).tolist() == [True]
