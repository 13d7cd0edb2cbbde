"""The learning-rate schedule (docs/training.md: linear warmup, then cosine decay to min_lr_ratio x lr) against
its closed form written here, against torch's own LinearLR / CosineAnnealingLR, and as the trainer really
applies it: the `lr` column of metrics.jsonl, and the step each optimizer update actually took."""

import json
import math

import pytest
import torch
from conftest import tiny_recipe
from safetensors.torch import load_file

from lmforge.train.recipe import parse_recipe
from lmforge.train.schedule import lr_at
from lmforge.train.trainer import train


def closed_form(step: int, lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """Step `step` (0-based) of `total`: warmup climbs linearly from lr/warmup (step 0) to lr (step warmup-1);
    then a half cosine falls from lr (step warmup) to min_ratio*lr (step total) and stays there."""
    floor = min_ratio * lr
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / (total - warmup))  # fraction of the decay done
    return floor + (lr - floor) * (1 + math.cos(math.pi * t)) / 2


CASES = [  # (lr, warmup, total, min_ratio)
    (3e-3, 100, 1000, 0.1),  # the recipe defaults
    (6e-3, 50, 1000, 0.1),  # the shipped demo recipe
    (1e-2, 0, 20, 0.0),  # no warmup, decay to zero
    (1e-2, 1, 20, 0.5),  # warmup of one step
    (2e-3, 10, 11, 0.3),  # a decay of one step
    (5e-4, 4, 30, 1.0),  # min_ratio 1: constant after warmup
]


@pytest.mark.parametrize("lr,warmup,total,min_ratio", CASES)
def test_every_step_matches_the_closed_form(lr, warmup, total, min_ratio):
    for step in range(total + 5):  # past the end too: the floor holds
        want = closed_form(step, lr, warmup, total, min_ratio)
        got = lr_at(step, lr=lr, warmup=warmup, total=total, min_ratio=min_ratio)
        assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-18), (step, got, want)


def test_landmarks_by_hand():
    """Values anyone can check on paper, for lr 1e-2, 10 warmup steps, 110 steps, floor 0.2 x lr."""
    at = lambda step: lr_at(step, lr=1e-2, warmup=10, total=110, min_ratio=0.2)  # noqa: E731
    assert math.isclose(at(0), 1e-3)  # first step: lr / warmup, never 0
    assert math.isclose(at(4), 5e-3)
    assert math.isclose(at(9), 1e-2) and math.isclose(at(10), 1e-2)  # peak at the end of warmup
    assert math.isclose(at(35), 2e-3 + 8e-3 * (2 + math.sqrt(2)) / 4)  # a quarter into the decay
    assert math.isclose(at(60), 6e-3)  # halfway: the mean of peak and floor
    assert math.isclose(at(110), 2e-3) and math.isclose(at(500), 2e-3)  # the floor, and it stays
    steps = [at(s) for s in range(110)]
    assert all(a < b for a, b in zip(steps[:10], steps[1:10]))  # warmup rises
    assert all(a > b for a, b in zip(steps[10:], steps[11:]))  # the decay only falls
    assert steps[-1] > 2e-3  # the last step taken (109) is still above the floor it decays towards


@pytest.mark.parametrize("lr,warmup,total,min_ratio", [c for c in CASES if c[1] >= 2])
def test_agrees_with_torch_schedulers(lr, warmup, total, min_ratio):
    """torch's LinearLR for the warmup and CosineAnnealingLR for the decay, stepped on a real optimizer."""
    def lrs(make, n):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        sched, out = make(opt), []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return out

    warm = lrs(lambda o: torch.optim.lr_scheduler.LinearLR(o, 1 / warmup, 1.0, total_iters=warmup - 1), warmup)
    decay = lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total - warmup,
                                                                      eta_min=min_ratio * lr),
                total - warmup + 1)
    for step, want in enumerate(warm + decay):
        got = lr_at(step, lr=lr, warmup=warmup, total=total, min_ratio=min_ratio)
        assert math.isclose(got, want, rel_tol=1e-6), (step, got, want)


LR, WARMUP, STEPS, MIN_RATIO = 1e-2, 4, 12, 0.2


@pytest.fixture(scope="module")
def run(small_dataset, small_tokenizer, tmp_path_factory):
    """A tiny run that logs and checkpoints every step. betas (0, 0) make AdamW's update lr * g / |g|: every
    element of a parameter without weight decay (the norm gains) moves by exactly that step's lr."""
    out = tmp_path_factory.mktemp("runs") / "schedule"
    raw = tiny_recipe(small_dataset, small_tokenizer, max_steps=STEPS, lr=LR, warmup_steps=WARMUP,
                      min_lr_ratio=MIN_RATIO, betas=[0.0, 0.0], log_interval=1, checkpoint_interval=1,
                      keep_checkpoints=STEPS, eval_interval=10_000, final_eval_tokens=2048)
    train(parse_recipe(raw), out, progress=False)
    return out


def test_metrics_log_the_closed_form_lr(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["lr"] for r in rows if "lr" in r}
    assert sorted(logged) == list(range(1, STEPS + 1))  # the row for step N: after N updates
    for n, lr in logged.items():
        assert math.isclose(lr, closed_form(n - 1, LR, WARMUP, STEPS, MIN_RATIO), rel_tol=1e-12), n


def test_each_update_takes_the_scheduled_lr(run):
    """The lr the optimizer really used, read back from the weights: the size of each norm-gain move between
    consecutive checkpoints (gains start at 1, as in Llama)."""
    def gains(step):
        weights = load_file(str(run / "checkpoints" / f"step-{step:07d}" / "model.safetensors"))
        return torch.cat([w.double() for name, w in sorted(weights.items()) if w.dim() == 1])  # (n_gains,)

    before = torch.ones_like(gains(1))
    for step in range(STEPS):
        after = gains(step + 1)
        moved = (after - before).abs()  # (n_gains,)
        want = closed_form(step, LR, WARMUP, STEPS, MIN_RATIO)
        # the move is lr * |g| / (|g| + eps): lr itself, less a little where |g| is within ~1e3 of Adam's eps
        # (1e-8); never more than lr (up to float32 spacing near 1, ~1.2e-7)
        assert moved.max() <= want + 2e-7, (step, want, moved.max().item())
        assert moved.median() >= want * (1 - 1e-3), (step, want, moved.median().item())
        before = after
