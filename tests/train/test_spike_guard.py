"""The loss-spike guard on a poisoned stretch of data: the run rolls back to its last checkpoint, skips the
draws that caused the spike, trains on at a lowered learning rate for `cooldown_steps`, and ends with about
the loss of a clean run; the same poisoned run twice is bitwise identical. A non-finite loss is caught too.
With the guard off the same poison goes through (what shows these checks can fail)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import tiny_recipe

from lmforge.train.events import Event
from lmforge.train.methods.base import Method
from lmforge.train.recipe import parse_recipe
from lmforge.train.schedule import lr_at
from lmforge.train.trainer import train

STEPS, EVERY, COOLDOWN, FACTOR = 60, 10, 10, 0.5
POISON = (33, 36)  # draw indices [first, last) whose targets are scrambled: steps 34-36 with grad_accum 1
GUARD = {"window": 15, "min_history": 10, "z": 6.0, "cooldown_steps": COOLDOWN, "lr_factor": FACTOR}


class ScrambleTargets(Method):
    """Data poisoning from outside the trainer: the targets of draws in [first, last) go through a fixed random
    permutation of the vocabulary, so the model's (good) predictions of the next token are all wrong."""
    events = (Event.BATCH_START,)

    def __init__(self, first: int, last: int):
        self.first, self.last = first, last
        self.hit: list[int] = []  # every draw index it poisoned, in order (a rerun after a rollback too)

    def apply(self, event, state) -> None:
        perm = torch.randperm(state.tokenizer.vocab_size, generator=torch.Generator().manual_seed(0))
        for i, (inputs, targets) in enumerate(state.batch):
            draw = state.data_position + i
            if self.first <= draw < self.last:
                self.hit.append(draw)
                state.batch[i] = (inputs, torch.where(targets >= 0, perm[targets.clamp(min=0)], targets))


class InfWeights(Method):
    """A blow-up: at the step that draws `draw`, the final norm's gain becomes inf, so the loss is NaN."""
    events = (Event.BATCH_START,)

    def __init__(self, draw: int):
        self.draw, self.fired = draw, 0

    def apply(self, event, state) -> None:
        if state.data_position <= self.draw < state.data_position + state.spec.grad_accum:
            self.fired += 1
            with torch.no_grad():
                state.model.norm.weight.fill_(float("inf"))


def recipe(small_dataset, small_tokenizer, **guard):
    return parse_recipe(tiny_recipe(small_dataset, small_tokenizer, max_steps=STEPS, checkpoint_interval=EVERY,
                                    log_interval=1, spike_guard={**GUARD, **guard}))


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def last_per_step(run) -> dict[int, dict]:
    """The training row of each step as it finally stood (a rollback replays steps: later rows win)."""
    return {r["step"]: r for r in rows(run / "metrics.jsonl") if "loss" in r}


def weights(result) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(result["model"] / "model.safetensors"))


