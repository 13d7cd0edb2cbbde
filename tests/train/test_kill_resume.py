"""Exact resumption of `lmforge train RECIPE --out RUN` as a user meets it: the process is killed with SIGKILL
at random points (mid-step, mid-checkpoint, anywhere), the same command is run again each time, and the final
weights are bitwise identical to a run that was never interrupted (CPU, fp32). SIGTERM and Ctrl-C stop it
cleanly with a checkpoint; a corrupt newest checkpoint is passed over."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_recipe

from lmforge.train.checkpoint import checkpoint_dirs, latest_intact

STEPS, EVERY = 60, 7  # checkpoints at 0 (the spike guard's), 7, 14, ..., 56, 60: kills land between them
TIMEOUT = 120


@pytest.fixture(scope="module")
def recipe_file(small_dataset, small_tokenizer, tmp_path_factory) -> Path:
    raw = tiny_recipe(small_dataset, small_tokenizer, max_steps=STEPS, checkpoint_interval=EVERY, log_interval=1)
    path = tmp_path_factory.mktemp("recipe") / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def command(recipe: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "lmforge.cli.main", "train", str(recipe), "--out", str(out)]


def start(recipe: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(command(recipe, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})


def finish(recipe: Path, out: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run(command(recipe, out), capture_output=True, text=True, timeout=TIMEOUT,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    return proc


def rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line being written right now
            pass
    return out


def logged_step(run: Path) -> int:
    """The highest training step in metrics.jsonl (0 before the first)."""
    return max((r["step"] for r in rows(run / "metrics.jsonl") if "loss" in r), default=0)


def wait_for_step(proc: subprocess.Popen, run: Path, step: int) -> int:
    deadline = time.monotonic() + TIMEOUT
    while (seen := logged_step(run)) < step:
        assert proc.poll() is None, f"training ended (rc {proc.returncode}) before step {step}:\n" \
                                    f"{proc.communicate()[1]}"
        assert time.monotonic() < deadline, f"step {step} not reached"
        time.sleep(0.002)
    return seen


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "model" / "model.safetensors"))


def assert_bit_identical(run: Path, reference: Path) -> None:
    a, b = weights(reference), weights(run)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # the training curve too: every step's loss once, exactly the uninterrupted run's
    train_rows = [r for r in rows(run / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, STEPS + 1))
    expected = {r["step"]: (r["loss"], r["lr"], r["grad_norm"]) for r in rows(reference / "metrics.jsonl") if "loss" in r}
    assert {r["step"]: (r["loss"], r["lr"], r["grad_norm"]) for r in train_rows} == expected
    val = [(r["step"], r["val_loss"]) for r in rows(run / "metrics.jsonl") if "val_loss" in r]
    assert val == [(r["step"], r["val_loss"]) for r in rows(reference / "metrics.jsonl") if "val_loss" in r]


def events(run: Path) -> list[dict]:
    return rows(run / "events.jsonl")


@pytest.fixture(scope="module")
def reference(recipe_file, tmp_path_factory) -> Path:
    """The same command, never interrupted."""
    out = tmp_path_factory.mktemp("ref") / "run"
    finish(recipe_file, out)
    assert [e["kind"] for e in events(out)] == ["start", "finished"]
    return out


def test_sigkill_at_random_points_resumes_bit_identical(recipe_file, reference, tmp_path):
    rng = random.Random(20240509)
    run = tmp_path / "run"
    kills = []  # (step seen when killed, the newest intact checkpoint it left)
    proc = start(recipe_file, run)
    seen = 0
    while len(kills) < 4:
        target = rng.randint(seen + 3, seen + 12)
        wait_for_step(proc, run, target)
        time.sleep(rng.uniform(0, 0.03))  # land anywhere in a step: the forward, the backward, a checkpoint save
        proc.kill()
        proc.wait(timeout=TIMEOUT)
        assert proc.returncode == -signal.SIGKILL
        seen = logged_step(run)
        newest = latest_intact(run, warn=False)
        assert newest is not None  # step-0 at least: the guard's first rollback target
        kills.append((seen, newest.name))
        assert not any(e["kind"] == "finished" for e in events(run))
        proc = start(recipe_file, run)  # the same command again
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    # the kills really landed between checkpoints, at different places
    assert len({s for s, _ in kills}) == len(kills) and any(s % EVERY for s, _ in kills), kills

    assert_bit_identical(run, reference)
    ev = events(run)
    assert [e["kind"] for e in ev] == ["start"] + ["resume"] * len(kills) + ["finished"]
    resumes = [e for e in ev if e["kind"] == "resume"]
    assert [(e["checkpoint"], e["step"]) for e in resumes] == [(name, int(name.split("-")[1])) for _, name in kills]
    for (seen_step, _), e in zip(kills, resumes):
        assert seen_step - EVERY - 1 <= e["step"] <= seen_step  # the newest checkpoint at or before the kill


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_ctrl_c_checkpoint_and_exit_cleanly(recipe_file, reference, tmp_path, sig):
    run = tmp_path / "run"
    proc = start(recipe_file, run)
    wait_for_step(proc, run, random.Random(sig).randint(12, 40))
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Traceback" not in out
    assert "stopped" in out and signal.Signals(sig).name in err + out
    last = events(run)[-1]
    assert last["kind"] == "interrupted" and last["signal"] == sig
    stopped_at = last["step"]
    assert stopped_at < STEPS and logged_step(run) == stopped_at
    newest = latest_intact(run, warn=False)  # the checkpoint of the very step it stopped at
    assert newest is not None and newest.name == f"step-{stopped_at:07d}"
    assert not (run / "model").exists()

    finish(recipe_file, run)
    assert_bit_identical(run, reference)
    resumes = [e for e in events(run) if e["kind"] == "resume"]
    assert [e["step"] for e in resumes] == [stopped_at]


def test_corrupt_and_partial_newest_checkpoints_are_passed_over(recipe_file, reference, tmp_path):
    run = tmp_path / "run"
    proc = start(recipe_file, run)
    wait_for_step(proc, run, 3 * EVERY + 2)
    proc.kill()
    proc.wait(timeout=TIMEOUT)
    intact = checkpoint_dirs(run)
    assert len(intact) >= 2
    newest, older = intact[-1], intact[-2]
    with open(newest / "model.safetensors", "r+b") as f:  # bit rot in the newest
        f.seek(300)
        byte = f.read(1)
        f.seek(300)
        f.write(bytes([byte[0] ^ 0xFF]))
    step = int(newest.name.split("-")[1])
    partial = run / "checkpoints" / f"step-{step + 1:07d}"  # a checkpoint directory without its manifest
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 64)
    leftover = run / "checkpoints" / f".step-{step + 2:07d}.tmp-x"  # what a kill inside a save leaves
    leftover.mkdir()

    proc = finish(recipe_file, run)
    assert "incomplete or corrupt" in proc.stderr
    assert partial.name in proc.stderr and newest.name in proc.stderr
    resumes = [e for e in events(run) if e["kind"] == "resume"]
    assert [e["checkpoint"] for e in resumes] == [older.name]
    assert_bit_identical(run, reference)
