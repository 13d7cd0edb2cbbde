"""c-TF-IDF labels against planted truth (clusters whose texts carry distinctive words) and against an
independent pure-Python implementation of BERTopic's formula (regex tokens, Counter, math.log)."""

from __future__ import annotations

import keyword
import math
import re
from collections import Counter

import numpy as np
import pytest
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from lmforge.curate.label import label_clusters, stop_words

# what label.py says it drops, from the lists themselves: English stop words, Python keywords, self/cls
ORACLE_STOP = frozenset(ENGLISH_STOP_WORDS) | {k.lower() for k in keyword.kwlist} | {"self", "cls"}
TERM = re.compile(r"\b[^\W\d]\w+\b")  # the documented term: an identifier of two or more characters

FILLER = ("the data value item list text function object result name file line number string type "
          "default error first last call test").split()
PLANTED = {0: ["parser", "tokenizer", "grammar"], 1: ["parser", "lexer", "token_stream"],
           2: ["socket", "packet", "handshake"], 3: ["socket", "datagram", "multicast"]}


def planted_corpus(per: int = 40, seed: int = 0):
    """Fine clusters 0..3 (coarse = fine // 2), each text: filler words plus its cluster's words."""
    rng = np.random.default_rng(seed)
    texts, fine = [], []
    for i in range(4 * per):
        c = int(rng.integers(0, 4))
        words = list(rng.choice(FILLER, 25)) + list(rng.choice(PLANTED[c], 6))
        rng.shuffle(words)
        texts.append(" ".join(words) + " self return def")  # noise that must never be a keyword
    # (the identifier token_stream must come out whole)
        fine.append(c)
    fine = np.array(fine)
    h = np.stack([fine // 2 + 7, fine + 20, fine + 300], axis=1)  # sparse, non-dense ids on purpose
    xy = rng.normal(size=(len(fine), 2)).astype(np.float32)
    return texts, h, xy


def test_planted_words_are_the_top_keywords():
    texts, h, xy = planted_corpus()
    topics = label_clusters(texts, h, xy, top_k=5, chunk=33)
    by = {(t["level"], t["cluster"]): t for t in topics}
    assert len(topics) == 2 + 4 + 4
    for c, words in PLANTED.items():
        for lvl, cid in ((1, c + 20), (2, c + 300)):
            assert set(by[lvl, cid]["keywords"][:3]) == set(words), by[lvl, cid]
    # coarse: the word both children share ranks first
    assert by[0, 7]["keywords"][0] == "parser" and by[0, 8]["keywords"][0] == "socket"


def test_structure_of_topics():
    texts, h, xy = planted_corpus(per=15, seed=1)
    topics = label_clusters(texts, h, xy)
    for t in topics:
        lvl, c = t["level"], t["cluster"]
        members = h[:, lvl] == c
        assert t["size"] == members.sum()
        assert t["x"] == pytest.approx(float(xy[members, 0].mean()), abs=1e-5)
        assert t["y"] == pytest.approx(float(xy[members, 1].mean()), abs=1e-5)
        assert t["parent"] == (None if lvl == 0 else int(h[members, lvl - 1][0]))
        assert t["label"] == ", ".join(t["keywords"][:3])
        assert not set(t["keywords"]) & {"self", "return", "def", "the"}
    assert [(t["level"], t["cluster"]) for t in topics] == sorted((t["level"], t["cluster"]) for t in topics)


def test_chunking_does_not_change_labels():
    texts, h, xy = planted_corpus(per=20, seed=2)
    assert label_clusters(iter(texts), h, xy, chunk=7) == label_clusters(texts, h, xy, chunk=10_000)


def test_stop_words_are_exactly_the_documented_lists():
    """Every English stop word, Python keyword, `self` and `cls` is dropped even where it is a cluster's most
    distinctive term, and nothing else is: with room for every term, a cluster's keywords are exactly its
    other terms (checked as sets, so the ranking is free to change)."""
    stop = sorted(w for w in ORACLE_STOP if TERM.fullmatch(w))
    kept = {0: ["parser", "grammar", "print", "exec", "match"], 1: ["socket", "packet", "case", "python", "selfish"]}
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for c in (0, 1):
        own_stop = stop[c::2]  # each cluster its own half of the stop words: distinctive if they were counted
        for _ in range(12):
            words = list(rng.choice(own_stop, 40)) + list(rng.choice(kept[c], 8))
            words[0] = words[0].upper() if c else words[0].title()  # case must not rescue a stop word
            texts.append(" ".join(words))
            labels.append(c)
    assert stop_words() == ORACLE_STOP
    topics = label_clusters(texts, np.array(labels)[:, None], np.zeros((len(texts), 2)), top_k=1000)
    for t in topics:
        assert set(t["keywords"]) == set(kept[t["cluster"]]), t


def oracle_keywords(texts, labels, top_k):
    """BERTopic's c-TF-IDF written out: tf = count / terms of the class, idf = log(1 + mean terms per class /
    count of the term in all classes); terms in >= 2 records of the class first; ties alphabetical."""
    counts, docs = {}, {}
    for text, c in zip(texts, labels):
        terms = [t for t in TERM.findall(text.lower()) if t not in ORACLE_STOP]
        counts.setdefault(c, Counter()).update(terms)
        docs.setdefault(c, Counter()).update(set(terms))
    total = Counter()
    for cnt in counts.values():
        total.update(cnt)
    avg = sum(sum(c.values()) for c in counts.values()) / len(counts)
    size = Counter(labels)
    out = {}
    for c, cnt in counts.items():
        n = sum(cnt.values())
        score = {t: v / n * math.log(1 + avg / total[t]) for t, v in cnt.items()}
        ranked = sorted(score, key=lambda t: (docs[c][t] < min(2, size[c]), -score[t], t))
        out[c] = ranked[:top_k]
    return out


def test_matches_independent_ctfidf_on_real_text():
    import sysconfig
    from pathlib import Path

    std = Path(sysconfig.get_paths()["stdlib"])
    texts, labels = [], []
    for c, mod in enumerate(["json/decoder.py", "json/encoder.py", "csv.py", "shlex.py", "textwrap.py"]):
        words = (std / mod).read_text(encoding="utf-8").split()
        for i in range(0, min(len(words), 2400), 120):
            texts.append(" ".join(words[i:i + 120]))
            labels.append(c)
    labels = np.array(labels)
    h = np.stack([labels // 3, labels], axis=1)
    topics = label_clusters(texts, h, np.zeros((len(texts), 2)), top_k=6)
    for lvl in range(2):
        want = oracle_keywords(texts, h[:, lvl].tolist(), 6)
        got = {t["cluster"]: t["keywords"] for t in topics if t["level"] == lvl}
        assert got == want


def test_cluster_without_words():
    texts = ["parser grammar parser", "grammar parser tokens", "", "   ", "!!! 123 ..."]
    h = np.array([[0, 0], [0, 0], [1, 5], [1, 5], [1, 6]])
    topics = {(t["level"], t["cluster"]): t for t in label_clusters(texts, h, np.zeros((5, 2)))}
    assert topics[0, 1]["keywords"] == [] and topics[0, 1]["label"] == "(no words)"
    assert topics[1, 6]["label"] == "(no words)" and topics[1, 6]["size"] == 1
    assert topics[0, 0]["keywords"][:2] == ["parser", "grammar"]
