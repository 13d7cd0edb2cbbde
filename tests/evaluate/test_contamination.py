"""Contamination from lineage: planted items that each method must (and must not) flag, each at its definition's
boundary; the streaming matchers against plain-Python oracles on real text; and the lineage walk (init_from,
mixtures, missing and stale datasets, curation parents, no lineage at all)."""

from __future__ import annotations

import json
import random
import re
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from lmforge.data.dataset import Dataset, DatasetWriter
from lmforge.evaluate import contamination as c

STDLIB = Path(sysconfig.get_paths()["stdlib"])
WORD = re.compile(r"[0-9a-z_\u0080-\U0010ffff]+")  # dedup.words, as a regex (the decontaminate tests' oracle)


def make_dataset(path: Path, train=(), validation=(), chat=(), parents=None) -> Path:
    path.mkdir(parents=True)
    w = DatasetWriter(path)
    for i, t in enumerate(train):
        w.add({"id": f"t{i}", "text": t, "messages": None, "source": "x", "split": "train"})
    for i, t in enumerate(validation):
        w.add({"id": f"v{i}", "text": t, "messages": None, "source": "x", "split": "validation"})
    for i, (q, a) in enumerate(chat):
        w.add({"id": f"c{i}", "text": None, "messages": [{"role": "user", "content": q},
                                                         {"role": "assistant", "content": a}],
               "source": "x", "split": "train"})
    w.close(**({"parents": parents} if parents is not None else {}))
    return path


def make_model(path: Path, datasets=(), init_from=None, hashes=None) -> Path:
    path.mkdir(parents=True)
    entries = [{"name": Path(d).name, "path": str(d),
                "content_hash": (hashes or {}).get(str(d), Dataset(d).content_hash if (Path(d) / "dataset.json")
                                                   .is_file() else "0" * 64)} for d in datasets]
    lineage = {"dataset": {k: entries[0][k] for k in ("path", "content_hash")} if entries else None,
               "sources": entries, "init_from": str(init_from) if init_from else None}
    (path / "lmforge.json").write_text(json.dumps(lineage))
    return path


# ---- planted truths ---------------------------------------------------------------------------------------

# Item words come from letters a-m and filler words from n-z, so no filler can complete an item's n-gram or its
# 50-character substring; every item has its own words, so items never match each other.
_rng = random.Random(11)
_ITEM_WORDS = ["".join(t) for t in __import__("itertools").product("abcdefghijklm", repeat=3)]
_rng.shuffle(_ITEM_WORDS)
_FILLER = ["".join(_rng.choice("nopqrstuvwxyz") for _ in range(3)) for _ in range(400)]
_next = 0


def fresh(n: int) -> list[str]:
    global _next
    _next += n
    return _ITEM_WORDS[_next - n:_next]


def filler(n: int = 30) -> str:
    return " ".join(_rng.choice(_FILLER) for _ in range(n))


def pieces(words: list[str], spans) -> str:
    """Each span [s, e) of the item's words as its own run, with filler between: no run longer than a span."""
    return " ".join(" ".join(words[s:e]) + " " + filler(1) for s, e in spans)


ORDER = ("ngram13", "palm8", "gpt4_substr", "llama2_tokens")


