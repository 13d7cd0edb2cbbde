"""Keywords for every cluster of every level: class-based TF-IDF (c-TF-IDF, BERTopic, Grootendorst 2022).

All texts of a cluster form one document; a term t in cluster c scores

    tf(t, c) * log(1 + A / f(t))

with tf the term's count in c divided by all term counts in c, f(t) its count across all clusters of the level,
and A the mean number of terms per cluster. A term must also appear in at least two records of the cluster
(when the cluster has two), so that one record's private identifier does not name a whole cluster.

Terms are code-aware: identifiers (letters, digits, `_`, starting with a letter or `_`, at least two
characters, lowercased) such as `json_decode` or `__init__`; English stop words and Python keywords and
`self`/`cls` are dropped. Texts are counted in chunks (a streaming pass), at the finest distinct path of the
hierarchy; coarser levels add their children's counts up.

Two rules keep labels telling (`distinct_labels`, also applied by the studio to maps written before them):
a term present in almost every cluster of a level (GENERIC_SHARE of them, in at least two records each)
names none of them, so it is no keyword of a cluster that has any other term; and siblings (the clusters under one parent) get
different leading keywords: the bigger sibling keeps its best word, a smaller one leads with its best word
that no bigger sibling leads with.
"""

from __future__ import annotations

import keyword
from typing import Callable, Iterable

import numpy as np

TOKEN_PATTERN = r"(?u)\b[^\W\d]\w+\b"
NO_WORDS = "(no words)"  # the label of a cluster whose records have no term at all (e.g. empty files)
CODE_STOP_WORDS = {"self", "cls"}
GENERIC_SHARE = 0.9  # a term present in this share of a level's clusters (and in >= 3 of them) is generic
GENERIC_KEYWORD_SHARE = 0.5  # without counts: a keyword of more than half of a level's topics (>= 3) is generic


def stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | {k.lower() for k in keyword.kwlist} | CODE_STOP_WORDS


