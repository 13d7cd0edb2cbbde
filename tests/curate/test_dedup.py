"""Duplicate detectors against independent oracles: a regex tokeniser and Python sets of word tuples (exact
Jaccard by brute force), datasketch's MinHash, numpy brute-force cosine, a plain union-find."""

from __future__ import annotations

import random
import re
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from lmforge.curate import dedup
from planting import edit_words

STDLIB = Path(sysconfig.get_paths()["stdlib"])
WORD = re.compile(r"[0-9a-z_\u0080-\U0010ffff]+")  # the documented word definition, applied after str.lower()


def oracle_words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def oracle_shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    w = oracle_words(text)
    if 0 < len(w) < n:
        return {tuple(w)}
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 0.0


def stdlib_chunks(limit: int, words: int = 150, packages=("json", "email", "logging", "asyncio", "http")) -> list[str]:
    """Consecutive ~`words`-word pieces of real standard-library source, deterministic."""
    out = []
    for pkg in packages:
        for path in sorted((STDLIB / pkg).glob("*.py")):
            toks = path.read_text(encoding="utf-8").split()
            out += [" ".join(toks[i:i + words]) for i in range(0, len(toks) - words + 1, words)]
            if len(out) >= limit:
                return out[:limit]
    return out


def brute_force_pairs(texts: list[str], threshold: float, n: int = 5) -> set[tuple[int, int]]:
    """All pairs with exact Jaccard >= threshold, from Python sets of word tuples (sparse matmul for speed)."""
    from scipy.sparse import csr_matrix

    sets = [oracle_shingles(t, n) for t in texts]
    ids: dict = {}
    rows, cols = [], []
    for i, s in enumerate(sets):
        for g in s:
            rows.append(i)
            cols.append(ids.setdefault(g, len(ids)))
    m = csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(texts), max(len(ids), 1)))
    inter = (m @ m.T).tocoo()
    size = np.array([len(s) for s in sets])
    i, j, v = inter.row, inter.col, inter.data
    keep = (i < j) & (v / (size[i] + size[j] - v) >= threshold)
    return set(zip(i[keep].tolist(), j[keep].tolist()))


def components(n: int, pairs) -> np.ndarray:
    """Plain union-find, the oracle for groups_from_pairs: lowest row of each component, -1 if alone."""
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = [find(i) for i in range(n)]
    count = {}
    for r in roots:
        count[r] = count.get(r, 0) + 1
    return np.array([r if count[r] > 1 else -1 for r in roots], dtype=np.int64)


def same_group_pairs(groups: np.ndarray) -> set[tuple[int, int]]:
    out = set()
    for g in np.unique(groups[groups >= 0]):
        members = np.flatnonzero(groups == g).tolist()
        out |= {(a, b) for k, a in enumerate(members) for b in members[k + 1:]}
    return out


def f1(found: set, truth: set) -> tuple[float, float, float]:
    tp = len(found & truth)
    p = tp / len(found) if found else 1.0
    r = tp / len(truth) if truth else 1.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


# ---- words and shingles --------------------------------------------------------------------------------------

def test_words_match_the_regex_oracle_and_hash_injectively():
    texts = stdlib_chunks(300) + ["", "   ", "Ünïcode wörds, ÇA va? 日本語 テキスト", "a\x00b", "x",
                                  "MiXeD CaSe mixed case"]
    w = dedup.words(texts, chars=True)
    seen: dict[int, str] = {}
    for i, t in enumerate(texts):
        expect = oracle_words(t)
        got = w.hash[w.offsets[i]:w.offsets[i + 1]].tolist()
        assert len(got) == len(expect), t[:60]
        assert w.chars[w.offsets[i]:w.offsets[i + 1]].tolist() == [len(x) for x in expect]
        for word, h in zip(expect, got):
            assert seen.setdefault(h, word) == word  # equal hash <=> equal word (no collision in this corpus)
    assert len(set(seen.values())) == len(seen)


def test_shingle_sets_match_word_tuples():
    """Each record's set of shingle hashes is the image of its set of word 5-tuples under one injective naming:
    a tuple is named by the hash of a text made of just those words (a record of <= 5 words has one shingle)."""
    texts = stdlib_chunks(200) + ["one two three", "", "a b c d e", "a b c d e f", "x y z x y z x y"]
    h, offsets = dedup.shingles(texts, 5)
    sets = [oracle_shingles(t) for t in texts]
    tuples = sorted(set().union(*sets))
    named, one_each = dedup.shingles([" ".join(g) for g in tuples], 5)
    assert np.array_equal(one_each, np.arange(len(tuples) + 1))
    name = dict(zip(tuples, named.tolist()))
    assert len(set(name.values())) == len(tuples)  # distinct tuples, distinct hashes (no collision here)
    for i, t in enumerate(texts):
        assert set(h[offsets[i]:offsets[i + 1]].tolist()) == {name[g] for g in sets[i]}, t[:60]