def planted():
    """(name, item text, training text or None, validation text or None, {method: dirty}, {method: score})."""
    out = []

    def plant(name, words, train=None, val=None, flags="FFFF", scores=None):
        out.append((name, " ".join(words), train, val, dict(zip(ORDER, (f == "T" for f in flags))), scores or {}))

    w = fresh(60)
    plant("verbatim", w, filler() + " " + " ".join(w) + " " + filler(), flags="TTTT",
          scores={"palm8": 1.0, "gpt4_substr": 1.0, "llama2_tokens": 1.0})
    w = fresh(100)
    plant("run13", w, pieces(w, [(40, 53)]), flags="TFFF", scores={"palm8": 6 / 93, "llama2_tokens": 0.13})
    w = fresh(100)
    plant("run12", w, pieces(w, [(40, 52)]), flags="FFFF", scores={"llama2_tokens": 0.12})
    w = fresh(40)  # glued in pairs, punctuated: other words, the same letters
    plant("reformatted", w, ", ".join(w[i] + w[i + 1] for i in range(0, 40, 2)) + "!", flags="FFTF",
          scores={"palm8": 0.0, "llama2_tokens": 0.0, "gpt4_substr": 1.0})
    w = fresh(60)  # words are lowercased; the GPT-4 processing keeps case
    plant("uppercased", w, " ".join(w).upper(), flags="TTFT", scores={"gpt4_substr": 0.0})
    for name, k in (("palm70", 70), ("palm69", 69)):  # 107 words: 100 8-grams, k of them in the training data
        w = fresh(107)
        starts = sorted(random.Random(k).sample(range(100), k))
        plant(name, w, pieces(w, [(s, s + 8) for s in starts]), flags="FTFF" if k == 70 else "FFFF",
              scores={"palm8": k / 100, "llama2_tokens": 0.0})
    w = fresh(50)  # 11-token runs cover every token; no 13-word run, 20 of 43 8-grams
    plant("tokens11", w, pieces(w, [(0, 11), (11, 22), (22, 33), (33, 44), (39, 50)]), flags="FFFT",
          scores={"llama2_tokens": 1.0, "palm8": 20 / 43})
    w = fresh(50)  # 10-token runs are "not longer than 10": nothing counts
    plant("tokens10", w, pieces(w, [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50)]), flags="FFFF",
          scores={"llama2_tokens": 0.0, "palm8": 15 / 43})
    w = fresh(100)  # 4 x 11 + 3 x 12 = 80 tokens covered: dirty at 80%
    plant("llama80", w, pieces(w, [(0, 11), (11, 22), (22, 33), (33, 44), (44, 56), (56, 68), (68, 80)]),
          flags="FFFT", scores={"llama2_tokens": 0.80})
    w = fresh(100)  # 5 x 11 + 2 x 12 = 79
    plant("llama79", w, pieces(w, [(0, 11), (11, 22), (22, 33), (33, 44), (44, 55), (55, 67), (67, 79)]),
          flags="FFFF", scores={"llama2_tokens": 0.79})
    w = fresh(100)  # two overlapping 11-runs: tokens 0-19 = 20%, "not clean"; 0-18 = 19%, clean
    plant("llama20", w, pieces(w, [(0, 11), (9, 20)]), scores={"llama2_tokens": 0.20})
    w = fresh(100)
    plant("llama19", w, pieces(w, [(0, 11), (8, 19)]), scores={"llama2_tokens": 0.19})
    w = fresh(10)  # short: 13-gram method matches 8-12 words whole; 30 characters, matched whole by GPT-4's
    plant("short10", w, filler() + " " + " ".join(w) + " " + filler(), flags="TTTF",
          scores={"palm8": 1.0, "gpt4_substr": 1.0, "llama2_tokens": 0.0})
    plant("unseen", fresh(80), flags="FFFF", scores={"palm8": 0.0, "gpt4_substr": 0.0, "llama2_tokens": 0.0})
    w = fresh(60)
    plant("held_out", w, val=" ".join(w), flags="FFFF")  # in the validation split: not training data
    return out


@pytest.fixture(scope="module")
def planted_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    plants = planted()
    train = [filler(200) for _ in range(5)] + [t for _, _, t, _, _, _ in plants if t]
    val = [v for _, _, _, v, _, _ in plants if v]
    ds = make_dataset(root / "data", train, val)
    return plants, make_model(root / "model", [ds])


