"""Duplicate groups: exact (normalised text hash), near (MinHash + LSH, verified by exact Jaccard) and semantic
(cosine similarity of embeddings). Every detector returns an int64 array [n]: the row of the group's
representative (its lowest row) or -1 when the record is in no group.

Words and shingles (shared with signals.py and decontaminate.py):
  a *word* is a maximal run of ASCII letters, digits, `_` or non-ASCII characters, after `str.lower()`;
  everything else (whitespace, punctuation, operators) only separates words. A *shingle* is a run of `ngram`
  consecutive words of one record; a record with fewer words than that has one shingle, all its words.
Hashing is vectorised over a whole batch of texts with numpy (no Python work per word): a word's hash is a
polynomial hash of its bytes (mod 2^64), mixed by SplitMix64; a shingle's hash mixes its words' hashes.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from typing import Iterable, Sequence

import numpy as np

# ---- vectorised words and n-grams ------------------------------------------------------------------------

_U64 = np.uint64
_WORD_BYTE = np.zeros(256, dtype=bool)
for _lo, _hi in (("0", "9"), ("a", "z"), ("A", "Z")):
    _WORD_BYTE[ord(_lo): ord(_hi) + 1] = True
_WORD_BYTE[ord("_")] = True
_WORD_BYTE[0x80:] = True  # any byte of a multi-byte UTF-8 character: non-ASCII characters are word characters
_POLY = _U64(0x100000001B3)  # odd, so it is invertible mod 2^64
_POLY_INV = _U64(pow(0x100000001B3, -1, 1 << 64))
_rng = np.random.default_rng(0x5EED)
_NGRAM_MULT = (_rng.integers(1, 1 << 63, size=64, dtype=np.uint64) * _U64(2) + _U64(1))  # odd per-position keys
_BAND_MULT = (_rng.integers(1, 1 << 63, size=256, dtype=np.uint64) * _U64(2) + _U64(1))


def sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique by sorting: numpy 2.4's default np.unique hashes, and is ~50x slower on many distinct integers."""
    x = np.sort(np.asarray(x).reshape(-1))
    return x[np.concatenate([[True], x[1:] != x[:-1]])] if x.size else x


def _mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection on uint64 that spreads every input bit over all output bits."""
    x = x ^ (x >> _U64(30))
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


class Words:
    """The words of a batch of texts: 64-bit hashes, offsets (the words of text i are `offsets[i]:offsets[i+1]`)
    and, when asked for, each word's length in characters."""

    __slots__ = ("hash", "offsets", "chars")

    def __init__(self, hash: np.ndarray, offsets: np.ndarray, chars: np.ndarray | None = None):
        self.hash, self.offsets, self.chars = hash, offsets, chars

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)


_powers_cache = (np.ones(1, dtype=np.uint64), np.ones(1, dtype=np.uint64))
_powers_lock = threading.Lock()


def _powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """P^i and P^-i (mod 2^64) for i < size, cached and grown by doubling (thread-safe: batches run on threads)."""
    global _powers_cache
    cache = _powers_cache
    if cache[0].size < size:
        with _powers_lock:
            cache = _powers_cache
            if cache[0].size < size:
                m = max(size, 2 * cache[0].size, 1 << 16)
                grown = []
                for base in (_POLY, _POLY_INV):
                    p = np.full(m, base, dtype=np.uint64)
                    p[0] = 1
                    grown.append(np.cumprod(p))  # uint64 products wrap: arithmetic mod 2^64, as wanted
                cache = _powers_cache = (grown[0], grown[1])
    return cache[0][:size], cache[1][:size]


def poly_powers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """The polynomial hash's P^i and P^-i (mod 2^64) for i < size, cached: for other rolling hashes over the
    same base (evaluate/contamination.py hashes every 50-character window with them)."""
    return _powers(size)


