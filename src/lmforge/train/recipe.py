"""Training recipes: YAML validated by pydantic. Unknown keys are errors that list the valid keys.

Also the recipe files of a run directory: `recipe.yaml` (the resolved recipe, the source of truth on
`--resume`) and `overrides.yaml` (the recipe file the run was started from and every override since, so
that resuming with that file and no `--set` continues the saved run rather than undoing its overrides).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from lmforge.config import Strict, apply_override, load_yaml, validate
from lmforge.errors import RecipeError
from lmforge.io import atomic_write_text
from lmforge.model.config import ModelConfig
from lmforge.model.lora import LoRAConfig

RUN_RECIPE = "recipe.yaml"
RUN_OVERRIDES = "overrides.yaml"
# Keys that cannot change the trajectory already run: the only ones --resume may change.
RESUMABLE = ("name", "train.max_steps", "train.eval_interval", "train.eval_tokens", "train.final_eval_tokens",
             "train.checkpoint_interval", "train.keep_checkpoints", "train.keep_best", "train.log_interval",
             "train.threads", "train.trackers")


CORPUS = Literal["python-stdlib", "python-stdlib-instruct"]


class SourceSpec(Strict):
    """One dataset of a mixture."""
    ALTERNATIVES = (("path", "corpus"),)
    path: str | None = Field(None, description="a dataset directory written by `lmforge data ingest`")
    corpus: CORPUS | None = Field(None, description="an embedded corpus, built and cached")
    weight: float = Field(1.0, gt=0, description="share of training rows drawn from this source (normalised)")
    max_tokens: int | None = Field(None, gt=0, description="use only the first N packed train tokens of it")
    name: str | None = Field(None, description="how logs name it (default: the corpus or the folder's name)")

    def label(self) -> str:
        return self.name or self.corpus or Path(self.path).name


class DataSpec(Strict):
    ALTERNATIVES = (("path", "corpus", "mix"),)
    path: str | None = Field(None, description="a dataset directory written by `lmforge data ingest`")
    corpus: CORPUS | None = Field(None, description="an embedded corpus, built and cached")
    mix: list[SourceSpec] | None = Field(None, description="several datasets sampled by weight (text and chat "
                                                           "may mix); validation is the first source's")

    def sources(self) -> list[SourceSpec]:
        if self.mix is not None:
            return self.mix
        return [SourceSpec(path=self.path, corpus=self.corpus)]


class TokenizerSpec(Strict):
    ALTERNATIVES = (("path", "vocab_size"),)
    path: str | None = Field(None, description="a directory with tokenizer.json")
    vocab_size: int | None = Field(None, gt=0, description="train a byte-level BPE of this size on the data")
    min_frequency: int = Field(2, ge=1)


class SpikeGuardSpec(Strict):
    enabled: bool = Field(True, description="roll back and skip data on a loss spike (methods/spike_guard.py)")
    z: float = Field(6.0, gt=0, description="a spike is this many standard deviations above the running mean")
    window: int = Field(50, gt=1, description="steps in the running mean and deviation")
    min_history: int = Field(20, gt=1, description="steps seen before a finite loss can count as a spike")
    min_rise: float = Field(0.1, ge=0, description="... and at least this much above the mean, relatively")
    lr_factor: float = Field(0.5, gt=0, le=1, description="learning-rate scale after a rollback")
    cooldown_steps: int = Field(100, ge=0, description="steps the lowered learning rate lasts")
    max_rollbacks: int = Field(5, ge=0, description="then stop with an error: the run diverges")


class TrainSpec(Strict):
    seq_len: int = Field(256, gt=0)
    micro_batch_size: int = Field(16, gt=0, description="rows per micro-batch, per process")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
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
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast where the hardware computes bf16 natively, else fp32")
    compile: bool = Field(True, description="torch.compile the model (eager, with a warning, if the compiler fails)")
    activation_checkpointing: bool = Field(False, description="recompute each block's activations in the "
                                                              "backward pass: less memory, ~30% more compute")
    eval_interval: int = Field(200, gt=0)
    eval_tokens: int = Field(32768, gt=0, description="validation tokens per periodic evaluation")
    final_eval_tokens: int = Field(1_000_000, gt=0, description="validation tokens for the final evaluation")
    checkpoint_interval: int = Field(500, gt=0, description="steps between checkpoints (--checkpoint-every)")
    keep_checkpoints: int = Field(2, gt=0, description="newest checkpoints kept")
    keep_best: bool = Field(True, description="also keep the checkpoint with the lowest validation loss")
    log_interval: int = Field(10, gt=0)
    threads: int | None = Field(None, gt=0, description="CPU threads; default: all cores (divided among processes)")
    spike_guard: SpikeGuardSpec = SpikeGuardSpec()
    trackers: list[Literal["mlflow", "wandb"]] = Field(
        [], description="trackers besides TensorBoard (always on): mlflow, wandb (offline)")


class DistillSpec(Strict):
    """Train the model on a teacher's logits as well as on the data (Hinton et al. 2015)."""
    teacher: str = Field(..., description="the teacher's model directory (same tokenizer: set tokenizer.path "
                                          "to it, or init_from a model that shares it)")
    temperature: float = Field(2.0, gt=0, description="both distributions are softened by this before the KL")
    weight: float = Field(0.5, ge=0, le=1, description="share of the KL term; cross-entropy gets 1 - weight")
    kind: Literal["forward", "reverse"] = Field(
        "forward", description="forward: KL(teacher || student), covers the teacher's modes; reverse: "
                               "KL(student || teacher), seeks its main one")