def test_signatures_are_pure_and_batchable():
    texts = stdlib_chunks(500)
    whole = dedup.minhash_signatures(texts, num_perm=64, seed=3)
    parts = np.concatenate([dedup.minhash_signatures(texts[s:s + 77], num_perm=64, seed=3) for s in range(0, 500, 77)])
    assert whole.dtype == np.uint32 and whole.shape == (500, 64)
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_array_equal(whole, dedup.minhash_signatures(texts, num_perm=64, seed=3, threads=2, batch=60))
    assert not np.array_equal(whole, dedup.minhash_signatures(texts, num_perm=64, seed=4))


def test_minhash_estimates_jaccard_as_well_as_datasketch():
    """Estimates from our signatures are unbiased with binomial spread, like datasketch's on the same pairs."""
    from datasketch import MinHash

    rng = random.Random(0)
    base = stdlib_chunks(120)
    vocab = " ".join(base).split()
    a = base
    b = [edit_words(t, rng.uniform(0.0, 0.08), rng, vocab) for t in base]
    truth = np.array([jaccard(oracle_shingles(x), oracle_shingles(y)) for x, y in zip(a, b)])
    sig = dedup.minhash_signatures(a + b, num_perm=256, seed=1)
    ours = (sig[:len(a)] == sig[len(a):]).mean(axis=1)

    def ds(t):
        m = MinHash(num_perm=256, seed=1)
        m.update_batch([" ".join(g).encode() for g in oracle_shingles(t)])
        return m

    theirs = np.array([ds(x).jaccard(ds(y)) for x, y in zip(a, b)])
    sd = np.sqrt(truth * (1 - truth) / 256)
    assert abs((ours - truth).mean()) < 0.01
    assert np.abs(ours - truth).max() < 5 * sd.max() + 1e-9
    assert np.sqrt(((ours - truth) ** 2).mean()) < 1.5 * np.sqrt(((theirs - truth) ** 2).mean()) + 0.005


def s_curve(s, bands: int, rows: int):
    """P(candidate | Jaccard s) = 1 - (1 - s^r)^b: some band of r rows agrees entirely."""
    return 1 - (1 - np.asarray(s, dtype=np.float64) ** rows) ** bands


def false_candidate_area(threshold: float, bands: int, rows: int) -> float:
    """The area under the S-curve below the threshold (what lsh_params documents it minimises)."""
    from scipy.integrate import quad

    return quad(lambda s: float(s_curve(s, bands, rows)), 0, threshold, epsabs=1e-12)[0]


def brute_force_bands(threshold: float, num_perm: int, recall: float) -> tuple[int, int]:
    """Every (bands, rows) with bands * rows <= num_perm: the least false-candidate area among those with
    P(threshold) >= recall, else the highest P(threshold)."""
    choices = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    ok = [c for c in choices if s_curve(threshold, *c) >= recall]
    if not ok:
        return max(choices, key=lambda c: s_curve(threshold, *c))
    return min(ok, key=lambda c: false_candidate_area(threshold, *c))


@pytest.mark.parametrize("threshold, num_perm, recall", [
    (t, p, 0.97) for t in (0.5, 0.7, 0.8, 0.9) for p in (32, 128, 256)] + [
    (0.8, 128, 0.9), (0.85, 64, 0.99), (0.3, 8, 0.999), (0.6, 4, 0.99)])  # the last two: nothing reaches it
def test_lsh_params_is_the_brute_force_optimum(threshold, num_perm, recall):
    b, r = dedup.lsh_params(threshold, num_perm, recall=recall)
    want = brute_force_bands(threshold, num_perm, recall)
    assert b * r <= num_perm
    if s_curve(threshold, *want) < recall:  # unreachable: the highest recall there is
        assert s_curve(threshold, b, r) == pytest.approx(s_curve(threshold, *want), abs=1e-12)
        return
    assert s_curve(threshold, b, r) >= recall
    # the code integrates on a grid; equal up to that (a different choice of equal area is as good)
    assert false_candidate_area(threshold, b, r) == pytest.approx(false_candidate_area(threshold, *want), rel=1e-3)
    assert dedup.lsh_recall(threshold, b, r) == pytest.approx(float(s_curve(threshold, b, r)))


def test_lsh_params_reach_the_promised_recall():
    for t in (0.5, 0.7, 0.8, 0.85, 0.9):
        for p in (64, 128, 256):
            b, r = dedup.lsh_params(t, p)
            assert b * r <= p
            assert 1 - (1 - t ** r) ** b >= 0.97  # the S-curve, closed form
    # datasketch's default for (0.8, 128) is 9 bands x 13 rows: ~85% at 0.88 and ~40% at the threshold
    b, r = dedup.lsh_params(0.8, 128)
    assert dedup.lsh_recall(0.8, b, r) > dedup.lsh_recall(0.8, 9, 13) + 0.4


