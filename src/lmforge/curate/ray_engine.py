"""The Ray engine: the same chunks and batch functions as the local engine, run as Ray Data pipelines.

Connects to the cluster named by `RAY_ADDRESS` (e.g. `ray://head:10001` or `auto` on a cluster node), or
starts a local Ray instance. Chunks are tagged with their position and reassembled in order, so results do
not depend on which worker ran what."""

from __future__ import annotations

import os

import numpy as np

from lmforge.errors import LmforgeError

MINHASH_CHUNK = 4096   # records per Ray batch
EMBED_CHUNK = 256


def _init_ray():
    try:
        import ray
    except ImportError:
        raise LmforgeError("--engine ray needs Ray", hint="pip install 'lmforge[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)   # one INFO line per pipeline otherwise
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


def _minhash_batch(batch: dict, *, num_perm: int, ngram: int, seed: int) -> dict:
    from lmforge.curate.dedup import minhash_signatures

    texts = [str(t) for t in batch["text"]]
    return {"row": batch["row"], "sig": minhash_signatures(texts, num_perm=num_perm, ngram=ngram, seed=seed)}


class RayEngine:
    name = "ray"

    def __init__(self):
        self.ray = _init_ray()

    def _rows(self, texts: list[str]):
        return self.ray.data.from_items([{"row": i, "text": t} for i, t in enumerate(texts)])

    @staticmethod
    def _in_order(batches, n: int, column: str) -> np.ndarray:
        rows = np.concatenate([b["row"] for b in batches])
        values = np.concatenate([b[column] for b in batches])
        order = np.argsort(rows, kind="stable")
        if not np.array_equal(rows[order], np.arange(n)):
            raise RuntimeError("the Ray pipeline lost or duplicated rows")
        return values[order]

    def minhash(self, texts: list[str], *, num_perm: int = 128, ngram: int = 5, seed: int = 0) -> np.ndarray:
        ds = self._rows(texts).map_batches(_minhash_batch, batch_size=MINHASH_CHUNK, batch_format="numpy",
                                           fn_kwargs={"num_perm": num_perm, "ngram": ngram, "seed": seed})
        return self._in_order(list(ds.iter_batches(batch_format="numpy", batch_size=None)), len(texts), "sig")

    def embed(self, texts: list[str], *, model=None, max_seq_length: int = 256, cache_key: str | None = None,
              progress: bool = True) -> np.ndarray:
        """embed.embed_texts's result and cache entry, computed by Ray workers (one model load per worker)."""
        from lmforge.curate import embed as E

        embedder = E.get_embedder(model, max_seq_length=max_seq_length)   # resolves the model, exports it once
        path = E.cache_path(cache_key, embedder) if cache_key is not None else None
        if path is not None and path.is_file():
            cached = np.load(path, mmap_mode="r")
            if cached.shape == (len(texts), embedder.dim):
                return cached
        ds = self._rows(texts).map_batches(_embed_batch, batch_size=EMBED_CHUNK, batch_format="numpy",
                                           fn_kwargs={"model": model, "max_seq_length": max_seq_length,
                                                      "quantize": embedder.quantize})
        out = self._in_order(list(ds.iter_batches(batch_format="numpy", batch_size=None)), len(texts), "emb")
        out = np.ascontiguousarray(out, dtype=np.float32)
        if path is not None:
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.ray.tmp.npy")
            np.save(tmp, out)
            os.replace(tmp, path)
        return out



def _embed_batch(batch: dict, *, model, max_seq_length: int, quantize: str) -> dict:
    from lmforge.curate.embed import embed_batch

    texts = [str(t) for t in batch["text"]]
    return {"row": batch["row"], "emb": embed_batch(texts, model=model, max_seq_length=max_seq_length,
                                                    quantize=quantize)}