class Recipe(Strict):
    name: str = "run"
    seed: int = 1337
    init_from: str | None = Field(None, description="start from this local Hugging Face Llama-family model "
                                                    "directory (its weights, tokenizer and chat template)")
    data: DataSpec
    tokenizer: TokenizerSpec | None = Field(None, description="required unless init_from gives the tokenizer")
    model: ModelConfig = ModelConfig()
    train: TrainSpec = TrainSpec()
    lora: LoRAConfig | None = Field(None, description="train low-rank adapters on a frozen init_from base "
                                                      "instead of every weight (writes RUN/adapter/ too)")
    distill: DistillSpec | None = Field(None, description="learn from a teacher model's logits too")
    mask: str | None = Field(None, description="a pruning mask (mask.safetensors from `lmforge prune`) held fixed "
                                               "while training: pruned weights stay exactly zero")

    @model_validator(mode="after")
    def _tokenizer_and_model_source(self):
        if self.lora is not None and self.mask is not None:
            raise PydanticCustomError("mask", "mask and lora do not combine: merged adapters would fill the "
                                      "pruned weights; retrain the pruned model fully, or adapt the dense one")
        if self.lora is not None and self.init_from is None:
            raise PydanticCustomError("lora", "a lora: section adapts a base model: set init_from to its directory")
        if self.init_from is None and self.tokenizer is None:
            raise PydanticCustomError("tokenizer", "a recipe needs a tokenizer section (path or vocab_size) "
                                      "unless init_from names a model directory")
        if self.init_from is not None:
            given = [k for k in ("tokenizer", "model") if k in self.model_fields_set]
            if given:
                raise PydanticCustomError("init_from", "init_from brings its own tokenizer and model "
                                          "configuration: remove {keys}", {"keys": ", ".join(given)})
        return self


def _recipe_data(path: str | Path) -> dict:
    data = load_yaml(path)
    data.setdefault("name", Path(path).stem)
    return data


def _override(data: dict, overrides: list[str]) -> dict:
    for assignment in overrides:
        apply_override(data, assignment, Recipe)
    return data


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    return parse_recipe(_override(_recipe_data(path), overrides or []), str(path))


def parse_recipe(data: dict, source: str = "recipe") -> Recipe:
    return validate(Recipe, data, source)


# Model keys that follow the tokenizer (trainer.build_model): a dump names them only where the recipe set
# them, so that a saved recipe.yaml loads again as the same recipe for any tokenizer.
FOLLOW_TOKENIZER = ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")


def recipe_data(recipe: Recipe) -> dict:
    """The recipe as plain data, as `recipe.yaml` and the model's lineage record it."""
    data = recipe.model_dump(mode="json")
    if recipe.init_from is not None:  # the base brings both; a dump naming them would be refused on --resume
        del data["model"], data["tokenizer"]
        return data
    for key in FOLLOW_TOKENIZER:
        if key not in recipe.model.model_fields_set:
            data["model"].pop(key)
    return data


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe_data(recipe), sort_keys=False)


