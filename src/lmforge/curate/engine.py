"""Where the heavy, record-parallel stages run: in this process ("local") or as Ray Data pipelines ("ray").

Both engines cut the records into the same fixed chunks and call the same pure batch functions on them, so
their results are identical; Ray only decides where the chunks run."""

from __future__ import annotations

import numpy as np

from lmforge.errors import LmforgeError

ENGINES = ("local", "ray")


class LocalEngine:
    name = "local"

    def embed(self, texts: list[str], *, model=None, max_seq_length: int = 256, cache_key: str | None = None,
              progress: bool = True) -> np.ndarray:
        from lmforge.curate.embed import embed_texts

        return embed_texts(texts, model=model, max_seq_length=max_seq_length, cache_key=cache_key,
                           progress=progress)

    def minhash(self, texts: list[str], *, num_perm: int = 128, ngram: int = 5, seed: int = 0) -> np.ndarray:
        from lmforge.curate.dedup import minhash_signatures

        return minhash_signatures(texts, num_perm=num_perm, ngram=ngram, seed=seed, threads=0)


def get_engine(name: str):
    if name == "local":
        return LocalEngine()
    if name == "ray":
        from lmforge.curate.ray_engine import RayEngine

        return RayEngine()
    raise LmforgeError(f"unknown engine {name!r}", hint=f"use one of: {', '.join(ENGINES)}")
