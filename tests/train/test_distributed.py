"""Many processes: `torchrun --nproc-per-node 2 -m lmforge train` on CPU (gloo) follows the single-process run
of the same global batch, writes the run directory from rank 0 alone, and stops and resumes like one process.

Two processes with micro_batch_size 4 see exactly the rows one process with micro_batch_size 8 sees (each draw
is micro_batch_size x world rows; rank r takes slice r), their gradients are summed by one all-reduce and the
loss is normalised by the global target count, so in exact arithmetic the two runs are the same run. In
floating point the summation order differs (two half-batch matmuls and a gloo sum against one full-batch
matmul, on 1 thread per process against 2), so the curves drift apart by rounding. Measured on this tiny model
over 30 steps: at most 1.3e-7 relative on a step's loss (a float32 ulp is 1.2e-7) and 1.1e-8 on the final
validation loss. TOLERANCE is 1e-5: ~80x what was measured, to leave room for other CPUs' kernels, and still
far below what a real mistake produces: without the gradient all-reduce (rank 0 training on its own half of
each batch) the curves differ by 1.9e-4 relative at step 2 and 1.6e-2 by step 30; with the loss normalised
by each rank's own targets, every step's loss doubles.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe

STEPS = 30
TOLERANCE = 1e-5  # relative, per step loss and final validation loss (see the module docstring)
TIMEOUT = 180     # seconds for any one subprocess: a hang fails the test instead of stalling the suite


def torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    # --standalone: a local c10d rendezvous on a free port of 127.0.0.1 (no hostname lookup, no fixed port)
    return cmd + ["--standalone", "--nproc-per-node", "2"]


def lmforge_train(recipe: Path, out: Path, *, processes: int) -> list[str]:
    head = torchrun() if processes > 1 else [sys.executable]
    return head + ["-m", "lmforge", "train", str(recipe), "--out", str(out)]


def environment() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "200", "OMP_WAIT_POLICY": "PASSIVE"}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=environment(), timeout=TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def write_recipe(path: Path, dataset, tokenizer, micro_batch_size: int) -> Path:
    recipe = tiny_recipe(dataset, tokenizer, max_steps=STEPS, micro_batch_size=micro_batch_size, log_interval=1,
                         eval_interval=10)
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def events(run_dir: Path) -> list[dict]:
    return rows(run_dir / "events.jsonl")


def curve(run_dir: Path, key: str = "loss") -> dict[int, float]:
    found = [(r["step"], r[key]) for r in rows(run_dir / "metrics.jsonl") if key in r]
    assert len({s for s, _ in found}) == len(found), f"a step logged twice ({key})"
    return dict(found)


def weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def recipes(small_dataset, small_tokenizer, tmp_path_factory):
    d = tmp_path_factory.mktemp("recipes")
    return (write_recipe(d / "one.yaml", small_dataset, small_tokenizer, 8),
            write_recipe(d / "two.yaml", small_dataset, small_tokenizer, 4))


@pytest.fixture(scope="module")
def runs(recipes, tmp_path_factory):
    """One process with micro-batch 8 and two processes with micro-batch 4: the same global batch."""
    one_recipe, two_recipe = recipes
    root = tmp_path_factory.mktemp("dp")
    one, two = root / "one", root / "two"
    run(lmforge_train(one_recipe, one, processes=1))
    proc = run(lmforge_train(two_recipe, two, processes=2))
    return one, two, proc


def relative(a: float, b: float) -> float:
    return abs(a - b) / abs(a)


def test_two_processes_follow_the_single_process_curve(runs):
    one, two, _ = runs
    single, double = curve(one), curve(two)
    assert sorted(single) == sorted(double) == list(range(1, STEPS + 1))
    worst = max(relative(single[s], double[s]) for s in single)
    assert worst <= TOLERANCE, f"loss curves differ by {worst:.2e} relative (tolerance {TOLERANCE:.0e})"
    assert single[STEPS] < single[1] - 0.5  # the curve being matched is one that learns
    for key in ("val_loss", "final_val_loss"):
        a, b = curve(one, key), curve(two, key)
        assert sorted(a) == sorted(b) and a
        assert max(relative(a[s], b[s]) for s in a) <= TOLERANCE, key
    assert curve(one, "tokens") == curve(two, "tokens")  # tokens count every rank's rows
    assert curve(one, "lr") == curve(two, "lr")


def test_only_rank_zero_writes_the_run_directory(runs):
    one, two, proc = runs
    kinds = [e["kind"] for e in events(two)]
    assert kinds == ["start", "finished"], kinds
    start = events(two)[0]
    assert start["world_size"] == 2 and events(one)[0]["world_size"] == 1
    listing = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if "tensorboard" not in p.parts)
    assert listing(two) == listing(one)  # the same files, once each (no second metrics or events, no rank-1 dir)
    assert len(list((two / "tensorboard").rglob("events.out.tfevents.*"))) == 1
    assert not [p for p in two.rglob("*") if p.name.startswith(".")]  # no stray temporaries
    assert "Traceback" not in proc.stderr  # NullLog, progress and trackers off on rank 1


def children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def kill_everything(pid: int) -> None:
    """SIGKILL the workers and torchrun, as a machine that dies would. (SIGKILL to torchrun alone is not
    that: it starts every worker in a session of its own, so they would train on, orphaned.)"""
    for worker in children(pid):
        os.kill(worker, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


def stop_when(proc: subprocess.Popen, ready, *, what: str, stop) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        assert proc.poll() is None, f"training ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {TIMEOUT}s"
        time.sleep(0.01)
    stop()
    proc.communicate(timeout=TIMEOUT)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_stopped_or_killed_run_resumes_exactly(runs, recipes, tmp_path, how):
    """SIGTERM to torchrun (as a scheduler sends it): torchrun passes it on, both ranks stop after the same
    step with a checkpoint. SIGKILL to every process: the run resumes from its newest intact checkpoint.
    Either way the same command again resumes and ends bitwise equal to the uninterrupted two-process run."""
    _, reference, _ = runs
    out = tmp_path / "run"
    cmd = lmforge_train(recipes[1], out, processes=2)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment())
    try:
        if how == "sigterm":
            logged = lambda: (out / "metrics.jsonl").is_file() and any(
                r.get("step", 0) >= 2 for r in rows(out / "metrics.jsonl") if r)
            stop_when(proc, logged, what="step 2", stop=lambda: proc.send_signal(signal.SIGTERM))
        else:
            stop_when(proc, lambda: (out / "checkpoints" / "step-0000010").is_dir(), what="the step-10 checkpoint",
                      stop=lambda: kill_everything(proc.pid))
    finally:
        if proc.poll() is None:
            kill_everything(proc.pid)
            proc.wait(timeout=30)
    before = [e["kind"] for e in events(out)]
    assert "finished" not in before, "the run finished before it was stopped"
    if how == "sigterm":
        assert before == ["start", "interrupted"], before
        stopped_at = events(out)[-1]["step"]
        assert 2 <= stopped_at < STEPS and (out / "checkpoints" / f"step-{stopped_at:07d}").is_dir()
        expected = stopped_at
    else:
        assert before == ["start"], before
        expected = max(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("step-*"))
    run(cmd)
    after = events(out)
    assert [e["kind"] for e in after] == before + ["resume", "finished"]
    assert after[-2]["step"] == expected and after[-2]["world_size"] == 2
    assert curve(out) == curve(reference)  # the resumed curve is the uninterrupted one, step for step
    a, b = weights(out), weights(reference)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    shutil.rmtree(out)
