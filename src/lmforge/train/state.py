"""TrainState: everything a step reads or changes, and exactly what a checkpoint saves.

The durable part (`state_dict`) is the step, the tokens seen, the data cursor, the model, the optimizer,
the RNG streams and each method's state; the learning rate is a pure function of the step (schedule.py)
times `lr_scale` (the spike guard's cool-down), so saving those restores the scheduler. Checkpoints are
written only between steps, so the gradient-accumulation position of a checkpoint is always zero.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.train.dist import World


@dataclass
class TrainState:
    recipe: Any
    run_dir: Path
    model: torch.nn.Module           # the parameters (what checkpoints and exports see)
    forward: Any                     # what computes logits: the model, or its torch.compile'd wrapper
    optimizer: torch.optim.Optimizer
    train_data: Any                  # .batch(seed, draw, batch_size) -> (inputs, targets)
    val_data: Any                    # TokenWindows for validation
    bytes_per_token: np.ndarray
    tokenizer: Any
    prepared: Any
    device: torch.device
    precision: str                   # "bf16" | "fp32", resolved
    world: World
    methods: list = field(default_factory=list)
    log: Any = None                  # runlog.RunLog on rank 0, NullLog elsewhere
    loss_fn: Any = None              # (logits, inputs, targets) -> summed loss (train/loss.py); set by setup()
    show_progress: bool = True

    # durable: saved by state_dict()
    step: int = 0                    # optimizer steps done
    tokens: int = 0                  # input tokens seen (all ranks)
    data_position: int = 0           # index of the next micro-batch draw; a rollback moves it past bad data
    lr_scale: float = 1.0            # multiplies the schedule (the spike guard lowers it for a while)

    # per step, rebuilt every step
    batch: list = field(default_factory=list)   # [(inputs, targets)] of this rank
    targets: int = 0                 # unmasked targets in this step's batch, over all ranks
    lr: float = 0.0
    micro_loss: float = 0.0          # this micro-batch's share of the step loss
    loss: float = float("nan")       # the step's mean loss per target
    grad_norm: float = float("nan")
    skip_update: bool = False
    evaluated: bool = False          # validation ran at this step (EVAL_END fires)
    last_eval: dict | None = None
    rolled_back: bool = False        # the spike guard restored a checkpoint at this STEP_END
    stop: bool = False               # a signal asked to stop after this step
    stop_signal: int | None = None
    tokens_per_s: float = 0.0
    final: dict | None = None        # the final validation (FIT_END)
    resumed_from: int | None = None
    compiled: bool = False

    @property
    def spec(self):
        return self.recipe.train

    @property
    def tokens_per_step(self) -> int:
        return self.spec.micro_batch_size * self.spec.seq_len * self.spec.grad_accum * self.world.size

    @property
    def needs_initial_checkpoint(self) -> bool:
        """A rollback needs a target even before the first checkpoint interval."""
        return self.spec.spike_guard.enabled

    @property
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def run_facts(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "precision": self.precision, "device": str(self.device),
                "compile": self.compiled, "world_size": self.world.size, "threads": torch.get_num_threads(),
                "parameters": self.model.config.num_parameters(), "trainable_parameters": self.trainable_parameters}

    def say(self, text: str) -> None:
        """A line above the progress bar (or on stderr without one), on rank 0."""
        if not self.world.is_main:
            return
        from lmforge.train.methods.progress import ProgressBar

        bars = [m for m in self.methods if isinstance(m, ProgressBar) and m.bar is not None]
        if bars:
            bars[0].say(text)
        else:
            from rich.console import Console

            Console(stderr=True).print(text)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step, "tokens": self.tokens, "data_position": self.data_position,
            "lr_scale": self.lr_scale,
            "model": model_weights(self.model),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng_state(self.device),
            "methods": {m.name: m.state_dict() for m in self.methods},
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.step, self.tokens = sd["step"], sd["tokens"]
        self.data_position, self.lr_scale = sd["data_position"], sd["lr_scale"]
        restore_model_weights(self.model, sd["model"], where=sd.get("where", "checkpoint"))
        self.optimizer.load_state_dict(sd["optimizer"])
        set_rng_state(sd["rng"])
        for m in self.methods:
            m.load_state_dict(sd["methods"].get(m.name, {}))


def model_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint holds of the model: its weights under Hugging Face names, or, for a LoRA run (a frozen
    base plus adapters), the adapters alone under PEFT's names (the base is the init_from directory)."""
    from lmforge.model.hf import to_hf_state_dict
    from lmforge.model.lora import adapter_state_dict, lora_layers

    return adapter_state_dict(model) if lora_layers(model) else to_hf_state_dict(model)


def restore_model_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], *, where: str) -> None:
    from lmforge.model.hf import from_hf_state_dict
    from lmforge.model.lora import load_adapter_state_dict, lora_layers

    if lora_layers(model):
        load_adapter_state_dict(model, weights, where)
    else:
        model.load_state_dict(from_hf_state_dict(weights, model.config, where),
                              strict=not model.config.tie_word_embeddings)


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every random stream a step could draw from (batches themselves derive from (seed, draw) alone)."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