@pytest.fixture(scope="module")
def clean(small_dataset, small_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    result = train(recipe(small_dataset, small_tokenizer), out, progress=False)
    assert not [e for e in rows(out / "events.jsonl") if e["kind"] == "rollback"]  # no false alarm on clean data
    return out, result


@pytest.fixture(scope="module")
def poisoned(small_dataset, small_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("poisoned") / "run"
    poison = ScrambleTargets(*POISON)
    return out, train(recipe(small_dataset, small_tokenizer), out, progress=False, methods=[poison]), poison


def test_spike_rolls_back_skips_the_poisoned_draws_and_ends_like_a_clean_run(clean, poisoned):
    out, result, poison = poisoned
    clean_out, clean_result = clean
    rollbacks = [e for e in rows(out / "events.jsonl") if e["kind"] == "rollback"]
    assert rollbacks, "the poisoned stretch was not rolled back"
    normal = [r["loss"] for s, r in last_per_step(clean_out).items() if 20 <= s <= 40]
    for e in rollbacks:
        assert e["to_step"] == (e["step"] - 1) // EVERY * EVERY  # the last checkpoint before the spike
        assert e["loss"] > max(normal) + 1.0 and "standard deviations" in e["reason"]
        first, last = e["skip"]
        assert first == e["to_step"] and last > first  # cursor of that checkpoint (grad_accum 1: draw = step)
    # every poisoned draw the run hit lies in a skipped window: none of them stands in the final weights
    assert set(poison.hit) == set(range(*POISON))
    assert all(any(a <= d < b for a, b in (e["skip"] for e in rollbacks)) for d in poison.hit)
    assert rollbacks[-1]["skip"] == [rollbacks[-1]["to_step"], POISON[1]]
    # the run finished all its steps, with a normal loss: within 1% of the clean run (measured: 0.3%)
    assert result["steps"] == STEPS
    assert result["validation"]["loss"] == pytest.approx(clean_result["validation"]["loss"], rel=0.01)


def test_learning_rate_is_lowered_for_cooldown_steps_after_the_rollback(poisoned):
    out, _, _ = poisoned
    spec = recipe_spec(out)
    back = [e for e in rows(out / "events.jsonl") if e["kind"] == "rollback"][-1]["to_step"]
    final = last_per_step(out)
    assert sorted(final) == list(range(1, STEPS + 1))
    for step, row in final.items():
        schedule = lr_at(step - 1, lr=spec.lr, warmup=spec.warmup_steps, total=spec.max_steps,
                         min_ratio=spec.min_lr_ratio)  # a row's step counts the update it just made
        cooling = back < step <= back + COOLDOWN
        assert row["lr"] == pytest.approx(FACTOR * schedule if cooling else schedule, rel=1e-12), step


def recipe_spec(out):
    from lmforge.train.recipe import load_run_recipe

    return load_run_recipe(out).train


def test_poisoned_rerun_is_bitwise_deterministic(small_dataset, small_tokenizer, poisoned, tmp_path):
    out, result, _ = poisoned
    again = train(recipe(small_dataset, small_tokenizer), tmp_path / "again", progress=False,
                  methods=[ScrambleTargets(*POISON)])
    a, b = weights(result), weights(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    strip = lambda path: [{k: v for k, v in e.items() if k not in ("time", "pid")} for e in rows(path)]  # noqa: E731
    assert strip(tmp_path / "again" / "events.jsonl") == strip(out / "events.jsonl")
    assert again["validation"] == result["validation"]


def test_non_finite_loss_is_caught_and_rolled_back(small_dataset, small_tokenizer, clean, tmp_path):
    blow_up = InfWeights(draw=12)
    result = train(recipe(small_dataset, small_tokenizer), tmp_path / "r", progress=False, methods=[blow_up])
    rollbacks = [e for e in rows(tmp_path / "r" / "events.jsonl") if e["kind"] == "rollback"]
    assert blow_up.fired == 1 and len(rollbacks) == 1
    e = rollbacks[0]
    assert e["step"] == 13 and e["to_step"] == 10 and e["skip"] == [10, 13]
    assert "non-finite" in e["reason"] and not math.isfinite(e["loss"])
    # the restored checkpoint undid the inf weights: training went on normally
    assert all(math.isfinite(r["loss"]) for s, r in last_per_step(tmp_path / "r").items() if s != 13)
    assert result["validation"]["loss"] == pytest.approx(clean[1]["validation"]["loss"], rel=0.01)


def test_with_the_guard_off_the_poison_goes_through(small_dataset, small_tokenizer, clean, poisoned, tmp_path):
    """What the checks above would see without the guard: no rollback, the poisoned steps' losses accepted
    into the run, a worse final loss than the guarded run; and an inf blow-up is never recovered."""
    clean_out, clean_result = clean
    poison = ScrambleTargets(*POISON)
    result = train(recipe(small_dataset, small_tokenizer, enabled=False), tmp_path / "off", progress=False,
                   methods=[poison])
    assert not [e for e in rows(tmp_path / "off" / "events.jsonl") if e["kind"] == "rollback"]
    assert poison.hit == list(range(*POISON))  # each poisoned draw went into an update, once
    train_rows = [r for r in rows(tmp_path / "off" / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, STEPS + 1))
    normal = max(r["loss"] for s, r in last_per_step(clean_out).items() if 20 <= s <= 40)
    assert all(train_rows[d]["loss"] > normal + 1.0 for d in range(*POISON))  # row of draw d is step d + 1
    guarded = poisoned[1]["validation"]["loss"]
    clean_loss = clean_result["validation"]["loss"]
    assert abs(result["validation"]["loss"] - clean_loss) > 2 * abs(guarded - clean_loss)

    blown = train(recipe(small_dataset, small_tokenizer, enabled=False), tmp_path / "inf", progress=False,
                  methods=[InfWeights(draw=12)])
    assert not math.isfinite(blown["validation"]["loss"])