# ---- near groups ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def planted():
    rng = random.Random(7)
    base = stdlib_chunks(1200)
    vocab = " ".join(base).split()
    texts = list(base)
    for i in rng.sample(range(len(base)), 200):
        texts.append(edit_words(base[i], rng.uniform(0.0, 0.04), rng, vocab))
    rng.shuffle(texts)
    return texts


def test_near_pairs_match_brute_force_jaccard(planted):
    truth = brute_force_pairs(planted, 0.8)
    assert len(truth) > 100  # the planted copies are there
    pairs, jac = dedup.near_pairs(planted, threshold=0.8)
    found = set(map(tuple, pairs.tolist()))
    p, r, f = f1(found, truth)
    assert p == 1.0  # every pair is verified by the exact Jaccard
    assert r >= 0.95 and f >= 0.95
    # and the reported Jaccard is the exact one
    for (i, j), v in zip(pairs.tolist(), jac):
        assert v == pytest.approx(jaccard(oracle_shingles(planted[i]), oracle_shingles(planted[j])))


def test_near_groups_are_the_components_of_the_true_pairs(planted):
    truth = components(len(planted), brute_force_pairs(planted, 0.8))
    groups = dedup.near_groups(planted, threshold=0.8)
    p, r, f = f1(same_group_pairs(groups), same_group_pairs(truth))
    assert f >= 0.95, (p, r)
    # representatives are each group's lowest row
    for g in np.unique(groups[groups >= 0]):
        assert g == np.flatnonzero(groups == g).min()
    # precomputed signatures (as the Ray engine passes them) give the same groups
    sig = dedup.minhash_signatures(planted)
    np.testing.assert_array_equal(dedup.near_groups(planted, signatures=sig), groups)
    np.testing.assert_array_equal(dedup.near_groups(planted, progress=True), groups)  # threaded batches + bar


def test_near_groups_edge_cases():
    assert dedup.near_groups([]).tolist() == []
    # empty and punctuation-only records have no words and join nothing; identical short ones do
    g = dedup.near_groups(["", "", "!!", "a b", "a b", "A, B."])
    assert g.tolist() == [-1, -1, -1, 3, 3, 3]
    many = ["the same record repeated " * 10] * 300 + ["something else entirely different here"]
    g = dedup.near_groups(many)
    assert (g[:300] == 0).all() and g[300] == -1


# ---- exact, semantic, union-find -------------------------------------------------------------------------

def test_exact_groups_against_a_dict():
    rng = random.Random(1)
    base = stdlib_chunks(300)
    texts = base + [" " + t.replace(" ", "\n  ", 3) + "\t" for t in rng.sample(base, 40)] + rng.sample(base, 20)
    rng.shuffle(texts)
    for normalize in (True, False):
        first = {}
        expect = [first.setdefault(" ".join(t.split()) if normalize else t, i) for i, t in enumerate(texts)]
        counts = {k: expect.count(k) for k in set(expect)}
        expect = [e if counts[e] > 1 else -1 for e in expect]
        assert dedup.exact_groups(texts, normalize=normalize).tolist() == expect
    assert dedup.exact_groups(["a b", "a  b"], normalize=False).tolist() == [-1, -1]


def test_groups_from_pairs_is_union_find():
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 300, size=(180, 2))
    np.testing.assert_array_equal(dedup.groups_from_pairs(300, pairs), components(300, pairs.tolist()))
    assert dedup.groups_from_pairs(3, []).tolist() == [-1, -1, -1]


def _planted_embeddings(n=2000, dim=64, seed=0):
    """Random unit vectors plus perturbed copies with a known cosine, either side of the threshold."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    src = rng.choice(n, 300, replace=False)
    noise = rng.normal(size=(300, dim)).astype(np.float32)
    x = np.concatenate([x, x[src] + noise * rng.uniform(0.05, 0.5, size=(300, 1)).astype(np.float32)])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("exact_max", [100_000, 0])  # faiss flat range search, then HNSW + exact check
def test_semantic_groups_match_numpy_brute_force(exact_max):
    x = _planted_embeddings()
    sim = x @ x.T
    i, j = np.nonzero(np.triu(sim >= 0.95, k=1))
    truth = components(len(x), zip(i.tolist(), j.tolist()))
    assert (truth >= 0).sum() > 100
    got = dedup.semantic_groups(x * 3.0, threshold=0.95, exact_max=exact_max)  # not normalised on purpose
    p, r, f = f1(same_group_pairs(got), same_group_pairs(truth))
    if exact_max:
        np.testing.assert_array_equal(got, truth)
    else:
        assert p == 1.0 and r >= 0.97
