"""What a run directory says about its run, read only from disk (`lmforge runs list` / `runs show`).

A run directory holds recipe.yaml, metrics.jsonl, events.jsonl, checkpoints/step-NNNNNNN/ and, once it
finished, model/. Nothing here imports torch or asks the trainer: a run that is training right now, one that
was killed, and one copied from another machine all read the same way. The JSONL files are appended by a
process that may have been killed mid-line, so a line that does not parse (the torn last one) is skipped.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import DataError

RECENT_ROWS = 10     # throughput: mean tokens/s of the last this many logged training rows
RECENT_EVENTS = 10   # `runs show`: this many of the newest events
MARKERS = ("recipe.yaml", "events.jsonl", "metrics.jsonl")  # any one makes a directory a run directory


@dataclass
class RunSummary:
    path: str
    status: str                       # finished | interrupted | running | stopped
    step: int | None                  # the last step metrics.jsonl (else events.jsonl) recorded
    max_steps: int | None             # recipe.yaml's train.max_steps
    best_val_loss: float | None       # lowest validation loss (periodic or final), nats/token
    best_val_bpb: float | None        # bits/byte of that same evaluation
    best_val_step: int | None
    final_val_loss: float | None
    final_val_bpb: float | None
    tokens_per_s: float | None        # mean of the last RECENT_ROWS training rows
    tokens: int | None                # training tokens seen at the last training row
    resumes: int
    rollbacks: int
    precision: str | None             # as resolved by the last start/resume, else the recipe's setting
    last_checkpoint: str | None       # the newest checkpoints/step-NNNNNNN directory
    last_checkpoint_step: int | None
    model: str | None                 # RUN/model, once the run has finished
    pid: int | None                   # the process of the last start/resume
    events: list[dict] = field(default_factory=list)  # the newest RECENT_EVENTS events

    def to_dict(self, *, events: bool = True) -> dict[str, Any]:
        data = asdict(self)
        if not events:
            data.pop("events")
        return data


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file that parse as objects; a torn or garbled line is skipped, not fatal."""
    if not path.is_file():
        return []
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in MARKERS)


def find_runs(root: str | os.PathLike) -> list[Path]:
    """ROOT itself if it is a run directory, else the run directories directly under it, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("no such directory", where=str(root), hint="pass the folder your runs are in (default: runs)")
    if is_run_dir(root):
        return [root]
    return sorted(p for p in root.iterdir() if is_run_dir(p))


def _max_steps(run_dir: Path) -> tuple[int | None, str | None]:
    import yaml

    try:
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8")) or {}
        train = recipe.get("train") or {}
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None, None
    steps = train.get("max_steps")
    return (int(steps) if isinstance(steps, int) else None), train.get("precision")


def _checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    root = run_dir / "checkpoints"
    found = []
    if root.is_dir():
        for p in root.glob("step-*"):
            try:
                found.append((int(p.name.split("-", 1)[1]), p))
            except ValueError:
                continue  # a temporary or foreign directory
    return sorted(found)


def _process_started(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), from /proc; None where /proc can't say."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 (starttime), counted after the ")" that ends the command name
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def pid_alive(pid: int, since: float | None = None) -> bool:
    """Whether `pid` is a live process on this host and, when `since` (the time it logged its start event)
    is given, one that was already running then: a recycled pid belongs to a process that started later."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    except OSError:
        return False
    started = _process_started(pid)
    return not (since is not None and started is not None and started > since + 2.0)


def _status(events: list[dict], has_model: bool) -> tuple[str, int | None]:
    """finished: a finished event after the last start/resume, or model/ present (runs from before events
    recorded finishing) unless a start/resume came after a finished event (a finished run being extended);
    interrupted: the last event says so; running: the last start/resume's process is alive here; else
    stopped (killed or crashed)."""
    kinds = [e.get("kind") for e in events]
    last_start = max((i for i, k in enumerate(kinds) if k in ("start", "resume")), default=-1)
    last_finish = max((i for i, k in enumerate(kinds) if k == "finished"), default=-1)
    pid = events[last_start].get("pid") if last_start >= 0 else None
    pid = pid if isinstance(pid, int) and not isinstance(pid, bool) else None
    if last_finish > last_start:
        return "finished", pid
    if kinds and kinds[-1] == "interrupted":
        return "interrupted", pid
    if pid is not None and pid_alive(pid, _num(events[last_start].get("time"))):
        return "running", pid
    if has_model and last_finish < 0:
        return "finished", pid
    return "stopped", pid


def _num(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def summarize(run_dir: str | os.PathLike) -> RunSummary:
    """Everything `lmforge runs` prints about one run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError("no such run directory", where=str(run_dir),
                        hint="pass a run directory (the --out of lmforge train), e.g. runs/tiny-code-stdlib")
    if not is_run_dir(run_dir):
        raise DataError("not a run directory: it has none of " + ", ".join(MARKERS), where=str(run_dir),
                        hint="pass a run directory (the --out of lmforge train); lmforge runs list shows them")
    metrics = read_jsonl(run_dir / "metrics.jsonl")
    events = read_jsonl(run_dir / "events.jsonl")
    max_steps, recipe_precision = _max_steps(run_dir)

    train_rows = [r for r in metrics if "loss" in r and isinstance(r.get("step"), int)]
    evals = [(r["val_loss"], r.get("val_bpb"), r.get("step")) for r in metrics if _num(r.get("val_loss")) is not None]
    evals += [(r["final_val_loss"], r.get("final_val_bpb"), r.get("step")) for r in metrics
              if _num(r.get("final_val_loss")) is not None]
    best = min(evals, key=lambda e: e[0]) if evals else (None, None, None)
    final = next((r for r in reversed(metrics) if "final_val_loss" in r), {})
    rates = [_num(r.get("tokens_per_s")) for r in train_rows[-RECENT_ROWS:]]
    rates = [r for r in rates if r is not None]
    stepped = [r["step"] for r in metrics if isinstance(r.get("step"), int)]
    step = stepped[-1] if stepped else next((e["step"] for e in reversed(events) if isinstance(e.get("step"), int)),
                                            None)

    model = run_dir / "model"
    status, pid = _status(events, model.is_dir())
    starts = [e for e in events if e.get("kind") in ("start", "resume") and e.get("precision")]
    checkpoints = _checkpoints(run_dir)
    return RunSummary(
        path=str(run_dir),
        status=status,
        step=step,
        max_steps=max_steps,
        best_val_loss=_num(best[0]),
        best_val_bpb=_num(best[1]),
        best_val_step=best[2],
        final_val_loss=_num(final.get("final_val_loss")),
        final_val_bpb=_num(final.get("final_val_bpb")),
        tokens_per_s=sum(rates) / len(rates) if rates else None,
        tokens=train_rows[-1].get("tokens") if train_rows else None,
        resumes=sum(e.get("kind") == "resume" for e in events),
        rollbacks=sum(e.get("kind") == "rollback" for e in events),
        precision=starts[-1]["precision"] if starts else recipe_precision,
        last_checkpoint=str(checkpoints[-1][1]) if checkpoints else None,
        last_checkpoint_step=checkpoints[-1][0] if checkpoints else None,
        model=str(model) if model.is_dir() else None,
        pid=pid,
        events=events[-RECENT_EVENTS:],
    )


def event_details(event: dict) -> str:
    """An event's own fields (all but time, kind and step), as `key=value` pairs."""
    return " ".join(f"{k}={json.dumps(v)}" for k, v in event.items() if k not in ("time", "kind", "step"))


def event_time(event: dict) -> str:
    t = _num(event.get("time"))
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t is not None else "-"
