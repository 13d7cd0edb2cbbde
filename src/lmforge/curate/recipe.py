"""Curation recipes: an ordered list of steps, each a one-key mapping (`- near_dedup: {threshold: 0.8}`).
Unknown steps and keys are errors that list the valid ones."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_serializer, model_validator

from lmforge.config import Strict, apply_override, load_yaml, validate


class ExactDedup(Strict):
    normalize: bool = Field(True, description="compare after trimming and collapsing whitespace")


class NearDedup(Strict):
    threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity of word n-gram sets")
    num_perm: int = Field(128, ge=16, le=1024)
    ngram: int = Field(5, ge=1)


class SemanticDedup(Strict):
    threshold: float = Field(0.95, gt=0, le=1, description="cosine similarity of sentence embeddings")


class Length(Strict):
    min_chars: int = Field(0, ge=0)
    max_chars: int | None = Field(None, gt=0)
    min_words: int = Field(0, ge=0)


class ShortAnswer(Strict):
    min_words: int = Field(5, ge=1, description="assistant replies with fewer words are short answers")


class Repetition(Strict):
    max_ratio: float = Field(0.3, ge=0, le=1, description="drop records whose repetition ratio is above this")


class RemoveTags(Strict):
    tags: list[str] = Field(min_length=1, description="tags made on the studio page (stored in the map)")


class TopicCap(Strict):
    max_share: float = Field(gt=0, le=1, description="no topic above this share of the curated dataset")
    level: int = Field(0, ge=0, description="cluster level of the map: 0 is the coarsest")


class Decontaminate(Strict):
    against: list[str] = Field(["humaneval"], min_length=1,
                               description="evaluation sets: 'humaneval', a JSONL file or a dataset directory")
    n: int = Field(13, ge=1, description="n-gram length in words")


STEP_TYPES: dict[str, type[Strict]] = {
    "exact_dedup": ExactDedup, "near_dedup": NearDedup, "semantic_dedup": SemanticDedup, "length": Length,
    "short_answer": ShortAnswer, "repetition": Repetition, "remove_tags": RemoveTags, "topic_cap": TopicCap,
    "decontaminate": Decontaminate,
}


class Step(Strict):
    """One step: exactly one of the keys below."""

    exact_dedup: ExactDedup | None = None
    near_dedup: NearDedup | None = None
    semantic_dedup: SemanticDedup | None = None
    length: Length | None = None
    short_answer: ShortAnswer | None = None
    repetition: Repetition | None = None
    remove_tags: RemoveTags | None = None
    topic_cap: TopicCap | None = None
    decontaminate: Decontaminate | None = None

    @model_validator(mode="before")
    @classmethod
    def _empty_means_defaults(cls, data):
        # `- exact_dedup:` (no parameters) parses as None; it means "with the defaults".
        if isinstance(data, str):
            data = {data: {}}
        if isinstance(data, dict):
            data = {k: ({} if v is None else v) for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _exactly_one(self) -> "Step":
        given = [k for k in STEP_TYPES if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a step is one of {', '.join(STEP_TYPES)}; got {given or 'none'}")
        return self

    @model_serializer(mode="wrap")
    def _as_one_key(self, handler):
        # Dumped as written (`{near_dedup: {...}}`), so a saved recipe validates again.
        return {self.kind: handler(self)[self.kind]}

    @property
    def kind(self) -> str:
        return next(k for k in STEP_TYPES if getattr(self, k) is not None)

    @property
    def params(self) -> Strict:
        return getattr(self, self.kind)


class EmbeddingSpec(Strict):
    model: str | None = Field(None, description="a local sentence-transformers directory; default: all-MiniLM-L6-v2")
    max_seq_length: int = Field(256, gt=0)


class CurateRecipe(Strict):
    name: str = "curate"
    seed: int = 0
    map: str | None = Field(None, description="the dataset's map (`lmforge map`): clusters, tags, embeddings")
    embedding: EmbeddingSpec = EmbeddingSpec()
    steps: list[Step] = Field(min_length=1)


def load_curate_recipe(path: str | Path, overrides: list[str] | None = None) -> CurateRecipe:
    data = load_yaml(path)
    data.setdefault("name", Path(path).stem)
    for assignment in overrides or []:
        apply_override(data, assignment)
    return validate(CurateRecipe, data, str(path))
