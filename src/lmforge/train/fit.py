"""fit(state): the loop of lmforge.train.events, and nothing else. Every step of the same (seed, data
position) computes the same thing, which is what exact resumption and rollback rely on."""

from __future__ import annotations

import contextlib
import signal

import torch

from lmforge.train.dist import all_sum, any_rank, sum_gradients
from lmforge.train.events import Event
from lmforge.train.loss import count_targets, language_model_loss
from lmforge.train.methods import run_event
from lmforge.train.precision import autocast
from lmforge.train.schedule import lr_at


def fit(state) -> None:
    spec = state.spec
    with stop_on_signals(state):
        run_event(Event.FIT_START, state)
        while state.step < spec.max_steps and not state.stop:
            state.batch = draw_batch(state)
            state.targets = int(all_sum(state.world, count_targets(state.batch)))
            state.skip_update = state.evaluated = state.rolled_back = False
            run_event(Event.BATCH_START, state)
            state.lr = set_lr(state.optimizer, state.lr_scale * lr_at(
                state.step, lr=spec.lr, warmup=spec.warmup_steps, total=spec.max_steps, min_ratio=spec.min_lr_ratio))
            step_loss = 0.0
            for inputs, targets in state.batch:
                loss = micro_loss(state.forward, inputs, targets, state.targets, state.precision, state.device,
                                  state.loss_fn)
                state.micro_loss = loss.item()
                run_event(Event.AFTER_FORWARD, state)
                loss.backward()
                run_event(Event.AFTER_BACKWARD, state)
                step_loss += state.micro_loss
            state.loss = all_sum(state.world, step_loss)
            sum_gradients(state.world, state.model)
            run_event(Event.BEFORE_OPTIMIZER_STEP, state)
            state.grad_norm = clip_and_step(state.model, state.optimizer, spec.grad_clip, skip=state.skip_update)
            state.step += 1
            state.tokens += state.tokens_per_step
            state.data_position += spec.grad_accum
            state.stop = any_rank(state.world, state.stop or state.stop_signal is not None)  # all ranks agree
            run_event(Event.STEP_END, state)
            if state.evaluated:
                run_event(Event.EVAL_END, state)


def draw_batch(state) -> list:
    """This rank's rows of the step's micro-batches: each draw is `micro_batch_size * world` rows, rank r
    takes slice r, so any number of processes sees the same global batch."""
    spec, world = state.spec, state.world
    micro = []
    for i in range(spec.grad_accum):
        x, y = state.train_data.batch(state.recipe.seed, state.data_position + i, spec.micro_batch_size * world.size)
        rows = slice(world.rank * spec.micro_batch_size, (world.rank + 1) * spec.micro_batch_size)
        micro.append((x[rows].to(state.device), y[rows].to(state.device)))
    return micro


def micro_loss(forward, inputs, targets, n_targets: int, precision: str, device,
               loss_fn=language_model_loss) -> torch.Tensor:
    """This micro-batch's summed loss over the step's target count: the gradients add up to the mean."""
    with autocast(precision, torch.device(device).type):
        logits = forward(inputs)                                     # (B, T, V)
    return loss_fn(logits, inputs, targets) / max(1, n_targets)


def set_lr(optimizer, lr: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def clip_and_step(model, optimizer, grad_clip: float, *, skip: bool = False) -> float:
    """Clip the global gradient norm, step (unless `skip`), clear; returns the norm before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else float("inf"))
    if not skip:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)


def train_step(model, optimizer, micro_batches, *, precision: str, grad_clip: float,
               device: str = "cpu") -> tuple[float, float]:
    """One optimizer step over `micro_batches` outside fit (tests, benchmarks): (mean loss, norm)."""
    n = count_targets(micro_batches)
    total = 0.0
    for inputs, targets in micro_batches:
        loss = micro_loss(model, inputs, targets, n, precision, device)
        loss.backward()
        total += loss.item()
    return total, clip_and_step(model, optimizer, grad_clip)


@contextlib.contextmanager
def stop_on_signals(state):
    """SIGTERM and Ctrl-C finish the current step, checkpoint and return (state.stop)."""
    def ask_to_stop(signum, frame):
        if state.stop_signal is not None:  # a second Ctrl-C: stop now
            if state.world.distributed:  # one rank leaving alone would strand the others; torchrun SIGKILLs
                return
            raise KeyboardInterrupt
        state.stop_signal = signum  # several processes: fit() stops them all after the same step (any_rank)
        state.stop = not state.world.distributed
        state.say(f"[yellow]{signal.Signals(signum).name}[/]: stopping after this step, with a checkpoint")

    previous = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, ask_to_stop)
    except ValueError:  # not the main thread: no handlers
        previous = {}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
