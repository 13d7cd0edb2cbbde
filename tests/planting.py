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


def tokenizer_as_written_before_bos_rule(src, dst):
    """Copy an lmforge tokenizer directory as lmforge's writer saved it before it wrote its BOS rule: no
    post-processor in tokenizer.json and `add_bos_token: false`, although the trainer prepended BOS."""
    import json
    import shutil

    shutil.copytree(src, dst)
    file = dst / "tokenizer.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "post_processor": None}))
    config = dst / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "add_bos_token": False, "add_eos_token": False}))
    return dst
