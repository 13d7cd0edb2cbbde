"""Tokenize a dataset split and pack it into one flat, memory-mapped token shard per split.

Each record becomes [bos] + tokens + [eos] (bos where the tokenizer's own rule adds it, as a prompt gets it in
generation: Tokenizer.adds_bos); records are concatenated in dataset order. Shards are cached
by (dataset content hash, tokenizer hash), so a second run with the same data and tokenizer reuses them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lmforge.data.dataset import Dataset
from lmforge.io import cache_dir, sha256_file, sha256_text

PACK_VERSION = "3"  # 3: bos by Tokenizer.adds_bos


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def pack_split(dataset: Dataset, tokenizer, split: str, *, tokenizer_hash: str, progress: bool = True,
               batch_records: int = 256) -> Path:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    key = sha256_text(PACK_VERSION, dataset.content_hash, tokenizer_hash, split)[:20]
    out = cache_dir("tokens") / f"{key}-{split}.bin"
    if out.is_file() and out.with_suffix(".json").is_file():
        return out
    dtype = token_dtype(tokenizer.vocab_size)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    n_tokens = 0
    columns = [TextColumn(f"[bold]tokenize[/] {split}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    try:
        with open(tmp, "wb") as f, Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task("tokenize", total=dataset.count(split))
            texts: list[str] = []

            def write(ids):
                nonlocal n_tokens
                arr = np.asarray(ids, dtype=dtype)
                f.write(arr.tobytes())
                n_tokens += len(arr)

            def flush():
                for ids in tokenizer.encode_batch(texts):
                    write([tokenizer.bos_id] * tokenizer.adds_bos + [*ids, tokenizer.eos_id])
                bar.advance(task, len(texts))
                texts.clear()

            for rec in dataset.records(split):
                if rec.get("messages") is not None:  # chat: role markers by id, never parsed from text
                    flush()
                    write([*tokenizer.encode_chat(rec["messages"]), tokenizer.eos_id])
                    bar.advance(task)
                else:
                    texts.append(rec["text"])
                    if len(texts) >= batch_records:
                        flush()
            flush()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {"tokens": n_tokens, "dtype": np.dtype(dtype).name, "split": split, "dataset": dataset.content_hash,
            "tokenizer": tokenizer_hash}
    out.with_suffix(".json").write_text(json.dumps(meta) + "\n")
    return out


def open_tokens(path: Path) -> np.memmap:
    meta = json.loads(path.with_suffix(".json").read_text())
    return np.memmap(path, dtype=meta["dtype"], mode="r")


def tokenizer_hash(tokenizer_dir: Path) -> str:
    return sha256_file(Path(tokenizer_dir) / "tokenizer.json")
