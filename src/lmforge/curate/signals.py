"""Per-record signals for the map and for curation rules: length, word count, repetition, short answers.

Definitions (each is what the studio shows and what a curation rule filters on):
  length       characters of the record's text (`record_text`: a chat's message contents joined by newlines).
  words        whitespace-separated tokens of that text (`len(text.split())`, like `wc -w`).
  repetition   the fraction of word characters that lie inside a word 5-gram occurring more than once in the
               record — Gopher's "fraction of characters in duplicate n-grams" (Rae et al. 2021, MassiveText
               quality filter) at n=5, counting every occurrence as RedPajama-V2's `rps_doc_frac_chars_dupe_5grams`
               does. Words are those of dedup.py (lowercased runs of letters, digits, `_`; punctuation only
               separates). 0 = no 5-gram repeats; 1 = every word is inside some repeated 5-gram.
  short_answer a chat record with an assistant reply of fewer than `min_words` words (see `short_answers`).
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np


def lengths(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(characters int32 [n], whitespace-separated words int32 [n])."""
    chars = np.fromiter((len(t) for t in texts), dtype=np.int32, count=len(texts))
    words = np.fromiter((len(t.split()) for t in texts), dtype=np.int32, count=len(texts))
    return chars, words


def repetition_ratio(texts: Sequence[str], *, n: int = 5, batch: int = 4096) -> np.ndarray:
    """Fraction of word characters inside a word n-gram that occurs at least twice in the same record
    (float32 [len(texts)] in [0, 1]; 0 for a record of fewer than n words). Vectorised over batches."""
    out = np.zeros(len(texts), dtype=np.float32)
    for s in range(0, len(texts), batch):
        out[s:s + batch] = _repetition_batch(texts[s:s + batch], n)
    return out


def _repetition_batch(texts: Sequence[str], n: int) -> np.ndarray:
    from lmforge.curate.dedup import ngram_hashes, words

    w = words(texts, chars=True)
    h, offsets, start = ngram_hashes(w, n, short="drop")
    word_doc = np.repeat(np.arange(len(texts)), np.diff(w.offsets))
    total = np.bincount(word_doc, weights=w.chars, minlength=len(texts))
    if h.size == 0:
        return np.zeros(len(texts), dtype=np.float32)
    doc = np.repeat(np.arange(len(texts)), np.diff(offsets))
    # an n-gram repeats when another n-gram of the same record has the same hash: sort by (record, hash)
    order = np.lexsort((h, doc))
    hs, ds = h[order], doc[order]
    same = (hs[1:] == hs[:-1]) & (ds[1:] == ds[:-1])
    dup = np.zeros(h.size, dtype=bool)
    dup[order[1:][same]] = True
    dup[order[:-1][same]] = True
    # words covered by a repeated n-gram: +1 at its first word, -1 after its last, running sum > 0
    cover = np.zeros(w.hash.size + 1, dtype=np.int32)
    np.add.at(cover, start[dup], 1)
    np.add.at(cover, start[dup] + n, -1)
    covered = np.cumsum(cover[:-1]) > 0
    rep_chars = np.bincount(word_doc, weights=np.where(covered, w.chars, 0), minlength=len(texts))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(total > 0, rep_chars / np.maximum(total, 1), 0.0)
    return np.clip(ratio, 0, 1).astype(np.float32)


# Instruction/response layouts recognised in plain-text records: (prompt marker, response marker). The response
# is the text after the last response marker that follows a prompt marker.
_LAYOUTS = [
    (re.compile(r"(?im)^\s*###\s*(?:instruction|input|question|human|user)\b"),
     re.compile(r"(?im)^\s*###\s*(?:response|answer|output|assistant)\b\s*:?")),
    (re.compile(r"(?im)^\s*(?:human|user)\s*:"), re.compile(r"(?im)^\s*(?:assistant|ai|bot)\s*:")),
    (re.compile(r"(?im)^\s*(?:question|q)\s*:"), re.compile(r"(?im)^\s*(?:answer|a)\s*:")),
    (re.compile(r"<\|user\|>"), re.compile(r"<\|assistant\|>")),
    (re.compile(r"\[INST\]"), re.compile(r"\[/INST\]")),
]


def _text_response(text: str) -> str | None:
    """The response part of a plain-text record in a recognised instruction/response layout, else None."""
    for prompt, response in _LAYOUTS:
        p = prompt.search(text)
        if not p:
            continue
        last = None
        for last in response.finditer(text, p.end()):
            pass
        if last is not None:
            return text[last.end():]
    return None


def short_answers(records: Sequence[dict], *, min_words: int = 5, last_only: bool = False) -> np.ndarray:
    """bool [n]: the record's answer has fewer than `min_words` whitespace-separated words.

    Chat records (`messages`): any assistant message (only the last one with `last_only=True`) is short. A chat
    without an assistant message is not flagged. Plain-text records: flagged only when the text has a recognised
    instruction/response layout (Alpaca's `### Instruction:` ... `### Response:`, `User:`/`Human:` ...
    `Assistant:`, `Question:` ... `Answer:`, `<|user|>` ... `<|assistant|>`, `[INST]` ... `[/INST]`, markers at a
    line start) and the text after the last response marker is short. Any other text record (prose, code) is
    never flagged: it has no answer to be short.
    """
    out = np.zeros(len(records), dtype=bool)
    for i, rec in enumerate(records):
        messages = rec.get("messages")
        if messages is not None:
            replies = [m.get("content") or "" for m in messages if m.get("role") == "assistant"]
            if last_only:
                replies = replies[-1:]
            out[i] = any(len(r.split()) < min_words for r in replies)
        elif rec.get("text") is not None:
            answer = _text_response(rec["text"])
            out[i] = answer is not None and len(answer.split()) < min_words
    return out