def words(texts: Sequence[str], *, chars: bool = False) -> Words:
    """Tokenise and hash every word of every text in one vectorised pass (see the module docstring)."""
    n = len(texts)
    enc = [t.lower().encode("utf-8", "surrogatepass") for t in texts]
    lens = np.fromiter(map(len, enc), dtype=np.int64, count=n)
    buf = np.frombuffer(b"\x00".join(enc) + b"\x00", dtype=np.uint8)  # NUL separators end every word
    doc_start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens + 1, out=doc_start[1:])
    edges = np.diff(_WORD_BYTE[buf].view(np.int8), prepend=np.int8(0))
    bounds = np.flatnonzero(edges != 0)  # alternating word start, word end: word k = buf[bounds[2k]:bounds[2k+1]]
    ws = bounds[0::2]
    offsets = np.searchsorted(ws, doc_start).astype(np.int64)
    if ws.size == 0:
        return Words(np.zeros(0, np.uint64), offsets, np.zeros(0, np.int32) if chars else None)
    # polynomial hash of each word, sum((byte + 1) * P^(i - start)) mod 2^64: reduceat over [start, end)
    # (np.add.reduceat is ~10x faster than a cumulative sum), then divided by P^start
    pw, inv = _powers(buf.size)
    sums = np.add.reduceat((buf.astype(np.uint64) + _U64(1)) * pw, bounds)[0::2]
    h = _mix64(sums * inv[ws] + (bounds[1::2] - ws).astype(np.uint64))
    nchars = None
    if chars:  # characters, not bytes: count the bytes that start a UTF-8 character
        nchars = np.add.reduceat(((buf & 0xC0) != 0x80).astype(np.int32), bounds)[0::2]
    return Words(h, offsets, nchars)


def ngram_hashes(w: Words, n: int, *, short: str = "whole") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes of every run of `n` consecutive words inside one text.

    Returns (hashes uint64 [S], offsets int64 [texts + 1], first word index [S]). A text with fewer than `n`
    words (but at least one) gets one n-gram of all its words when `short="whole"`, none when `short="drop"`.
    """
    nw = w.counts
    if not 1 <= n <= _NGRAM_MULT.size:
        raise ValueError(f"n-grams of 1 to {_NGRAM_MULT.size} words are supported, not {n}")
    full = np.maximum(nw - n + 1, 0)
    whole = (nw > 0) & (nw < n) if short == "whole" else np.zeros_like(nw, dtype=bool)
    per_doc = full + whole
    offsets = np.zeros(nw.size + 1, dtype=np.int64)
    np.cumsum(per_doc, out=offsets[1:])
    # start word of each n-gram: within each text, its first `full` word positions (or its first word)
    start = np.repeat(w.offsets[:-1] - offsets[:-1], per_doc) + np.arange(offsets[-1], dtype=np.int64)
    length = np.where(np.repeat(whole, per_doc), np.repeat(nw, per_doc), n)
    acc = np.zeros(start.size, dtype=np.uint64)
    padded = np.concatenate([w.hash, np.zeros(n, dtype=np.uint64)])
    for j in range(n):
        acc += np.where(j < length, padded[start + j], _U64(0)) * _NGRAM_MULT[j]
    return _mix64(acc + length.astype(np.uint64)), offsets, start


def shingles(texts: Sequence[str], ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every record's word `ngram`-shingles: (hashes [S], offsets [n + 1])."""
    h, offsets, _ = ngram_hashes(words(texts), ngram)
    return h, offsets


# ---- MinHash ---------------------------------------------------------------------------------------------

_BATCH_SHINGLES = 8192  # num_perm x shingles uint64 per block: 8 MiB at 128 permutations


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 1 << 63, size=num_perm, dtype=np.uint64) * _U64(2) + _U64(1)
    b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * _U64(2)
    return a, b


def minhash_signatures(texts: Sequence[str], *, num_perm: int = 128, ngram: int = 5, seed: int = 0,
                       threads: int = 1, progress: bool = False, batch: int = 2048) -> np.ndarray:
    """MinHash signatures, uint32 [n, num_perm], of each record's set of word `ngram`-shingles.

    Permutation p maps a shingle's 32-bit key x to the top 32 bits of (a_p * x + b_p) mod 2^64 — Dietzfelbinger's
    multiply-add-shift family, 2-universal for 32-bit keys — and the signature keeps each permutation's minimum.
    All permutations of a block of shingles are one numpy outer product followed by `np.minimum.reduceat`.
    Records without a single word get all-ones signatures (0xFFFFFFFF) and never join a near-duplicate group.

    Pure and deterministic for a given seed, so batches can be computed anywhere and stacked. Works through
    `batch` texts at a time (bounded memory) on `threads` threads (0 = one per core; numpy releases the GIL).
    """
    n = len(texts)
    sig = np.empty((n, num_perm), dtype=np.uint32)

    def work(s: int) -> int:
        h, offsets = shingles(texts[s:s + batch], ngram)
        sig[s:s + batch] = _signatures_from_shingles(h, offsets, num_perm, seed)
        return min(batch, n - s)

    if threads == 0:
        import os

        threads = min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8)
    starts = range(0, n, batch)
    if threads <= 1 and not progress:
        for s in starts:
            work(s)
        return sig
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(threads, 1)) as pool:
        done = pool.map(work, starts)
        if not progress:
            for _ in done:
                pass
            return sig
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        t0 = time.perf_counter()
        with Progress(TextColumn("[bold]MinHash[/]"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]:,.0f} records/s"), TimeRemainingColumn(),
                      transient=True) as bar:
            task = bar.add_task("minhash", total=n, rate=0.0)
            for k in done:
                bar.update(task, advance=k, rate=bar.tasks[0].completed / max(time.perf_counter() - t0, 1e-9))
    return sig


