"""Helpers that plant known problems into real text for the detector tests."""

from __future__ import annotations

import random


def edit_words(text: str, rate: float, rng: random.Random, vocab: list[str]) -> str:
    """Replace, delete or insert each whitespace word with probability `rate`."""
    out = []
    for tok in text.split():
        if rng.random() < rate:
            op = rng.randrange(3)
            if op == 0:
                out.append(rng.choice(vocab))
            elif op == 2:
                out += [tok, rng.choice(vocab)]
        else:
            out.append(tok)
    return " ".join(out)