def test_each_method_flags_exactly_its_planted_items(planted_model):
    plants, model = planted_model
    items = [text for _, text, *_ in plants]
    r = c.check(items, model)
    assert r["lineage"] == "complete" and r["unchecked"] == [] and len(r["sources"]) == 1
    for k, (name, _, _, _, flags, scores) in enumerate(plants):
        got = {m: r["methods"][m]["dirty"][k] for m in ORDER}
        assert got == flags, name
        for m, want in scores.items():
            assert r["methods"][m]["score"][k] == pytest.approx(want, abs=1e-9), (name, m)
        assert r["dirty"][k] == any(flags.values()), name
        assert r["status"][k] == ("dirty" if any(flags.values()) else "clean"), name
    clean = {name: r["methods"]["llama2_tokens"]["clean"][k] for k, (name, *_) in enumerate(plants)}
    assert clean["llama20"] is False and clean["llama19"] is True and clean["run13"] is True
    assert clean["verbatim"] is False and clean["unseen"] is True
    # every method on its own gives the same verdicts as in check's single pass
    training = list(c.training_texts(c.training_sources(model)))
    for m, fn in (("ngram13", c.ngram13), ("palm8", c.palm8), ("gpt4_substr", c.gpt4_substr),
                  ("llama2_tokens", c.llama2_tokens)):
        assert fn(items, iter(training))["dirty"].tolist() == r["methods"][m]["dirty"], m
    # the report: agreement, splits
    a = r["agreement"]
    n = len(plants)
    assert a["items"] == n
    assert a["dirty_counts"] == {m: sum(p[4][m] for p in plants) for m in ORDER}
    unanimous = sum(len(set(p[4].values())) == 1 for p in plants)
    assert a["all_agree"] == pytest.approx(unanimous / n)
    x = np.array([p[4]["ngram13"] for p in plants])
    y = np.array([p[4]["palm8"] for p in plants])
    po, pe = np.mean(x == y), x.mean() * y.mean() + (1 - x.mean()) * (1 - y.mean())
    pair = a["pairs"]["ngram13|palm8"]
    assert pair["agreement"] == pytest.approx(po) and pair["kappa"] == pytest.approx((po - pe) / (1 - pe))
    assert pair["both"] + pair["only_ngram13"] + pair["only_palm8"] + pair["neither"] == n
    s = r["splits"]
    assert s["all"] == list(range(n)) and s["unknown"] == []
    assert [plants[i][0] for i in s["dirty"]] == [p[0] for p in plants if any(p[4].values())]
    assert sorted(s["clean"] + s["dirty"]) == s["all"]
    json.dumps(r)  # the report is JSON as it stands


def test_methods_subset_and_bad_method(planted_model):
    plants, model = planted_model
    r = c.check([plants[0][1], plants[-2][1]], model, methods=("palm8",))
    assert list(r["methods"]) == ["palm8"] and r["dirty"] == [True, False]
    assert r["agreement"]["pairs"] == {} and r["agreement"]["all_agree"] == 1.0
    from lmforge.errors import DataError

    with pytest.raises(DataError, match="unknown contamination method 'rouge'"):
        c.check(["x"], model, methods=("rouge",))


# ---- the matchers against plain-Python oracles on real text ------------------------------------------------


def _chunks(folder: str, limit: int, words: int = 120) -> list[str]:
    out = []
    for path in sorted((STDLIB / folder).glob("*.py")):
        toks = path.read_text(encoding="utf-8").split(" ")
        out += [" ".join(toks[i:i + words]) for i in range(0, len(toks) - words + 1, words)]
    return out[:limit]


@pytest.fixture(scope="module")
def real_text():
    """Training: chunks of the json and email packages. Items: chunks of logging, some with a span of training
    text spliced in (random length, so every coverage level occurs), a few short ones, one without a word."""
    rng = random.Random(5)
    training = _chunks("json", 400) + _chunks("email", 400)
    items = _chunks("logging", 60)
    for i in range(0, len(items), 2):
        src = rng.choice(training).split(" ")
        span = rng.randint(5, 60)
        s = rng.randrange(max(len(src) - span, 1))
        host = items[i].split(" ")
        cut = rng.randrange(len(host))
        items[i] = " ".join(host[:cut] + src[s:s + span] + host[cut + rng.randint(0, 40):])
    for i in range(1, len(items), 4):  # a whole training chunk with a few words changed: high coverage
        src = rng.choice(training).split(" ")
        for _ in range(rng.randint(0, 4)):
            src[rng.randrange(len(src))] = "zzz"
        items[i] = " ".join(src)
    items += [" ".join(rng.choice(training).split(" ")[:k]) for k in (3, 7, 9)] + ["+-*/ ...", ""]
    return items, training