def _counts(texts: Iterable[str], leaf: np.ndarray, k: int, *, chunk: int,
            progress: Callable[[int], None] | None):
    """Per-leaf term counts and record counts (two csr [k, V]) and the vocabulary (list of terms)."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import CountVectorizer

    stop = list(stop_words())
    vocab: dict[str, int] = {}
    parts: list[tuple] = []  # (rows, cols, counts, docs) per chunk, consolidated now and then
    row = 0

    def consolidate():
        if len(parts) < 2:
            return
        a, b = _sum_parts(parts, (k, len(vocab)))
        a, b = a.tocoo(), b.tocoo()
        parts[:] = [(a.row, a.col, a.data, b.data)]

    def add(batch: list[str]):
        nonlocal row
        lab = leaf[row:row + len(batch)]
        row += len(batch)
        try:
            cv = CountVectorizer(token_pattern=TOKEN_PATTERN, lowercase=True, stop_words=stop, dtype=np.int64)
            x = cv.fit_transform(batch)
        except ValueError:  # no term at all in this chunk
            return
        gid = np.fromiter((vocab.setdefault(t, len(vocab)) for t in cv.get_feature_names_out()),
                          dtype=np.int64, count=x.shape[1])
        onehot = csr_matrix((np.ones(len(batch), dtype=np.int64), (lab, np.arange(len(batch)))),
                            shape=(k, len(batch)))
        cnt, doc = onehot @ x, onehot @ (x > 0).astype(np.int64)
        cnt.sum_duplicates()  # canonical (sorted) form: both have the same pattern, so the same order
        doc.sum_duplicates()
        cnt, doc = cnt.tocoo(), doc.tocoo()
        parts.append((cnt.row, gid[cnt.col], cnt.data, doc.data))
        if len(parts) >= 16:
            consolidate()

    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == chunk:
            add(batch)
            if progress:
                progress(len(batch))
            batch = []
    if batch:
        add(batch)
        if progress:
            progress(len(batch))
    if row != len(leaf):
        raise ValueError(f"{row} texts for {len(leaf)} rows of the hierarchy")
    terms = np.empty(len(vocab), dtype=object)
    for t, i in vocab.items():
        terms[i] = t
    if not parts:
        empty = csr_matrix((k, 0), dtype=np.int64)
        return empty, empty, terms
    counts, docs = _sum_parts(parts, (k, len(vocab)))
    return counts, docs, terms


def _sum_parts(parts: list[tuple], shape: tuple[int, int]):
    """Two csr matrices (counts, records) from (rows, cols, counts, records) parts; duplicates summed."""
    from scipy.sparse import csr_matrix

    r, c, cnt, doc = (np.concatenate(a) for a in zip(*parts))
    a, b = csr_matrix((cnt, (r, c)), shape=shape), csr_matrix((doc, (r, c)), shape=shape)
    a.sum_duplicates()
    b.sum_duplicates()
    return a, b


def ctfidf(counts) -> "scipy.sparse.csr_matrix":  # noqa: F821
    """c-TF-IDF scores (csr [classes, V], float64) of a class x term count matrix."""
    from scipy.sparse import csr_matrix, diags

    counts = csr_matrix(counts, dtype=np.float64)
    f = np.asarray(counts.sum(axis=0)).ravel()
    per_class = np.asarray(counts.sum(axis=1)).ravel()
    avg = per_class.mean() if len(per_class) else 0.0
    idf = np.log1p(avg / np.where(f > 0, f, 1))
    tf = diags(1.0 / np.where(per_class > 0, per_class, 1)) @ counts
    return csr_matrix(tf @ diags(idf))


def _generic(docs, size: np.ndarray) -> np.ndarray:
    """bool [V]: the terms present (in min(2, size) records) in GENERIC_SHARE of the clusters, and in >= 3."""
    d = docs.tocoo()
    present = d.data >= np.minimum(2, size)[d.row]
    clusters = np.bincount(d.col[present], minlength=docs.shape[1])
    return (clusters >= 3) & (clusters >= GENERIC_SHARE * docs.shape[0])


def _top_terms(scores, docs, size: np.ndarray, terms: np.ndarray, top_k: int) -> list[list[str]]:
    generic = _generic(docs, size)
    out = []
    for c in range(scores.shape[0]):
        lo, hi = scores.indptr[c], scores.indptr[c + 1]
        cols, vals = scores.indices[lo:hi], scores.data[lo:hi]
        enough = docs[c, cols].toarray().ravel() >= min(2, size[c])
        # eligible terms first, then by score, then alphabetically (deterministic ties); generic terms only
        # when the cluster has no other
        order = np.lexsort((terms[cols].astype(str), -vals, ~enough))
        order = order[vals[order] > 0]
        specific = order[~generic[cols[order]]]
        out.append([str(terms[cols[i]]) for i in (specific if len(specific) else order)[:top_k]])
    return out


def distinct_labels(topics: list[dict]) -> list[dict]:
    """Topics (dicts with level, cluster, parent, keywords, size) with `keywords` filtered and reordered and
    `label` set: a keyword of more than GENERIC_KEYWORD_SHARE of a level's topics (when >= 3 have it) is
    dropped from every topic that has other words, and siblings lead with different keywords where their
    words allow it (bigger siblings choose first). The label is the first three keywords joined by ", ", or
    NO_WORDS. Returns new dicts; the input is not changed."""
    from collections import Counter, defaultdict

    out = [dict(t, keywords=list(t.get("keywords") or [])) for t in topics]
    by_level: dict[int, list[dict]] = defaultdict(list)
    for t in out:
        by_level[t["level"]].append(t)
    for level_topics in by_level.values():
        k = len(level_topics)
        share = Counter(w for t in level_topics for w in set(t["keywords"]))
        generic = {w for w, c in share.items() if k >= 3 and c >= 3 and c > GENERIC_KEYWORD_SHARE * k}
        siblings: dict = defaultdict(list)
        for t in level_topics:
            t["keywords"] = [w for w in t["keywords"] if w not in generic] or t["keywords"]
            siblings[t.get("parent")].append(t)
        for group in siblings.values():
            taken: set[str] = set()
            for t in sorted(group, key=lambda t: (-t.get("size", 0), t["cluster"])):
                kws = t["keywords"]
                lead = next((w for w in kws if w not in taken), kws[0] if kws else None)
                if lead is not None:
                    t["keywords"] = [lead] + [w for w in kws if w != lead]
                    taken.add(lead)
    for t in out:
        t["label"] = ", ".join(t["keywords"][:3]) or NO_WORDS
    return out


def label_clusters(texts: Iterable[str], hierarchy: np.ndarray, xy: np.ndarray, *, top_k: int = 5,
                   chunk: int = 4096, progress: Callable[[int], None] | None = None) -> list[dict]:
    """Topic dicts for every (level, cluster) of `hierarchy` (int [n, L], level 0 coarsest), in level then
    cluster order: {"level", "cluster", "parent" (its level-1 cluster, None at level 0), "label" (the first
    three keywords joined by ", ", or NO_WORDS), "keywords" (up to top_k; ordered by `distinct_labels`),
    "size", "x", "y" (mean position in `xy`)}.

    `texts` is any iterable of the n texts in row order; it is read once, `chunk` texts at a time.
    """
    from scipy.sparse import csr_matrix

    hierarchy = np.asarray(hierarchy)
    n, levels = hierarchy.shape
    xy = np.asarray(xy, dtype=np.float64)
    paths, leaf = np.unique(hierarchy, axis=0, return_inverse=True)  # the finest distinct cluster paths
    leaf = leaf.reshape(-1)
    counts, docs, terms = _counts(texts, leaf, len(paths), chunk=chunk, progress=progress)
    leaf_size = np.bincount(leaf, minlength=len(paths))
    topics = []
    for lvl in range(levels):
        ids, of_leaf = np.unique(paths[:, lvl], return_inverse=True)
        up = csr_matrix((np.ones(len(paths)), (of_leaf.reshape(-1), np.arange(len(paths)))),
                        shape=(len(ids), len(paths)))
        size = (up @ leaf_size).astype(np.int64)
        keywords = _top_terms(ctfidf(up @ counts), csr_matrix(up @ docs), size, terms, top_k)
        member = np.searchsorted(ids, hierarchy[:, lvl])
        cx = np.bincount(member, weights=xy[:, 0], minlength=len(ids)) / np.maximum(size, 1)
        cy = np.bincount(member, weights=xy[:, 1], minlength=len(ids)) / np.maximum(size, 1)
        parent_of = {}
        if lvl > 0:
            for p in paths:
                parent_of[int(p[lvl])] = int(p[lvl - 1])
        for j, cid in enumerate(ids.tolist()):
            topics.append({"level": lvl, "cluster": int(cid), "parent": parent_of.get(int(cid)) if lvl else None,
                           "label": ", ".join(keywords[j][:3]) or NO_WORDS, "keywords": keywords[j],
                           "size": int(size[j]),
                           "x": float(cx[j]), "y": float(cy[j])})
    return distinct_labels(topics)
