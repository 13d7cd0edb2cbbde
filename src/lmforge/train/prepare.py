"""Resolve what a recipe names into things on disk: the dataset, the tokenizer, the packed tokens.

Everything derived is cached by content hash, so the first run of a recipe on a fresh machine prepares
what it needs and later runs start training at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmforge.data.dataset import Dataset
from lmforge.errors import RecipeError
from lmforge.io import atomic_dir, cache_dir, sha256_text
from lmforge.model.tokenizer import Tokenizer


@dataclass
class Source:
    """One training source, packed: its dataset and its train split's tokens and loss mask."""
    spec: object          # recipe.SourceSpec
    dataset: Dataset
    train_tokens: np.ndarray
    train_mask: np.ndarray | None


@dataclass
class Prepared:
    dataset: Dataset      # the first source's: validation and lineage come from it
    tokenizer: Tokenizer
    tokenizer_dir: Path
    train_tokens: np.ndarray
    val_tokens: np.ndarray
    sources: list[Source] = field(default_factory=list)
    val_mask: np.ndarray | None = None


def resolve_dataset(spec, progress: bool = True) -> Dataset:
    if spec.corpus:
        from lmforge.data.corpora import cached_corpus

        return Dataset(cached_corpus(spec.corpus, progress=progress))
    return Dataset(spec.path)


def dataset_texts(dataset: Dataset, split: str | None = "train"):
    for rec in dataset.records(split):
        if rec.get("messages") is not None:
            yield "\n".join(m["content"] for m in rec["messages"])
        else:
            yield rec["text"]


def train_tokenizer(dataset: Dataset, out: str | Path, vocab_size: int, *, min_frequency: int = 2,
                    overwrite: bool = False, progress: bool = True) -> Tokenizer:
    """Train a byte-level BPE on the dataset's train split and write it to `out` (atomically)."""
    with atomic_dir(out, overwrite=overwrite) as tmp:
        tok = Tokenizer.train(dataset_texts(dataset), vocab_size, min_frequency=min_frequency,
                              length=dataset.count("train"), show_progress=progress)
        tok.save(tmp)
    return Tokenizer.from_dir(out)


def resolve_tokenizer(spec, dataset: Dataset, progress: bool = True) -> Path:
    if spec.path:
        path = Path(spec.path)
        Tokenizer.from_dir(path)  # fails early with a clear message if it is not a tokenizer
        return path
    key = sha256_text("bpe-v1", dataset.content_hash, str(spec.vocab_size), str(spec.min_frequency))[:16]
    path = cache_dir("tokenizers") / f"bpe-{spec.vocab_size}-{key}"
    if not (path / "tokenizer.json").is_file():
        train_tokenizer(dataset, path, spec.vocab_size, min_frequency=spec.min_frequency, overwrite=True,
                        progress=progress)
    return path


def prepare(recipe, progress: bool = True) -> Prepared:
    """Every source packed with one tokenizer: `tokenizer.path`, the one trained on the first source, or, with
    `init_from`, that model's own."""
    from lmforge.data.pack import open_mask, open_tokens, pack_split, tokenizer_hash

    specs = recipe.data.sources()
    datasets = [resolve_dataset(spec, progress) for spec in specs]
    if recipe.init_from is not None:
        tok_dir = Path(recipe.init_from)
        if not (tok_dir / "tokenizer.json").is_file():
            raise RecipeError("init_from has no tokenizer.json", where=str(tok_dir),
                              hint="init_from must be a Hugging Face model directory saved with its tokenizer")
    else:
        tok_dir = resolve_tokenizer(recipe.tokenizer, datasets[0], progress)
    tokenizer = Tokenizer.from_dir(tok_dir)
    if "vocab_size" in recipe.model.model_fields_set and recipe.model.vocab_size != tokenizer.vocab_size:
        raise RecipeError(f"model.vocab_size is {recipe.model.vocab_size} but the tokenizer has "
                          f"{tokenizer.vocab_size} tokens", hint="remove model.vocab_size; it follows the tokenizer")
    if datasets[0].count("validation") == 0:
        raise RecipeError("the dataset has no validation split", where=str(datasets[0].path),
                          hint="ingest it with --val-fraction above 0")
    th = tokenizer_hash(tok_dir)

    def packed(dataset, split):
        path = pack_split(dataset, tokenizer, split, tokenizer_hash=th, progress=progress)
        return open_tokens(path), open_mask(path)

    sources = [Source(spec, ds, *packed(ds, "train")) for spec, ds in zip(specs, datasets)]
    val_tokens, val_mask = packed(datasets[0], "validation")
    return Prepared(datasets[0], tokenizer, tok_dir, sources[0].train_tokens, val_tokens, sources, val_mask)
