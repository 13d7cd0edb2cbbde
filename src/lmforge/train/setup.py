"""setup(recipe, run_dir) -> TrainState: the device, the data, the model, the optimizer, the compile decision
and the methods, each from a small builder."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from lmforge.errors import RecipeError
from lmforge.model.transformer import COMPILE_ERRORS, Transformer
from lmforge.train.dist import World, in_turns, init_world
from lmforge.train.events import Event
from lmforge.train.methods import default_methods, run_event
from lmforge.train.optim import make_optimizer
from lmforge.train.precision import resolve_precision
from lmforge.train.state import TrainState


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RecipeError("train.device is cuda but no CUDA device is available",
                          hint="set train.device: cpu (or auto)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(recipe, tokenizer) -> Transformer:
    """A fresh model sized by the recipe, its token ids from the tokenizer; or, with init_from, that model
    (with `lora:`, frozen, its chosen layers wrapped in adapters and its base quantized as asked)."""
    if recipe.init_from is not None:
        from lmforge.model.hf import load_model

        model = load_model(recipe.init_from).train()
        if recipe.lora is not None:
            from lmforge.model.lora import add_lora, quantize_base

            add_lora(model, recipe.lora, seed=recipe.seed)
            skipped = quantize_base(model, recipe.lora)
            if skipped:
                warnings.warn(f"lora.base {recipe.lora.base}: {len(skipped)} layers stay fp32: {'; '.join(skipped)}")
        return model
    config = recipe.model.model_copy(update={
        "vocab_size": tokenizer.vocab_size, "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id, "pad_token_id": tokenizer.pad_id,
    })
    model = Transformer(config)
    model.reset_parameters(seed=recipe.seed)
    return model


def build_data(recipe, prep):
    """Training batches (one source: its windows; several: a weighted Mixture) and validation windows."""
    from lmforge.data.loader import TokenWindows
    from lmforge.data.mixture import Mixture

    seq_len = recipe.train.seq_len
    val = TokenWindows(prep.val_tokens, seq_len, prep.val_mask)
    windows = [TokenWindows(s.train_tokens, seq_len, s.train_mask) for s in prep.sources]
    if recipe.data.mix is None:
        return windows[0], val
    specs = [s.spec for s in prep.sources]
    return Mixture(windows, [s.weight for s in specs], [s.label() for s in specs],
                   [s.max_tokens for s in specs]), val




def build_loss(recipe, tokenizer_dir, vocab_size: int, precision: str, device: torch.device):
    """The run's loss: cross-entropy, or with `distill:` its mix with the KL from the teacher's logits. The
    teacher must speak the student's tokens: the same tokenizer.json, byte for byte."""
    from lmforge.train.loss import DistillationLoss, language_model_loss

    spec = recipe.distill
    if spec is None:
        return language_model_loss
    from lmforge.io import sha256_file
    from lmforge.model.hf import load_model

    teacher_dir = Path(spec.teacher)
    if not (teacher_dir / "config.json").is_file():
        raise RecipeError("distill.teacher is not a model directory (no config.json)", where=str(teacher_dir))
    theirs, ours = teacher_dir / "tokenizer.json", Path(tokenizer_dir) / "tokenizer.json"
    if not theirs.is_file() or not ours.is_file() or sha256_file(theirs) != sha256_file(ours):
        raise RecipeError("the student's tokenizer is not the teacher's: logits over different tokens do not "
                          "compare", where=str(teacher_dir),
                          hint=f"set tokenizer.path: {teacher_dir} (or init_from a model with its tokenizer)")
    teacher = load_model(teacher_dir).to(device)
    if teacher.config.vocab_size != vocab_size:
        raise RecipeError(f"the teacher's vocabulary has {teacher.config.vocab_size} tokens, the student's "
                          f"{vocab_size}", where=str(teacher_dir), hint="use the teacher's tokenizer and vocab_size")
    return DistillationLoss(teacher, temperature=spec.temperature, weight=spec.weight, kind=spec.kind,
                            precision=precision)


def compile_or_eager(model, sample, precision: str, device: torch.device):
    """torch.compile fuses the elementwise work eager mode runs as separate passes (1.07x-1.4x training
    throughput on a 2-core CPU). Decided once, before the loop, by a trial forward and backward on one
    micro-batch (its gradients are discarded); a compiler that fails is reported and training runs eager."""
    from lmforge.train.precision import autocast

    compiled = torch.compile(model)
    try:
        with autocast(precision, device.type):
            logits = compiled(sample.to(device))
        logits.float().sum().backward()
    except COMPILE_ERRORS as e:
        warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                      "training in eager mode")
        return model, False
    finally:
        model.zero_grad(set_to_none=True)
    return compiled, True


def setup(recipe, run_dir: Path, *, progress: bool = True, world: World | None = None,
          methods: list | None = None) -> TrainState:
    """The TrainState of `recipe`; `methods` (lmforge.train.methods.Method) run after the default ones."""
    from lmforge.train.prepare import prepare
    from lmforge.train.validation import byte_lengths

    spec = recipe.train
    device = resolve_device(spec.device)
    world = world or init_world(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    torch.set_num_threads(spec.threads or max(1, len(os.sched_getaffinity(0)) // world.local_size))
    with in_turns(world):  # rank 0 fills the caches (corpus, tokenizer, packed shards); the others read them
        prep = prepare(recipe, progress=progress and world.is_main)
    train_data, val_data = build_data(recipe, prep)
    seed_everything(recipe.seed)  # what a step draws (dropout) starts from the seed; a resume restores the streams
    model = build_model(recipe, prep.tokenizer)
    if spec.seq_len > model.config.max_position_embeddings:
        raise RecipeError(f"train.seq_len {spec.seq_len} exceeds model.max_position_embeddings "
                          f"{model.config.max_position_embeddings}")
    model.to(device)
    model.activation_checkpointing = spec.activation_checkpointing
    precision = resolve_precision(spec.precision, device.type)
    state = TrainState(recipe=recipe, run_dir=Path(run_dir), model=model, forward=model,
                       optimizer=make_optimizer(model, spec), train_data=train_data, val_data=val_data,
                       bytes_per_token=byte_lengths(prep.tokenizer), tokenizer=prep.tokenizer, prepared=prep,
                       device=device, precision=precision, world=world, show_progress=progress)
    state.loss_fn = build_loss(recipe, prep.tokenizer_dir, model.config.vocab_size, precision, device)
    if spec.compile:
        sample, _ = train_data.batch(recipe.seed, 0, spec.micro_batch_size)
        state.forward, state.compiled = compile_or_eager(model, sample, precision, device)
    state.methods = default_methods(state) + list(methods or [])
    run_event(Event.INIT, state)
    return state
