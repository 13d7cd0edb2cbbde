"""`lmforge runs list` / `runs show` on run directories built by hand: planted metrics, events, checkpoints
and processes, and every figure the commands print checked against the planted values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import run_cli
from lmforge.cli.main import app
from lmforge.train.runs import pid_alive

NOW = time.time()


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_jsonl(path: Path, rows: list[dict], torn: str | None = None) -> None:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text + (torn or ""), encoding="utf-8")


def make_run(root: Path, name: str, *, max_steps=120, metrics=(), events=(), checkpoints=(), model=False,
             precision="auto", torn=False) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": name, "train": {"max_steps": max_steps,
                                                                            "precision": precision}}))
    write_jsonl(run / "metrics.jsonl", list(metrics), '{"step": 999, "loss": 0.1, "tok' if torn else None)
    write_jsonl(run / "events.jsonl", list(events), '{"time": 1, "kind": "finis' if torn else None)
    for step in checkpoints:
        (run / "checkpoints" / f"step-{step:07d}").mkdir(parents=True)
    if model:
        (run / "model").mkdir()
    return run


def train_rows(steps, *, every=10):
    """Training rows every `every` steps; tokens/s planted as 1000 + 100 * (row number)."""
    return [{"step": s, "loss": 5.0 - s / 100, "lr": 1e-3, "grad_norm": 1.0, "tokens": s * 4096,
             "tokens_per_s": 1000.0 + 100 * (i + 1), "elapsed_s": s * 0.5, "cpu_s": s}
            for i, s in enumerate(range(every, steps + 1, every))]


@pytest.fixture
def runs_root(tmp_path) -> Path:
    """Five runs, one of each status, and a folder that is not a run."""
    root = tmp_path / "runs"
    # finished after a resume and a rollback: 12 train rows (tokens/s of the last 10: 1300..2200, mean 1750),
    # validation at 30 (2.9), 60 (2.5, the best), 90 (2.6) and the final 2.55 on more tokens
    finished_metrics = train_rows(120)
    finished_metrics[3:3] = [{"step": 30, "val_loss": 2.9, "val_bpb": 1.45, "val_tokens": 8192}]
    finished_metrics[7:7] = [{"step": 60, "val_loss": 2.5, "val_bpb": 1.25, "val_tokens": 8192}]
    finished_metrics[11:11] = [{"step": 90, "val_loss": 2.6, "val_bpb": 1.3, "val_tokens": 8192}]
    finished_metrics.append({"step": 120, "final_val_loss": 2.55, "final_val_bpb": 1.275, "val_tokens": 65536})
    make_run(root, "done", metrics=finished_metrics, checkpoints=[100, 120], model=True, events=[
        {"time": NOW - 900, "kind": "start", "step": 0, "pid": dead_pid(), "precision": "fp32"},
        {"time": NOW - 800, "kind": "checkpoint", "step": 50},
        {"time": NOW - 700, "kind": "resume", "step": 50, "pid": dead_pid(), "precision": "bf16"},
        {"time": NOW - 600, "kind": "rollback", "step": 80, "to_step": 50, "skip": [50, 80], "reason": "loss spike"},
        {"time": NOW - 500, "kind": "resume", "step": 100, "pid": dead_pid(), "precision": "bf16"},
        {"time": NOW - 400, "kind": "finished", "step": 120},
    ])
    # killed mid-write: a torn last line in both files, its process gone
    make_run(root, "killed", max_steps=400, metrics=train_rows(30), checkpoints=[20], torn=True, events=[
        {"time": NOW - 300, "kind": "start", "step": 0, "pid": dead_pid(), "precision": "fp32"}])
    # running: this very process logged its start (after it started)
    make_run(root, "live", max_steps=1000, metrics=train_rows(20), events=[
        {"time": NOW, "kind": "start", "step": 0, "pid": os.getpid(), "precision": "bf16"}])
    # interrupted by Ctrl-C after a checkpoint
    make_run(root, "paused", max_steps=200, metrics=train_rows(40), checkpoints=[40], events=[
        {"time": NOW - 200, "kind": "start", "step": 0, "pid": os.getpid(), "precision": "fp32"},
        {"time": NOW - 100, "kind": "interrupted", "step": 40}])
    # a pid that is alive but was recycled: this process started long after the run's start event
    make_run(root, "recycled", max_steps=50, events=[
        {"time": NOW - 10 * 86400, "kind": "start", "step": 0, "pid": os.getpid(), "precision": "fp32"}])
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("not a run")
    return root


def invoke(*args):
    result = CliRunner().invoke(app, list(map(str, args)), env={"COLUMNS": "300"})
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_runs_list_table(runs_root):
    out = invoke("runs", "list", runs_root)
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:] if line.strip()}
    header = out.splitlines()[0].split()
    assert header[:2] == ["run", "status"] and "rollbacks" in header
    r = str(runs_root)
    assert rows == {
        #                 status        step       best     bits/byte  tok/s   res  rb   precision ckpt
        f"{r}/done":     ["finished", "120/120", "2.5000", "1.2500", "1,750", "2", "1", "bf16", "120"],
        f"{r}/killed":   ["stopped", "30/400", "-", "-", "1,200", "0", "0", "fp32", "20"],
        f"{r}/live":     ["running", "20/1000", "-", "-", "1,150", "0", "0", "bf16", "-"],
        f"{r}/paused":   ["interrupted", "40/200", "-", "-", "1,250", "0", "0", "fp32", "40"],
        f"{r}/recycled": ["stopped", "0/50", "-", "-", "-", "0", "0", "fp32", "-"],
    }


def test_runs_list_json(runs_root):
    runs = {Path(r["path"]).name: r for r in json.loads(invoke("runs", "list", runs_root, "--json"))}
    assert sorted(runs) == ["done", "killed", "live", "paused", "recycled"]
    done = runs["done"]
    assert done == {
        "path": str(runs_root / "done"), "status": "finished", "step": 120, "max_steps": 120,
        "best_val_loss": 2.5, "best_val_bpb": 1.25, "best_val_step": 60,
        "final_val_loss": 2.55, "final_val_bpb": 1.275, "tokens_per_s": pytest.approx(1750.0),
        "tokens": 120 * 4096, "resumes": 2, "rollbacks": 1, "precision": "bf16",
        "last_checkpoint": str(runs_root / "done" / "checkpoints" / "step-0000120"), "last_checkpoint_step": 120,
        "model": str(runs_root / "done" / "model"), "pid": done["pid"],
    }
    assert runs["live"]["pid"] == os.getpid()
    killed = runs["killed"]  # the torn lines (step 999, a "finis..." event) are skipped
    assert (killed["step"], killed["status"], killed["tokens"]) == (30, "stopped", 30 * 4096)


def test_runs_show(runs_root):
    out = invoke("runs", "show", runs_root / "done")
    lines = [" ".join(line.split()) for line in out.splitlines() if line.strip()]
    d = runs_root / "done"
    assert lines[:12] == [
        f"run {d}",
        "status finished",
        "step 120/120",
        "tokens 491,520",
        "best validation 2.5000 nats/token, 1.2500 bits/byte (step 60)",
        "final validation 2.5500 nats/token, 1.2750 bits/byte",
        "throughput 1,750 tokens/s (mean of the last 10 logged rows)",
        "resumes 2",
        "rollbacks 1",
        "precision bf16",
        f"last checkpoint {d}/checkpoints/step-0000120",
        f"model {d}/model",
    ]
    assert lines[12] == "recent events"
    assert lines[13].split() == ["time", "event", "step", "details"]

    def when(age):
        return datetime.fromtimestamp(NOW - age).strftime("%Y-%m-%d %H:%M:%S")

    events = lines[14:]
    assert events[0] == f"{when(900)} start 0 pid={json.loads((d / 'events.jsonl').read_text().splitlines()[0])['pid']} " \
                        'precision="fp32"'
    assert events[1] == f"{when(800)} checkpoint 50"
    assert events[3] == f'{when(600)} rollback 80 to_step=50 skip=[50, 80] reason="loss spike"'
    assert events[5] == f"{when(400)} finished 120"
    assert len(events) == 6


def test_runs_show_running_names_its_pid(runs_root):
    out = invoke("runs", "show", runs_root / "live")
    assert f"status running (pid {os.getpid()})" in [" ".join(line.split()) for line in out.splitlines()]
    data = json.loads(invoke("runs", "show", runs_root / "live", "--json"))
    assert data["status"] == "running" and [e["kind"] for e in data["events"]] == ["start"]


def test_recent_events_are_the_last_ten(tmp_path):
    events = [{"time": NOW - 100 + i, "kind": "checkpoint", "step": i} for i in range(25)]
    run = make_run(tmp_path, "many", events=events)
    data = json.loads(invoke("runs", "show", run, "--json"))
    assert [e["step"] for e in data["events"]] == list(range(15, 25))
    assert data["status"] == "stopped"  # no start event, no model, no process


def test_a_resumed_finished_run_is_not_finished_any_more(tmp_path):
    """A finished run resumed with a higher max_steps (model/ still there) whose process then died."""
    run = make_run(tmp_path, "extended", max_steps=200, model=True, events=[
        {"time": NOW - 50, "kind": "start", "step": 0, "pid": dead_pid(), "precision": "fp32"},
        {"time": NOW - 40, "kind": "finished", "step": 100},
        {"time": NOW - 30, "kind": "resume", "step": 100, "pid": dead_pid(), "precision": "fp32"}])
    assert json.loads(invoke("runs", "show", run, "--json"))["status"] == "stopped"
    (run / "events.jsonl").write_text("")  # a run from before events recorded finishing: model/ is the mark
    assert json.loads(invoke("runs", "show", run, "--json"))["status"] == "finished"


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert pid_alive(os.getpid(), since=NOW)
    assert not pid_alive(os.getpid(), since=NOW - 10 * 86400)  # this process started after that: a recycled pid
    assert not pid_alive(dead_pid())


def test_runs_show_on_a_directory_that_is_not_a_run_is_one_line(runs_root):
    proc = run_cli("runs", "show", runs_root / "notes")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"error: {runs_root / 'notes'}: not a run directory: it has none of recipe.yaml, "
                                   "events.jsonl, metrics.jsonl (pass a run directory (the --out of lmforge train); "
                                   "lmforge runs list shows them)")
    proc = run_cli("runs", "list", runs_root / "nope")
    assert proc.returncode == 2 and "no such directory" in proc.stderr


def test_runs_list_with_no_runs(tmp_path):
    assert invoke("runs", "list", tmp_path).strip() == f"no run directories under {tmp_path}"


def test_runs_is_a_verb():
    assert "runs" in invoke("--help")
    out = invoke("runs", "--help")
    assert "list" in out and "show" in out
