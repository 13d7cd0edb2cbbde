"""Training recipes: YAML validated by pydantic. Unknown keys are errors that list the valid keys."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from lmforge.config import Strict, apply_override, dump, load_yaml, validate
from lmforge.model.config import ModelConfig


class DataSpec(Strict):
    path: str | None = Field(None, description="a dataset directory written by `lmforge data ingest`")
    corpus: Literal["python-stdlib"] | None = Field(None, description="an embedded corpus, built and cached")

    @model_validator(mode="after")
    def _one(self) -> "DataSpec":
        if (self.path is None) == (self.corpus is None):
            raise ValueError("give exactly one of data.path or data.corpus")
        return self


class TokenizerSpec(Strict):
    path: str | None = Field(None, description="a directory with tokenizer.json")
    vocab_size: int | None = Field(None, gt=0, description="train a byte-level BPE of this size on the data")
    min_frequency: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _one(self) -> "TokenizerSpec":
        if (self.path is None) == (self.vocab_size is None):
            raise ValueError("give exactly one of tokenizer.path or tokenizer.vocab_size")
        return self


class TrainSpec(Strict):
    seq_len: int = Field(256, gt=0)
    micro_batch_size: int = Field(16, gt=0)
    grad_accum: int = Field(1, gt=0)
    max_steps: int = Field(1000, gt=0)
    lr: float = Field(3e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.95)
    optimizer: Literal["adamw", "muon"] = Field(
        "adamw", description="muon: Muon on hidden matrices, AdamW on embeddings and norms")
    muon_momentum: float = Field(0.95, ge=0, lt=1)
    grad_clip: float = Field(1.0, ge=0, description="0 disables clipping")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast where the hardware computes bf16 natively, else fp32")
    compile: bool = Field(True, description="torch.compile the model (falls back to eager if it cannot)")
    eval_interval: int = Field(200, gt=0)
    eval_tokens: int = Field(32768, gt=0, description="validation tokens per periodic evaluation")
    final_eval_tokens: int = Field(1_000_000, gt=0, description="validation tokens for the final evaluation")
    checkpoint_interval: int = Field(500, gt=0)
    keep_checkpoints: int = Field(2, gt=0)
    log_interval: int = Field(10, gt=0)
    threads: int | None = Field(None, gt=0, description="CPU threads; default: all cores")


class Recipe(Strict):
    name: str = "run"
    seed: int = 1337
    data: DataSpec
    tokenizer: TokenizerSpec
    model: ModelConfig = ModelConfig()
    train: TrainSpec = TrainSpec()


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    data = load_yaml(path)
    data.setdefault("name", path.stem)
    for assignment in overrides or []:
        apply_override(data, assignment)
    return parse_recipe(data, str(path))


def parse_recipe(data: dict, source: str = "recipe") -> Recipe:
    return validate(Recipe, data, source)


def dump_recipe(recipe: Recipe) -> str:
    return dump(recipe)