# --- the recipe files of a run directory ---------------------------------------------------------------

def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def recipe_changes(before: Recipe, after: Recipe) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (before, after)} for every key whose resolved value differs."""
    a, b = _flat(before.model_dump(mode="json")), _flat(after.model_dump(mode="json"))
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def load_run_recipe(run_dir: str | Path) -> Recipe | None:
    path = Path(run_dir) / RUN_RECIPE
    return parse_recipe(load_yaml(path), str(path)) if path.is_file() else None


def check_resume(run_dir: str | Path, recipe: Recipe) -> None:
    """Refuse to resume `run_dir` with a recipe that changes a key the steps already run depended on."""
    saved = load_run_recipe(run_dir)
    if saved is None:
        return
    fixed = {k: v for k, v in recipe_changes(saved, recipe).items() if k not in RESUMABLE}
    if fixed:
        what = "; ".join(f"{k} is {old!r} in this run, {new!r} now" for k, (old, new) in fixed.items())
        raise RecipeError(f"the recipe differs from the one this run was started with: {what}",
                          where=str(Path(run_dir) / RUN_RECIPE),
                          hint=f"--resume may change only {', '.join(RESUMABLE)}; train a new run (another --out) "
                               "to change the rest")


def _read_overrides(run_dir: Path) -> dict:
    path = run_dir / RUN_OVERRIDES
    return load_yaml(path) if path.is_file() else {"recipe_file": None, "overrides": []}


def save_run_recipe(run_dir: str | Path, recipe: Recipe, *, resume: bool, source: dict | None = None) -> None:
    """Write `recipe.yaml` and `overrides.yaml`. A fresh run records `source` ({recipe_file, overrides}); a
    resumed one keeps its record and appends what this resume changed, as `key=value` overrides."""
    run_dir = Path(run_dir)
    saved = load_run_recipe(run_dir) if resume else None
    if saved is None:
        record = source or {"recipe_file": None, "overrides": []}
    else:
        record = _read_overrides(run_dir)
        record["overrides"] = list(record.get("overrides") or []) + [
            f"{k}={json.dumps(new)}" for k, (_, new) in recipe_changes(saved, recipe).items()]
    atomic_write_text(run_dir / RUN_RECIPE, dump_recipe(recipe))
    atomic_write_text(run_dir / RUN_OVERRIDES, yaml.safe_dump(
        {"recipe_file": record.get("recipe_file"), "overrides": record["overrides"]}, sort_keys=False))


def resolve_run(recipe_path: str | Path | None, overrides: list[str], out: str | Path | None, *,
                resume: bool) -> tuple[Recipe, Path, dict]:
    """What `lmforge train [RECIPE] [--set ...] [--out RUN] [--resume]` trains: (recipe, run directory, the
    source record a fresh run saves).

    For a run directory that already has a recipe.yaml, the saved run is the source of truth: without RECIPE it is
    the saved recipe plus this command's overrides; with RECIPE, the file plus the overrides recorded in
    overrides.yaml plus this command's. Either way `check_resume` then refuses changes to the trajectory.
    """
    if recipe_path is None and not resume:
        raise RecipeError("no RECIPE given",
                          hint="lmforge train RECIPE.yaml, or --resume --out RUN_DIR to continue a run")
    if recipe_path is None and out is None:
        raise RecipeError("--resume without a RECIPE needs the run directory", hint="pass --out RUN_DIR")
    run_dir = Path(out) if out is not None else Path("runs") / _override(_recipe_data(recipe_path), overrides)["name"]
    source = {"recipe_file": None if recipe_path is None else str(recipe_path), "overrides": list(overrides)}
    saved = run_dir / RUN_RECIPE
    if not saved.is_file():  # a fresh run; an existing one is continued (with or without --resume)
        if recipe_path is None:
            raise RecipeError(f"nothing to resume: no {RUN_RECIPE}", where=str(run_dir),
                              hint="give the RECIPE to start this run")
        return load_recipe(recipe_path, overrides), run_dir, source
    if recipe_path is None:
        data, where = load_yaml(saved), str(saved)
    else:
        recorded = _read_overrides(run_dir).get("overrides") or []
        data, where = _override(_recipe_data(recipe_path), recorded), str(recipe_path)
    return parse_recipe(_override(data, overrides), where), run_dir, source