def _ngrams(words, n):
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def test_palm8_and_llama2_match_an_oracle(real_text):
    items, training = real_text
    tw = [WORD.findall(t.lower()) for t in training]
    grams = {m: {g for w in tw for g in _ngrams(w, m)} for m in range(1, 12)}
    palm, llama = c.palm8(items, training), c.llama2_tokens(items, training)
    seen_levels = set()
    for k, text in enumerate(items):
        w = WORD.findall(text.lower())
        mine = _ngrams(w, 8) if len(w) >= 8 else ([tuple(w)] if w else [])
        want = np.mean([g in grams[len(g)] for g in mine]) if mine else np.nan
        assert palm["score"][k] == pytest.approx(want, nan_ok=True), k
        assert palm["dirty"][k] == (bool(mine) and want >= 0.7), k
        covered = np.zeros(len(w), dtype=bool)
        for i, g in enumerate(_ngrams(w, 11)):
            if g in grams[11]:
                covered[i:i + 11] = True
        want = covered.mean() if w else np.nan
        assert llama["score"][k] == pytest.approx(want, nan_ok=True), k
        assert llama["dirty"][k] == (bool(w) and want >= 0.8) and llama["clean"][k] == (bool(w) and want < 0.2)
        seen_levels.add(round(float(np.nan_to_num(want)), 1))
    assert len(seen_levels) >= 5 and palm["dirty"].sum() >= 3 and llama["dirty"].sum() >= 3  # a real spread


def test_gpt4_substrings_match_an_oracle_and_follow_the_seed(real_text):
    items, training = real_text
    processed = [re.sub(r"[\W_]+", "", t) for t in training]
    for seed in (0, 1, 2):
        r = c.gpt4_substr(items, training, seed=seed)
        for k, text in enumerate(items):
            subs = c.sample_substrings(text, k, seed=seed)
            q = re.sub(r"[\W_]+", "", text)
            assert subs == ([q] if 0 < len(q) <= 50 else [] if not q else subs)
            assert len(subs) == (0 if not q else 1 if len(q) <= 50 else 3)
            assert all(len(s) == min(50, len(q)) and s in q for s in subs)
            found = [any(s in p for p in processed) for s in subs]
            assert r["dirty"][k] == any(found), (seed, k)
            assert r["score"][k] == pytest.approx(np.mean(found) if subs else np.nan, nan_ok=True)
    assert c.sample_substrings(items[0], 0, seed=0) == c.sample_substrings(items[0], 0, seed=0)
    assert c.sample_substrings(items[0], 0, seed=0) != c.sample_substrings(items[0], 0, seed=1)
    # a match never spans two training records: half an item at the end of one, half at the start of the next
    item = "".join(random.Random(1).choice("ABCDEFGH") for _ in range(50))
    assert not c.gpt4_substr([item], ["x " + item[:25], item[25:] + " y"])["dirty"][0]
    assert c.gpt4_substr([item], ["x " + item[:25] + "... " + item[25:]])["dirty"][0]


def test_a_tokenizer_replaces_words_for_llama2():
    # characters as tokens: an 11-character run counts, a 10-character one does not
    def tok(text):
        return [ord(ch) for ch in text]

    item = "abcdefghijklmnopqrstuvwxyz"
    r = c.llama2_tokens([item], ["--abcdefghijk--", "--qrstuvwxy--"], tokenizer=tok)
    assert r["score"][0] == pytest.approx(11 / 26)
    assert c.llama2_tokens([item], [item], tokenizer=tok)["dirty"][0]


# ---- lineage -------------------------------------------------------------------------------------------------

SECRET = ("the wandering heron counts seven silver lanterns before the midnight ferry leaves the northern harbour "
          "with its cargo of apples")


def test_init_from_recursion_mixtures_and_chat(tmp_path):
    base_ds = make_dataset(tmp_path / "base_ds", [filler(), "notes: " + SECRET])
    mix_a = make_dataset(tmp_path / "mix_a", [filler()])
    mix_b = make_dataset(tmp_path / "mix_b", [filler()], chat=[("question", "answer: " + SECRET.upper())])
    base = make_model(tmp_path / "base", [base_ds])
    ft = make_model(tmp_path / "ft", [mix_a], init_from=base)
    r = c.check([SECRET, "something else entirely that nobody wrote down anywhere before"], ft)
    assert r["dirty"] == [True, False] and r["status"] == ["dirty", "clean"]
    assert [(Path(s["path"]).name, s["via"]) for s in r["sources"]] == [("mix_a", "dataset"), ("base_ds", "init_from")]
    # a mixture's second source, a chat record
    mixed = make_model(tmp_path / "mixed", [mix_a, mix_b])
    assert [s["via"] for s in c.training_sources(mixed)] == ["dataset", "source"]
    assert c.check([SECRET], mixed)["dirty"] == [True]
    # a cycle in init_from ends; the same dataset reached twice is read once
    loop_a = tmp_path / "loop_a"
    loop_b = make_model(tmp_path / "loop_b", [base_ds], init_from=loop_a)
    make_model(loop_a, [base_ds, mix_a], init_from=loop_b)
    assert sorted(Path(s["path"]).name for s in c.training_sources(loop_a)) == ["base_ds", "mix_a"]