def _signatures_from_shingles(h: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    a, b = _permutations(num_perm, seed)
    n = offsets.size - 1
    sig = np.full((n, num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    keys = h >> _U64(32)  # 32-bit keys: the multiply-add-shift scheme is universal for keys of half the width
    nonempty = np.flatnonzero(offsets[1:] > offsets[:-1])
    ends = offsets[nonempty + 1]
    block = np.empty((num_perm, _BATCH_SHINGLES), dtype=np.uint64)
    i = 0
    while i < nonempty.size:
        # a run of whole records whose shingles fit in one block (a record larger than a block gets its own)
        lo = offsets[nonempty[i]]
        j = max(int(np.searchsorted(ends, lo + _BATCH_SHINGLES, side="right")), i + 1)
        docs = nonempty[i:j]
        hi = ends[j - 1]
        m = int(hi - lo)
        # permutations x shingles, so that the per-record minimum runs along contiguous memory
        out = block[:, :m] if m <= _BATCH_SHINGLES else np.empty((num_perm, m), dtype=np.uint64)
        np.multiply.outer(a, keys[lo:hi], out=out)
        out += b[:, None]
        mins = np.minimum.reduceat(out, offsets[docs] - lo, axis=1)
        sig[docs] = (mins.T >> _U64(32)).astype(np.uint32)
        i = j
    return sig


def lsh_params(threshold: float, num_perm: int, *, recall: float = 0.97) -> tuple[int, int]:
    """Bands b and rows r (b * r <= num_perm) for LSH on MinHash signatures.

    A pair with Jaccard s shares at least one band with probability P(s) = 1 - (1 - s^r)^b. Among the choices with
    P(threshold) >= recall, pick the one with the fewest expected false candidates (the area under P below the
    threshold); if none reaches `recall` (too few permutations), the one with the highest P(threshold).
    """
    if not 0 < threshold < 1:
        raise ValueError("threshold must be in (0, 1)")
    grid = np.linspace(0, threshold, 201)
    best, best_fp, fallback, fallback_p = None, math.inf, (1, 1), -1.0
    for r in range(1, num_perm + 1):
        for b in range(num_perm // r, 0, -1):  # fewer bands than fit: fewer false candidates, lower recall
            p_t = 1 - (1 - threshold ** r) ** b
            if p_t > fallback_p:
                fallback, fallback_p = (b, r), p_t
            if p_t < recall:
                break  # P(threshold) only falls as bands are removed
            fp = float(np.mean(1 - (1 - grid ** r) ** b)) * threshold  # area under P(s) on [0, threshold]
            if fp < best_fp:
                best, best_fp = (b, r), fp
    return best or fallback


def lsh_recall(similarity: float, bands: int, rows: int) -> float:
    """Probability that a pair of this Jaccard similarity becomes an LSH candidate (the S-curve)."""
    return 1 - (1 - similarity ** rows) ** bands


def _band_candidates(sig: np.ndarray, bands: int, rows: int, *, max_bucket: int = 64) -> np.ndarray:
    """Candidate pairs (int64 [k, 2], i < j, unique) of rows sharing all `rows` values of at least one band.

    A bucket of more than `max_bucket` rows yields a star (its first row with each other) instead of all pairs,
    so a thousand identical records cost a thousand pairs, not half a million.
    """
    n = sig.shape[0]
    valid = np.flatnonzero(~(sig == np.iinfo(np.uint32).max).all(axis=1))
    found = []
    for band in range(bands):
        cols = sig[valid, band * rows:(band + 1) * rows].astype(np.uint64)
        key = np.zeros(valid.size, dtype=np.uint64)
        for j in range(rows):
            key += cols[:, j] * _BAND_MULT[j]
        key = _mix64(key + _U64(band))
        order = np.argsort(key, kind="stable")
        k = key[order]
        same_as_next = k[1:] == k[:-1]
        if not same_as_next.any():
            continue
        # members of buckets with >= 2 rows, in bucket order; bucket id per member
        in_bucket = np.zeros(k.size, dtype=bool)
        in_bucket[:-1] |= same_as_next
        in_bucket[1:] |= same_as_next
        members = valid[order[in_bucket]]
        bucket = np.cumsum(np.concatenate([[True], k[in_bucket][1:] != k[in_bucket][:-1]])) - 1
        first = np.flatnonzero(np.concatenate([[True], bucket[1:] != bucket[:-1]]))
        size = np.diff(np.append(first, bucket.size))
        big = size > max_bucket
        # stars for big buckets
        if big.any():
            big_member = big[bucket]
            head = members[first][bucket]
            sel = big_member & (members != head)
            found.append(np.stack([head[sel], members[sel]], axis=1))
        # all pairs for small buckets: member p with member p + d of the same bucket, d = 1 .. max size - 1
        small = ~big[bucket]
        m_small, b_small = members[small], bucket[small]
        for d in range(1, int(size[~big].max(initial=1))):
            same = b_small[d:] == b_small[:-d]
            if not same.any():
                break
            found.append(np.stack([m_small[:-d][same], m_small[d:][same]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    pairs.sort(axis=1)
    code = sorted_unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([code // n, code % n], axis=1)


def jaccard_pairs(h: np.ndarray, offsets: np.ndarray, pairs: np.ndarray, *, chunk: int = 50_000) -> np.ndarray:
    """Exact Jaccard similarity of the shingle-hash sets of each pair of records (float64 [k]).

    Vectorised: every record's distinct shingles become sorted (record, shingle id) keys; for each pair, the smaller
    set's shingles are looked up among the larger set's keys with one `searchsorted`.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    n_docs = offsets.size - 1
    out = np.zeros(len(pairs), dtype=np.float64)
    if len(pairs) == 0 or h.size == 0:
        return out
    order = np.argsort(h, kind="stable")
    new = np.concatenate([[True], h[order][1:] != h[order][:-1]])
    ids = np.empty(h.size, dtype=np.int64)
    ids[order] = np.cumsum(new) - 1  # dense shingle ids
    width = np.int64(ids.max() + 1)
    doc = np.repeat(np.arange(n_docs, dtype=np.int64), np.diff(offsets))
    key = sorted_unique(doc * width + ids)  # distinct (record, shingle) pairs, sorted by record
    start = np.searchsorted(key // width, np.arange(n_docs + 1))
    size = np.diff(start)
    for c in range(0, len(pairs), chunk):
        i, j = pairs[c:c + chunk, 0], pairs[c:c + chunk, 1]
        small = size[i] <= size[j]
        a, b = np.where(small, i, j), np.where(small, j, i)
        cnt = size[a]
        first = np.cumsum(cnt) - cnt
        elem = np.repeat(start[a] - first, cnt) + np.arange(int(cnt.sum()))
        query = np.repeat(b, cnt) * width + key[elem] % width
        pos = np.minimum(np.searchsorted(key, query), key.size - 1)
        inter = np.bincount(np.repeat(np.arange(len(a)), cnt), weights=key[pos] == query, minlength=len(a))
        union = size[i] + size[j] - inter
        out[c:c + chunk] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return out


def near_pairs(texts: Sequence[str], *, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5,
               seed: int = 0, signatures: np.ndarray | None = None, recall: float = 0.97,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Verified near-duplicate pairs: (pairs int64 [k, 2], exact Jaccard float64 [k]), Jaccard >= threshold."""
    if signatures is None:
        signatures = minhash_signatures(texts, num_perm=num_perm, ngram=ngram, seed=seed, threads=0,
                                        progress=progress)
    if signatures.shape[0] != len(texts):
        raise ValueError(f"{signatures.shape[0]} signatures for {len(texts)} texts")
    bands, rows = lsh_params(threshold, signatures.shape[1], recall=recall)
    cand = _band_candidates(signatures, bands, rows)
    if cand.size == 0:
        return cand, np.zeros(0)
    # verify: exact Jaccard over the shingle sets of the records that appear in a candidate pair only
    involved = sorted_unique(cand)
    h, offsets = shingles([texts[i] for i in involved.tolist()], ngram)
    local = np.searchsorted(involved, cand)
    jac = jaccard_pairs(h, offsets, local)
    keep = jac >= threshold
    return cand[keep], jac[keep]


def near_groups(texts: Sequence[str], *, threshold: float = 0.8, num_perm: int = 128, ngram: int = 5,
                seed: int = 0, signatures: np.ndarray | None = None, progress: bool = False) -> np.ndarray:
    """Near-duplicate groups: records linked by a verified pair (exact Jaccard of word `ngram`-shingle sets
    >= threshold), closed transitively. MinHash LSH (bands chosen by `lsh_params` for >= 97% recall at the
    threshold) only proposes candidates; every candidate is checked with the exact Jaccard before it counts.
    `signatures` (from `minhash_signatures`, same num_perm/ngram/seed) skips the MinHash step.
    """
    pairs, _ = near_pairs(texts, threshold=threshold, num_perm=num_perm, ngram=ngram, seed=seed,
                          signatures=signatures, progress=progress)
    return groups_from_pairs(len(texts), pairs)


# ---- exact and semantic ----------------------------------------------------------------------------------

def _normalise(text: str) -> str:
    return " ".join(text.split())


def exact_groups(texts: Iterable[str], *, normalize: bool = True) -> np.ndarray:
    """Groups of identical records: identical after stripping and collapsing runs of whitespace to one space
    (`normalize=True`), or byte-identical (`normalize=False`). Compared by a 128-bit BLAKE2b digest."""
    first: dict[bytes, int] = {}
    out = []
    for i, t in enumerate(texts):
        key = hashlib.blake2b((_normalise(t) if normalize else t).encode("utf-8", "surrogatepass"),
                              digest_size=16).digest()
        out.append(first.setdefault(key, i))
    rep = np.asarray(out, dtype=np.int64)
    count = np.bincount(rep, minlength=rep.size)
    rep[count[rep] < 2] = -1
    return rep


def semantic_groups(embeddings: np.ndarray, *, threshold: float = 0.95, exact_max: int = 20000,
                    neighbors: int = 32) -> np.ndarray:
    """Groups of records whose embeddings have cosine similarity >= threshold, closed transitively.

    Embeddings are L2-normalised here (so inner product = cosine). Up to `exact_max` records: faiss IndexFlatIP
    range search, exact. Beyond: an HNSW graph proposes each record's `neighbors` nearest, and every proposed pair
    is kept only if its exact cosine reaches the threshold (so no false pair; a group larger than `neighbors`
    still joins through chains).
    """
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    if n < 2:
        return np.full(n, -1, dtype=np.int64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms == 0, 1, norms)
    found = []
    if n <= exact_max:
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x)
        step = 4096
        for s in range(0, n, step):
            lims, _, ids = index.range_search(x[s:s + step], threshold - 1e-4)  # the exact check below decides
            q = np.repeat(np.arange(s, min(s + step, n)), np.diff(lims.astype(np.int64)))
            found.append(np.stack([q, ids.astype(np.int64)], axis=1))
    else:
        index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.add(x)
        index.hnsw.efSearch = max(64, 2 * neighbors)
        k = min(neighbors + 1, n)
        for s in range(0, n, 16384):
            _, ids = index.search(x[s:s + 16384], k)
            q = np.repeat(np.arange(s, min(s + 16384, n)), k)
            found.append(np.stack([q, ids.reshape(-1).astype(np.int64)], axis=1))
    pairs = np.concatenate(found)
    pairs = pairs[(pairs[:, 1] >= 0) & (pairs[:, 0] != pairs[:, 1])]
    # exact check of every pair (range search is exact already; HNSW proposals need it)
    cos = np.einsum("ij,ij->i", x[pairs[:, 0]], x[pairs[:, 1]])
    return groups_from_pairs(n, pairs[cos >= threshold])


def groups_from_pairs(n: int, pairs) -> np.ndarray:
    """Connected components of the graph with `n` nodes and these edges: each node's component's lowest row,
    or -1 for a node in no edge (union-find, as scipy's connected_components)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.full(n, -1, dtype=np.int64)
    if pairs.size == 0 or n == 0:
        return out
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    rep = np.full(label.max() + 1, n, dtype=np.int64)
    np.minimum.at(rep, label, np.arange(n))
    size = np.bincount(label)
    linked = size[label] > 1
    out[linked] = rep[label[linked]]
    return out
