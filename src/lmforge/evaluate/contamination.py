"""Contamination from lineage: are a task's items in the data the model was trained on?

The training data is found through the model directory's `lmforge.json` (`training_sources`):
  * the train split of `dataset` (via "dataset") and of every mixture source in `sources` (via "source");
  * recursively, the same for the model named by `init_from` (via "init_from"), guarding cycles: a base model's
    data contaminates everything fine-tuned from it;
  * not the validation splits: lmforge trains on the train split only (train/prepare.py packs "train"), so
    held-out records are not training data;
  * not, by default, curation parents (`dataset.json` "parents"). `lmforge curate` copies every record it keeps,
    with its split, into the curated dataset, so the curated train split already holds everything the model saw;
    a parent's train split adds only the records curation removed, which the model never saw, above all the ones
    a decontaminate step removed for overlapping this very evaluation set, so reading them would mark exactly the
    decontaminated items dirty. `parents=True` reads them anyway (via "parent", train split only: a parent's
    validation records kept their split in the child, and are held out there too).
A dataset that is missing is "unchecked"; one whose content hash differs from the lineage's is "stale" (it is
read, as the best evidence there is, but is not the data the model saw); a model in the chain without
`lmforge.json` (a directory transformers wrote) has unknown training data. Any of these makes the lineage
"partial": an item no method flags is then "unknown", never "clean". With no training source at all (no
`lmforge.json`) every item is "unknown".

Four published methods (`METHODS`), each building its index on the evaluation items (the small side) and
streaming the training texts past it in batches, as `curate.decontaminate.contaminated` does:
  ngram13        GPT-3 (Brown et al. 2020, appendix C): dirty if the item shares any 13-word n-gram with a training
                 text; items of 8-12 words are matched on their whole word sequence, shorter ones never. This is
                 `decontaminate.contaminated` itself, run with the training texts against the items.
  palm8          PaLM (Chowdhery et al. 2022, section 8): dirty if at least 70% of the item's 8-grams (counted by
                 position) occur anywhere in the training data. score = that fraction. An item of 1-7 words has one
                 "gram", its whole word sequence (score 0 or 1); an item without words has score NaN, never dirty.
  gpt4_substr    GPT-4 technical report (OpenAI 2023, appendix C): training and evaluation text are "processed by
                 removing all spaces and symbols keeping only characters (including numbers)" — here: everything
                 that is not a Unicode letter or digit is removed (case is kept: the report removes nothing else);
                 three 50-character substrings are sampled from the processed item (distinct random starts, seeded
                 by (seed, item index)), or the whole processed item if it is shorter than 50 characters, and the
                 item is dirty if any of them is a substring of a processed training text (texts are not joined:
                 a match never spans two records). score = the share of the sampled substrings found.
  llama2_tokens  Llama 2 (Touvron et al. 2023, appendix A.6): a token of the item is contaminated if it lies in a
                 token n-gram longer than 10 tokens (>= 11) that also occurs in the training data; score = the
                 share of the item's tokens so covered; "dirty" at >= 80%, "clean" below 20% (the paper's four
                 subsets: clean < 20%, not clean >= 20%, not dirty < 80%, dirty >= 80%). Tokens are dedup.words'
                 words (lowercased word-character runs), so no tokenizer is needed, unless `tokenizer` (text ->
                 token ids) is passed. The paper's matching allowed a "skipgram budget" of 4 mismatched tokens
                 inside a span; here matches are exact, so its scores are lower bounds of the paper's.
Word n-grams are compared by 64-bit hashes (a false match needs a collision); substring matches are verified on
the text, so they are exact.

`check` runs the chosen methods in one pass over the training data and reports, per item, each method's verdict,
the union (dirty by any method: the conservative verdict), the status (dirty / clean / unknown) and how far the
methods agree; `splits` turns verdicts into the all / clean / dirty index lists a score is reported on.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from lmforge.errors import DataError

METHODS = ("ngram13", "palm8", "gpt4_substr", "llama2_tokens")
BATCH_TEXTS = 2048
BATCH_CHARS = 4_000_000  # per training batch: bounds the substring method's arrays (~8 bytes x 5 per char)

# ---- lineage ------------------------------------------------------------------------------------------------


def _read_lineage(model_dir: Path) -> dict | None:
    file = model_dir / "lmforge.json"
    if not file.is_file():
        return None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"unreadable lineage: {e}", where=str(file),
                        hint="lmforge.json is written by `lmforge train`; restore it or remove it") from None
    if not isinstance(data, dict):
        raise DataError("lmforge.json is not a JSON object", where=str(file))
    return data


def _dataset_info(path: Path) -> dict | None:
    try:
        return json.loads((path / "dataset.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def lineage(model_dir: str | Path, *, parents: bool = False) -> dict:
    """{"sources": training_sources' list, "unknown": [{"model", "why"}] for models in the chain whose training
    data cannot be known}. See the module docstring for what counts as training data."""
    root = Path(model_dir)
    if not root.is_dir():
        raise DataError("no such model directory", where=str(root), hint="pass the directory `lmforge train` wrote")
    sources: list[dict] = []
    unknown: list[dict] = []
    seen_paths: set[str] = set()
    seen_models: set[str] = set()

    def add(path: str, via: str, model: Path, content_hash: str | None) -> None:
        p = Path(path)
        key = str(p.resolve()) if p.exists() else str(p.absolute())
        if key in seen_paths:
            return
        seen_paths.add(key)
        info = _dataset_info(p)
        entry = {"path": str(p), "split": "train", "exists": info is not None, "via": via, "model": str(model),
                 "content_hash": content_hash,
                 "stale": bool(info is not None and content_hash and info.get("content_hash") != content_hash)}
        sources.append(entry)
        if parents and info is not None:
            for parent in info.get("parents") or []:
                if isinstance(parent, dict) and parent.get("path"):
                    add(str(parent["path"]), "parent", model, parent.get("content_hash"))

    def walk(model: Path, base: bool) -> None:
        key = str(model.resolve()) if model.exists() else str(model.absolute())
        if key in seen_models:
            return  # a cycle (or a base reached twice): its data is in already
        seen_models.add(key)
        if not model.is_dir():
            unknown.append({"model": str(model), "why": "init_from names a directory that does not exist"})
            return
        data = _read_lineage(model)
        if data is None:
            unknown.append({"model": str(model), "why": "no lmforge.json: its training data is not recorded"})
            return
        named = [("dataset", data["dataset"])] if isinstance(data.get("dataset"), dict) else []
        named += [("source", s) for s in data.get("sources") or [] if isinstance(s, dict)]
        named = [(via, d) for via, d in named if d.get("path")]
        for via, d in named:  # the dataset is the first source: dedup by path keeps it as "dataset"
            add(str(d["path"]), "init_from" if base else via, model, d.get("content_hash"))
        if not named:
            unknown.append({"model": str(model), "why": "lmforge.json names no dataset"})
        if data.get("init_from"):
            walk(Path(str(data["init_from"])), True)

    walk(root, False)
    return {"sources": sources, "unknown": unknown}


def training_sources(model_dir: str | Path, *, parents: bool = False) -> list[dict]:
    """The datasets the model (and its bases, recursively) was trained on, deduplicated by path: each
    {"path", "split": "train", "exists", "via": "dataset" | "source" | "init_from" | "parent", "model" (whose
    lineage named it), "content_hash" (the lineage's), "stale" (on disk but with another content hash)}."""
    return lineage(model_dir, parents=parents)["sources"]


def training_texts(sources: Iterable[dict]) -> Iterator[str]:
    """The text of every training record of the sources that exist (`record_text`: chat records included)."""
    from lmforge.data.dataset import Dataset, record_text

    for s in sources:
        if s.get("exists", True):
            for rec in Dataset(s["path"]).records(s.get("split", "train")):
                yield record_text(rec)


def _batches(texts: Iterable[str], max_texts: int = BATCH_TEXTS, max_chars: int = BATCH_CHARS) -> Iterator[list[str]]:
    batch, chars = [], 0
    for t in texts:
        batch.append(t)
        chars += len(t)
        if len(batch) >= max_texts or chars >= max_chars:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


# ---- the methods: each an index over the items, fed training batches ----------------------------------------


class _NgramCoverage:
    """Which of the items' word (or token) n-grams occur in the training data, by position.

    `short=True` also indexes, for an item of 1..n-1 units, its whole sequence (found when it occurs as a run of
    the same length in a training text)."""

    def __init__(self, items: Sequence[str], n: int, *, short: bool, tokenizer: Callable | None = None):
        from lmforge.curate.dedup import ngram_hashes, sorted_unique

        self.n, self.tokenizer = n, tokenizer
        self.units = self._units(items)
        counts = self.units.counts
        h, self.offsets, self.start = ngram_hashes(self.units, n, short="whole" if short else "drop")
        self.hashes = h
        self.lengths = sorted({n} | ({int(c) for c in counts if 0 < c < n} if short else set()))
        self.keys = sorted_unique(h)
        self.filter = _filter(self.keys)
        self.found = np.zeros(self.keys.size, dtype=bool)

    def _units(self, texts: Sequence[str]):
        from lmforge.curate.dedup import Words, _mix64, words

        if self.tokenizer is None:
            return words(texts)
        ids = [np.asarray(self.tokenizer(t), dtype=np.uint64).reshape(-1) for t in texts]
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum([a.size for a in ids], out=offsets[1:])
        flat = np.concatenate(ids) if ids else np.zeros(0, np.uint64)
        return Words(_mix64(flat + np.uint64(0x9E3779B97F4A7C15)), offsets)

    def feed(self, texts: Sequence[str], units=None) -> None:
        from lmforge.curate.dedup import ngram_hashes

        if self.keys.size == 0:
            return
        w = units if units is not None and self.tokenizer is None else self._units(texts)
        for m in self.lengths:
            h, _, _ = ngram_hashes(w, m, short="drop")
            _, pos = _lookup(self.keys, self.filter, h)
            self.found[pos] = True

    def gram_found(self) -> np.ndarray:
        """bool per item n-gram (in ngram_hashes' order)."""
        if self.keys.size == 0:
            return np.zeros(0, dtype=bool)
        return self.found[np.searchsorted(self.keys, self.hashes)]


_FILTER_BITS = (16, 24)


def _filter(keys: np.ndarray) -> tuple[int, np.ndarray]:
    """A bitmap over the top bits of the (few) item-side hashes: most training hashes miss it, and only the
    rest pay for a binary search (17M windows: ~0.15 s instead of ~0.9 s for searchsorted alone)."""
    bits = int(np.clip(np.ceil(np.log2(max(keys.size, 1) * 64)), *_FILTER_BITS))
    table = np.zeros(1 << bits, dtype=bool)
    table[keys >> np.uint64(64 - bits)] = True
    return bits, table


def _lookup(keys: np.ndarray, filt: tuple[int, np.ndarray], h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices into h that equal a key, the key's index for each)."""
    bits, table = filt
    cand = np.flatnonzero(table[h >> np.uint64(64 - bits)])
    pos = np.minimum(np.searchsorted(keys, h[cand]), keys.size - 1)
    hit = keys[pos] == h[cand]
    return cand[hit], pos[hit]


def _segment_sum(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum of `values` over consecutive segments of these lengths (empty segments sum to 0)."""
    seg = np.repeat(np.arange(counts.size), counts)
    return np.bincount(seg, weights=np.asarray(values, dtype=np.float64), minlength=counts.size)


class _Ngram13:
    """GPT-3: decontaminate.contaminated with the training texts as the records and the items as the eval set."""

    def __init__(self, items: Sequence[str], n: int = 13):
        self.items = [(str(i), t) for i, t in enumerate(items)]
        self.n = n
        self.dirty = np.zeros(len(items), dtype=bool)

    def feed(self, texts: Sequence[str], units=None) -> None:
        from lmforge.curate.decontaminate import contaminated

        if not self.items or self.dirty.all():
            return
        _, matches = contaminated(texts, self.items, n=self.n)
        for found in matches:
            self.dirty[[int(k) for k in found]] = True

    def result(self) -> dict:
        return {"dirty": self.dirty.copy()}


class _Palm8:
    def __init__(self, items: Sequence[str], n: int = 8, threshold: float = 0.7):
        self.cov = _NgramCoverage(items, n, short=True)
        self.threshold = threshold

    def feed(self, texts, units=None):
        self.cov.feed(texts, units)

    def result(self) -> dict:
        per_item = np.diff(self.cov.offsets)
        hit = _segment_sum(self.cov.gram_found(), per_item)
        score = np.where(per_item > 0, hit / np.maximum(per_item, 1), np.nan)
        return {"dirty": (per_item > 0) & (hit >= self.threshold * per_item - 1e-9 * per_item), "score": score}


class _Llama2:
    def __init__(self, items: Sequence[str], min_match: int = 11, dirty_at: float = 0.8, clean_below: float = 0.2,
                 tokenizer: Callable | None = None):
        self.cov = _NgramCoverage(items, min_match, short=False, tokenizer=tokenizer)
        self.min_match, self.dirty_at, self.clean_below = min_match, dirty_at, clean_below

    def feed(self, texts, units=None):
        self.cov.feed(texts, units)

    def result(self) -> dict:
        u = self.cov.units
        total = int(u.offsets[-1])
        # a token is covered when a found n-gram starts within min_match - 1 tokens before it (or at it)
        delta = np.zeros(total + 1, dtype=np.int64)
        starts = self.cov.start[self.cov.gram_found()]
        np.add.at(delta, starts, 1)
        np.add.at(delta, starts + self.min_match, -1)
        counts = u.counts
        hit = _segment_sum(np.cumsum(delta[:-1]) > 0, counts)
        score = np.where(counts > 0, hit / np.maximum(counts, 1), np.nan)
        return {"dirty": (counts > 0) & (hit >= self.dirty_at * counts - 1e-9 * counts),
                "clean": hit < self.clean_below * counts - 1e-9 * counts, "score": score}


_NOT_ALNUM = re.compile(r"[\W_]+")
_ASCII_NOT_ALNUM = bytes(b for b in range(128) if not chr(b).isalnum())


def normalise_gpt4(text: str) -> str:
    """The GPT-4 report's processing: only letters and digits are kept (spaces, punctuation, symbols removed).
    Letters and digits are Unicode's (str.isalnum); ASCII text takes a byte-level shortcut, 8x faster than re."""
    if text.isascii():
        return text.encode("ascii").translate(None, _ASCII_NOT_ALNUM).decode("ascii")
    return _NOT_ALNUM.sub("", text)


def sample_substrings(text: str, index: int, *, seed: int = 0, length: int = 50, samples: int = 3) -> list[str]:
    """The GPT-4 method's queries for item `index`: `samples` substrings of `length` characters at distinct random
    starts (numpy's generator seeded by (seed, index), so an item's draw does not depend on the other items) of the
    processed item; the whole processed item when it is not longer than `length`; none when it is empty."""
    q = normalise_gpt4(text)
    if len(q) <= length:
        return [q] if q else []
    rng = np.random.default_rng([seed, index])
    starts = rng.choice(len(q) - length + 1, size=min(samples, len(q) - length + 1), replace=False)
    return [q[s:s + length] for s in sorted(starts.tolist())]


def _prefix_hashes(codes: np.ndarray) -> np.ndarray:
    """H[k] = sum_{j<k} (c_j + 1) P^j mod 2^64, so the window [i, i+L) hashes to (H[i+L] - H[i]) P^-i."""
    from lmforge.curate.dedup import poly_powers

    pw, _ = poly_powers(codes.size)
    out = np.zeros(codes.size + 1, dtype=np.uint64)
    np.cumsum((codes.astype(np.uint64) + np.uint64(1)) * pw, out=out[1:])
    return out


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class _Substr:
    """GPT-4: the items' sampled substrings, hashed per length; every window of that length of each processed
    training batch is hashed by prefix sums, looked up, and a hit is verified on the text."""

    def __init__(self, items: Sequence[str], *, seed: int = 0, length: int = 50, samples: int = 3):
        self.length = length
        self.n_items = len(items)
        queries: list[tuple[int, str]] = []
        self.per_item = np.zeros(len(items), dtype=np.int64)
        for i, t in enumerate(items):
            picks = sample_substrings(t, i, seed=seed, length=length, samples=samples)
            queries += [(i, p) for p in picks]
            self.per_item[i] = len(picks)
        self.query_item = np.array([i for i, _ in queries], dtype=np.int64)
        self.query_text = [p for _, p in queries]
        self.found = np.zeros(len(queries), dtype=bool)
        # per query length: sorted hashes and the queries under each (CSR)
        self.index: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        qlen = np.array([len(p) for p in self.query_text], dtype=np.int64)
        qhash = np.array([_prefix_hashes(_codes(p))[-1] for p in self.query_text], dtype=np.uint64)
        for m in sorted(set(qlen.tolist())):
            sel = np.flatnonzero(qlen == m)
            order = sel[np.argsort(qhash[sel], kind="stable")]
            h = qhash[order]
            first = np.concatenate([[True], h[1:] != h[:-1]])
            self.index[m] = (h[first], np.append(np.flatnonzero(first), h.size), order)
        self.done = {m: np.zeros(keys.size, dtype=bool) for m, (keys, _, _) in self.index.items()}  # all found
        self.filters = {m: _filter(keys) for m, (keys, _, _) in self.index.items()}

    def feed(self, texts: Sequence[str], units=None) -> None:
        from lmforge.curate.dedup import poly_powers

        if not self.index or self.found.all():
            return
        s = "\x00".join(normalise_gpt4(t) for t in texts)  # NUL is no letter: a window across two texts never matches
        codes = _codes(s)
        if codes.size == 0:
            return
        big = _prefix_hashes(codes)
        _, inv = poly_powers(codes.size)
        for m, (keys, starts, order) in self.index.items():
            done = self.done[m]
            if codes.size < m or done.all():
                continue
            win = (big[m:] - big[:-m]) * inv[:codes.size - m + 1]
            at, pos = _lookup(keys, self.filters[m], win)
            keep = ~done[pos]
            for at, k in zip(at[keep].tolist(), pos[keep].tolist()):
                if done[k]:
                    continue
                qs = order[starts[k]:starts[k + 1]]
                window = s[at:at + m]
                for q in qs.tolist():
                    if window == self.query_text[q]:  # verified on the text: a hash collision never counts
                        self.found[q] = True
                done[k] = bool(self.found[qs].all())

    def result(self) -> dict:
        hit = np.bincount(self.query_item, weights=self.found, minlength=self.n_items)
        with np.errstate(invalid="ignore", divide="ignore"):
            score = np.where(self.per_item > 0, hit / np.maximum(self.per_item, 1), np.nan)
        return {"dirty": hit > 0, "score": score}


def _matchers(items: Sequence[str], methods: Sequence[str], *, seed: int, tokenizer: Callable | None) -> dict:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise DataError(f"unknown contamination method {', '.join(map(repr, unknown))}",
                        hint=f"choose from {', '.join(METHODS)}")
    make = {"ngram13": lambda: _Ngram13(items), "palm8": lambda: _Palm8(items),
            "gpt4_substr": lambda: _Substr(items, seed=seed),
            "llama2_tokens": lambda: _Llama2(items, tokenizer=tokenizer)}
    return {m: make[m]() for m in methods}


def _stream(matchers: dict, training: Iterable[str]) -> None:
    from lmforge.curate.dedup import words

    word_users = [m for m in matchers.values() if isinstance(m, (_Palm8, _Llama2))]
    for batch in _batches(training):
        units = words(batch) if word_users else None  # shared by the word-n-gram methods
        for m in matchers.values():
            m.feed(batch, units)


def _one(name: str, items, training, **kw) -> dict:
    matchers = _matchers(items, [name], seed=kw.get("seed", 0), tokenizer=kw.get("tokenizer"))
    _stream(matchers, training)
    return matchers[name].result()


def ngram13(items: Sequence[str], training: Iterable[str]) -> dict:
    """GPT-3: {"dirty": bool [items]}: the item shares a 13-word n-gram with a training text."""
    return _one("ngram13", items, training)


def palm8(items: Sequence[str], training: Iterable[str]) -> dict:
    """PaLM: {"dirty": score >= 0.7, "score": share of the item's 8-grams found in the training data}."""
    return _one("palm8", items, training)


def gpt4_substr(items: Sequence[str], training: Iterable[str], *, seed: int = 0) -> dict:
    """GPT-4: {"dirty": one of three sampled 50-character substrings is in a training text, "score": share found}."""
    return _one("gpt4_substr", items, training, seed=seed)


def llama2_tokens(items: Sequence[str], training: Iterable[str], *, tokenizer: Callable | None = None) -> dict:
    """Llama 2: {"score": share of tokens inside an >= 11-token match, "dirty": score >= 0.8, "clean": < 0.2}."""
    return _one("llama2_tokens", items, training, tokenizer=tokenizer)


# ---- agreement, verdicts, splits ------------------------------------------------------------------------------


def _kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cohen's kappa of two bool arrays; None when chance agreement is 1 (both constant and equal: undefined)."""
    if a.size == 0:
        return None
    po = float(np.mean(a == b))
    pa, pb = float(a.mean()), float(b.mean())
    pe = pa * pb + (1 - pa) * (1 - pb)
    return None if pe >= 1 - 1e-12 else (po - pe) / (1 - pe)


def agreement(dirty: dict[str, Sequence[bool]]) -> dict:
    """How far the methods agree: per-method dirty counts, the share of items on which all agree, and per pair the
    share agreeing, Cohen's kappa and the 2x2 counts. Shares are None for no items."""
    names = list(dirty)
    arr = {k: np.asarray(v, dtype=bool) for k, v in dirty.items()}
    n = len(next(iter(arr.values()))) if arr else 0
    stack = np.stack([arr[k] for k in names]) if names else np.zeros((0, n), dtype=bool)
    same = (stack.all(axis=0) | ~stack.any(axis=0)) if names else np.ones(n, dtype=bool)
    pairs = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            x, y = arr[a], arr[b]
            pairs[f"{a}|{b}"] = {"agreement": float(np.mean(x == y)) if n else None, "kappa": _kappa(x, y),
                                 "both": int((x & y).sum()), "only_" + a: int((x & ~y).sum()),
                                 "only_" + b: int((~x & y).sum()), "neither": int((~x & ~y).sum())}
    return {"items": n, "dirty_counts": {k: int(v.sum()) for k, v in arr.items()},
            "any": int(stack.any(axis=0).sum()) if names else 0,
            "all_agree": float(same.mean()) if n else None, "pairs": pairs}


def splits(dirty: Sequence) -> dict[str, list[int]]:
    """Item indices to report a score on: {"all", "clean", "dirty", "unknown"}.

    Takes `check`'s "status" (strings "clean" / "dirty" / "unknown": the honest input, since an item is clean only
    when the whole lineage was checked) or bools (True dirty, False clean; None unknown)."""
    out: dict[str, list[int]] = {"all": [], "clean": [], "dirty": [], "unknown": []}
    for i, v in enumerate(dirty):
        out["all"].append(i)
        if isinstance(v, str):
            if v not in ("clean", "dirty", "unknown"):
                raise ValueError(f"status {v!r} is not clean, dirty or unknown")
            out[v].append(i)
        else:
            out["unknown" if v is None else ("dirty" if v else "clean")].append(i)
    return out


def _jsonable(x: np.ndarray) -> list:
    if x.dtype == bool:
        return x.tolist()
    return [None if np.isnan(v) else float(v) for v in x.tolist()]


def check(items: Sequence[str], model_dir: str | Path, *, methods: Sequence[str] = METHODS, seed: int = 0,
          tokenizer: Callable | None = None, parents: bool = False) -> dict:
    """Check evaluation items against the model's training data with each method (one pass over the data).

    Returns {"model", "lineage": "complete" | "partial" | "unknown", "sources", "unchecked" (missing paths),
    "stale" (paths whose content changed), "unknown_models" ([{"model", "why"}]), "methods": {name: {"dirty",
    "score" where it applies, llama2_tokens also "clean"}}, "dirty" (by any method; None per item when the lineage
    is unknown), "status" (per item "dirty" / "clean" / "unknown"), "splits" (`splits(status)`), "agreement",
    "seconds"}. Every list is per item, JSON-ready (NaN scores as None).
    """
    t0 = time.perf_counter()
    items = list(items)
    found = lineage(model_dir, parents=parents)
    sources = found["sources"]
    unchecked = [s["path"] for s in sources if not s["exists"]]
    stale = [s["path"] for s in sources if s["stale"]]
    readable = [s for s in sources if s["exists"]]
    base = {"model": str(model_dir), "sources": sources, "unchecked": unchecked, "stale": stale,
            "unknown_models": found["unknown"]}
    if not sources:
        status = ["unknown"] * len(items)
        return {**base, "lineage": "unknown", "methods": {}, "dirty": [None] * len(items), "status": status,
                "splits": splits(status), "agreement": agreement({}), "seconds": time.perf_counter() - t0}
    matchers = _matchers(items, list(methods), seed=seed, tokenizer=tokenizer)
    _stream(matchers, training_texts(readable))
    results = {name: m.result() for name, m in matchers.items()}
    dirty = np.zeros(len(items), dtype=bool)
    for r in results.values():
        dirty |= r["dirty"]
    complete = not (unchecked or stale or found["unknown"])
    status = ["dirty" if d else ("clean" if complete else "unknown") for d in dirty.tolist()]
    return {**base, "lineage": "complete" if complete else "partial",
            "methods": {name: {k: _jsonable(v) for k, v in r.items()} for name, r in results.items()},
            "dirty": dirty.tolist(), "status": status, "splits": splits(status),
            "agreement": agreement({name: r["dirty"] for name, r in results.items()}),
            "seconds": time.perf_counter() - t0}