def test_missing_stale_and_unknown_are_never_clean(tmp_path):
    ds = make_dataset(tmp_path / "ds", ["intro " + SECRET])
    other = make_dataset(tmp_path / "other", [filler()])
    model = make_model(tmp_path / "m", [ds, tmp_path / "gone"])
    r = c.check([SECRET, "an unrelated sentence of words"], model)
    assert r["unchecked"] == [str(tmp_path / "gone")] and r["lineage"] == "partial"
    assert [s["exists"] for s in r["sources"]] == [True, False]
    assert list(c.training_texts(r["sources"])) == ["intro " + SECRET]  # the missing one is skipped, not an error
    assert r["status"] == ["dirty", "unknown"] and r["splits"]["unknown"] == [1] and r["splits"]["clean"] == []
    # a dataset whose content changed since training: read, but stale
    stale = make_model(tmp_path / "stale", [other], hashes={str(other): "f" * 64})
    r = c.check(["an unrelated sentence of words"], stale)
    assert r["stale"] == [str(other)] and r["status"] == ["unknown"]
    # a base model transformers wrote (no lmforge.json): its pretraining data is unknown
    hf_base = tmp_path / "hf_base"
    hf_base.mkdir()
    (hf_base / "config.json").write_text("{}")
    ft = make_model(tmp_path / "ft", [other], init_from=hf_base)
    r = c.check(["an unrelated sentence of words"], ft)
    assert r["unknown_models"][0]["model"] == str(hf_base) and r["status"] == ["unknown"]
    # no lineage at all: every item unknown, none clean, no method run
    r = c.check(["a", "b"], hf_base)
    assert r["lineage"] == "unknown" and r["status"] == ["unknown", "unknown"] and r["dirty"] == [None, None]
    assert r["methods"] == {} and r["splits"] == {"all": [0, 1], "clean": [], "dirty": [], "unknown": [0, 1]}
    from lmforge.errors import DataError

    with pytest.raises(DataError, match="no such model directory"):
        c.check(["a"], tmp_path / "nope")


def test_curation_parents_are_read_only_when_asked_and_only_their_train_split(tmp_path):
    removed = "a record the curation removed: " + SECRET
    held = "the held out record that stays in validation " + " ".join(fresh(20))
    parent = make_dataset(tmp_path / "parent", [filler(), removed], validation=[held])
    child = make_dataset(tmp_path / "child", [filler()], validation=[held],
                         parents=[{"path": str(parent), "content_hash": Dataset(parent).content_hash}])
    model = make_model(tmp_path / "m", [child])
    assert [s["via"] for s in c.training_sources(model)] == ["dataset"]
    assert c.check([SECRET, held], model)["status"] == ["clean", "clean"]
    r = c.check([SECRET, held], model, parents=True)
    assert [(s["via"], s["split"]) for s in r["sources"]] == [("dataset", "train"), ("parent", "train")]
    assert r["status"] == ["dirty", "clean"]


def test_splits_and_agreement_edges():
    assert c.splits([True, False, None]) == {"all": [0, 1, 2], "clean": [1], "dirty": [0], "unknown": [2]}
    assert c.splits(["clean", "dirty"]) == {"all": [0, 1], "clean": [0], "dirty": [1], "unknown": []}
    with pytest.raises(ValueError):
        c.splits(["maybe"])
    a = c.agreement({"x": [False, False], "y": [False, False]})
    assert a["all_agree"] == 1.0 and a["pairs"]["x|y"]["kappa"] is None  # no variation: kappa undefined
    a = c.agreement({"x": [True, False, True, False], "y": [False, True, False, True]})
    assert a["all_agree"] == 0.0 and a["pairs"]["x|y"]["kappa"] == pytest.approx(-1.0)
    assert c.agreement({"x": [], "y": []})["all_agree"] is None
