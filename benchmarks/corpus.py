"""The benchmarks' shared corpus: the running Python's standard library as words, and seeded word edits."""

from __future__ import annotations

import random
from pathlib import Path


def stdlib_tokens() -> list[str]:
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    toks: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts:
            continue
        try:
            toks += path.read_text(encoding="utf-8").split()
        except (UnicodeDecodeError, OSError):
            continue
    return toks


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
