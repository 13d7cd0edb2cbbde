"""Tokenize a dataset split and pack it into one flat, memory-mapped token shard per split, with a loss-mask
shard beside it.

Each text record becomes [bos] + tokens + [eos] (bos where the tokenizer's own rule adds it, as a prompt gets it
in generation: Tokenizer.adds_bos); each chat record its chat-template rendering (data/chat.py: render_chat)
followed by eos (unless the rendering already ends with it). Records are concatenated in dataset order.

The mask (`<key>-<split>.mask.bin`, uint8, one byte per token, always written) says whether token i is a
training target, i.e. whether the loss counts the prediction of token i from the tokens before it:
- text records: every token but BOS (BOS starts a document; nothing before it predicts it);
- chat records: only what the assistant wrote (its content and the token that closes its turn, <|end|> for
  lmforge's template); never BOS, role markers, system or user text, nor the eos after the conversation (a
  chat's end is the user's choice; the assistant stops with its end-of-turn token).

Shards are cached by (dataset content hash, tokenizer hash), so a second run with the same data and tokenizer
reuses them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lmforge.data.dataset import Dataset
from lmforge.io import cache_dir, sha256_file, sha256_text

PACK_VERSION = "4"  # 3: bos by Tokenizer.adds_bos; 4: the loss-mask shard, chats by render_chat


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def mask_path(tokens_path: Path) -> Path:
    """Where the loss mask of a token shard lives: `<key>-<split>.mask.bin` beside `<key>-<split>.bin`."""
    return Path(tokens_path).with_suffix(".mask.bin")


def pack_split(dataset: Dataset, tokenizer, split: str, *, tokenizer_hash: str, progress: bool = True,
               batch_records: int = 256) -> Path:
    """The token shard of `split` (built on first use); its mask is at mask_path(), its facts in `.json`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from lmforge.data.chat import render_chat

    # a foreign chat template shapes the chat tokens but lives outside tokenizer.json, so it is keyed too
    template = [] if tokenizer.has_lmforge_chat else [tokenizer.chat_template or ""]
    key = sha256_text(PACK_VERSION, dataset.content_hash, tokenizer_hash, split, *template)[:20]
    out = cache_dir("tokens") / f"{key}-{split}.bin"
    meta_file, mask_file = out.with_suffix(".json"), mask_path(out)
    if out.is_file() and mask_file.is_file() and meta_file.is_file():
        return out
    dtype = token_dtype(tokenizer.vocab_size)
    tmp = {p: p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in (out, mask_file, meta_file)}
    counts = {"tokens": 0, "targets": 0, "text": 0, "chat": 0}
    bos = [tokenizer.bos_id] * tokenizer.adds_bos
    columns = [TextColumn(f"[bold]tokenize[/] {split}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    try:
        with open(tmp[out], "wb") as f, open(tmp[mask_file], "wb") as fm, \
                Progress(*columns, disable=not progress, transient=True) as bar:
            task = bar.add_task("tokenize", total=dataset.count(split))
            texts: list[str] = []

            def write(ids, mask):
                arr = np.asarray(ids, dtype=dtype)
                targets = np.asarray(mask, dtype=np.uint8)
                assert len(arr) == len(targets)
                f.write(arr.tobytes())
                fm.write(targets.tobytes())
                counts["tokens"] += len(arr)
                counts["targets"] += int(targets.sum())

            def flush():
                for ids in tokenizer.encode_batch(texts):
                    write([*bos, *ids, tokenizer.eos_id], [False] * len(bos) + [True] * (len(ids) + 1))
                counts["text"] += len(texts)
                bar.advance(task, len(texts))
                texts.clear()

            for rec in dataset.records(split):
                if rec.get("messages") is not None:  # chat: lmforge's role markers by id, never parsed from text
                    flush()
                    ids, mask = render_chat(tokenizer, rec["messages"])
                    if tokenizer.eos_id is not None and ids[-1:] != [tokenizer.eos_id]:
                        ids, mask = [*ids, tokenizer.eos_id], [*mask, False]
                    write(ids, mask)
                    counts["chat"] += 1
                    bar.advance(task)
                else:
                    texts.append(rec["text"])
                    if len(texts) >= batch_records:
                        flush()
            flush()
        meta = {**counts, "dtype": np.dtype(dtype).name, "mask": mask_file.name, "split": split,
                "dataset": dataset.content_hash, "tokenizer": tokenizer_hash, "version": PACK_VERSION}
        tmp[meta_file].write_text(json.dumps(meta) + "\n")
        for final in (out, mask_file, meta_file):  # the meta file last: it says the other two are complete
            os.replace(tmp[final], final)
    finally:
        for t in tmp.values():
            t.unlink(missing_ok=True)
    return out


def open_tokens(path: Path) -> np.memmap:
    meta = json.loads(path.with_suffix(".json").read_text())
    return np.memmap(path, dtype=meta["dtype"], mode="r")


def open_mask(path: Path) -> np.memmap | None:
    """The loss mask of the token shard at `path` (uint8, 1 where the token is a training target, same length
    as open_tokens(path)), or None for a shard written without one."""
    file = mask_path(path)
    if not file.is_file():
        return None
    if file.stat().st_size == 0:  # np.memmap cannot map an empty file
        return np.zeros(0, dtype=np.uint8)
    return np.memmap(file, dtype=np.uint8, mode="r")


def tokenizer_hash(tokenizer_dir: Path) -> str:
    return sha256_file(Path(tokenizer_dir) / "tokenizer.json")
