"""Labels that tell topics apart, against a planted truth: siblings (clusters under one parent) whose texts
share a dominant word must not all lead with it, and a word planted in every cluster must not be a label
word. The truth is the planting itself: each fine cluster has its own words, its parent's shared word is
planted more often than any of them, and one ubiquitous word is planted most often of all, everywhere."""

from __future__ import annotations

import numpy as np

from lmforge.curate.label import NO_WORDS, distinct_labels, label_clusters

UBIQUITOUS = "overview"
# coarse topic -> (the word its children share, each child's own words)
PLANTED = {
    0: ("assertequal", [["socket", "packet"], ["loop", "asyncio"], ["decimal", "rounding"]]),
    1: ("widget", [["canvas", "turtle"], ["menu", "button"]]),
    2: ("codec", [["latin", "letter"], ["encode", "charmap"]]),
}
FILLER = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda sigma tau omega".split()


def planted_corpus(per: int = 30, seed: int = 0):
    """Texts and an [n, 2] hierarchy (coarse id, fine id); fine ids are sparse on purpose."""
    rng = np.random.default_rng(seed)
    texts, rows = [], []
    fine_id = 100
    for coarse, (shared, children) in PLANTED.items():
        for own in children:
            for _ in range(per):
                words = (list(rng.choice(FILLER, 20)) + [UBIQUITOUS] * 8 + [shared] * 12
                         + list(rng.choice(own, 4)))
                rng.shuffle(words)
                texts.append(" ".join(words))
                rows.append((coarse + 7, fine_id))
            fine_id += 3
    return texts, np.array(rows)


def by_key(topics):
    return {(t["level"], t["cluster"]): t for t in topics}


def test_planted_shared_word_leads_no_more_than_one_sibling():
    texts, h = planted_corpus()
    topics = label_clusters(texts, h, np.zeros((len(texts), 2)), top_k=5)
    fine = [t for t in topics if t["level"] == 1]
    for parent in {t["parent"] for t in fine}:
        group = [t for t in fine if t["parent"] == parent]
        leads = [t["keywords"][0] for t in group]
        assert len(set(leads)) == len(leads), leads  # siblings lead with different words
    # every fine topic's label names its own planted words; the shared word leads at most one sibling
    for coarse, (shared, children) in PLANTED.items():
        ids = sorted(set(h[h[:, 0] == coarse + 7, 1]))
        assert len(ids) == len(children)
        for cid, own in zip(ids, children):
            t = by_key(topics)[1, cid]
            assert set(own) <= set(t["label"].split(", ")), t
            assert t["label"] == ", ".join(t["keywords"][:3])
        assert sum(by_key(topics)[1, cid]["keywords"][0] == shared for cid in ids) <= 1


def test_a_word_in_every_cluster_is_no_label_word():
    texts, h = planted_corpus()
    # without the rule the ubiquitous word would lead: it is the most frequent word of every cluster
    assert all(t.split().count(UBIQUITOUS) == 8 for t in texts)
    topics = label_clusters(texts, h, np.zeros((len(texts), 2)), top_k=5)
    for t in topics:
        assert UBIQUITOUS not in t["label"].split(", "), t
        # nor any keyword: the filler words are in every cluster too (if never in a label)
        assert not set(t["keywords"]) & ({UBIQUITOUS} | set(FILLER)), t
    # the coarse topics are named by their children's shared word
    coarse = {t["cluster"]: t for t in topics if t["level"] == 0}
    for c, (shared, _) in PLANTED.items():
        assert coarse[c + 7]["keywords"][0] == shared


def test_two_clusters_keep_their_common_words():
    """With fewer than three clusters no word is generic: what two clusters share can still name them."""
    texts = ["parser grammar parser"] * 3 + ["parser lexer parser"] * 3
    h = np.array([[0], [0], [0], [1], [1], [1]])
    topics = by_key(label_clusters(texts, h, np.zeros((6, 2))))
    assert "parser" in topics[0, 0]["keywords"] + topics[0, 1]["keywords"]
    leads = {topics[0, 0]["keywords"][0], topics[0, 1]["keywords"][0]}
    assert len(leads) == 2


def test_distinct_labels_on_keyword_lists():
    """The rule on topics as a map stores them (what the studio applies to maps written before it): the
    planted generic keyword 'overview' (in every level-0 topic) leaves the labels; siblings sharing their
    first keyword get different ones, the bigger sibling keeping it; a topic with no words stays NO_WORDS."""
    topics = [
        {"level": 0, "cluster": 0, "parent": None, "size": 50, "keywords": ["astronomy", "overview"]},
        {"level": 0, "cluster": 1, "parent": None, "size": 40, "keywords": ["baking", "overview"]},
        {"level": 0, "cluster": 2, "parent": None, "size": 30, "keywords": ["overview", "cycling"]},
        {"level": 0, "cluster": 3, "parent": None, "size": 2, "keywords": []},
        {"level": 1, "cluster": 10, "parent": 0, "size": 20, "keywords": ["assertequal", "os", "test"]},
        {"level": 1, "cluster": 11, "parent": 0, "size": 30, "keywords": ["assertequal", "loop", "socket"]},
        {"level": 1, "cluster": 12, "parent": 1, "size": 5, "keywords": ["bread", "cakes"]},
        {"level": 1, "cluster": 13, "parent": 1, "size": 4, "keywords": ["bread", "yeast"]},
    ]
    before = [dict(t) for t in topics]
    out = by_key(distinct_labels(topics))
    assert topics == before  # not changed in place
    assert [out[0, c]["label"] for c in range(4)] == ["astronomy", "baking", "cycling", NO_WORDS]
    assert out[1, 11]["label"] == "assertequal, loop, socket"  # the bigger sibling keeps its lead
    assert out[1, 10]["label"] == "os, assertequal, test"
    assert out[1, 12]["label"] == "bread, cakes" and out[1, 13]["label"] == "yeast, bread"  # another parent
    assert sorted(out[1, 10]["keywords"]) == sorted(before[4]["keywords"])  # reordered, none lost
