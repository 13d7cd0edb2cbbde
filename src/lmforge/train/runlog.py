"""The run directory's two logs: metrics.jsonl (one row per logged step or evaluation) and events.jsonl
(start, resume, rollback, checkpoint, interrupted, finished). Rank 0 writes; other ranks get `NullLog`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class RunLog:
    def __init__(self, run_dir: Path):
        self.metrics_path = Path(run_dir) / "metrics.jsonl"
        self.metrics = open(self.metrics_path, "a", encoding="utf-8")
        self.events = open(Path(run_dir) / "events.jsonl", "a", encoding="utf-8")
        self.listeners: list = []  # trackers: .log_event(row)

    def metric(self, **row) -> None:
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()

    def event(self, kind: str, **row) -> dict:
        row = {"time": time.time(), "kind": kind, **row}
        self.events.write(json.dumps(row) + "\n")
        self.events.flush()
        for listener in self.listeners:
            listener.log_event(row)
        return row

    def truncate_metrics_after(self, step: int) -> None:
        """Drop rows past `step` (and a torn last line): a resume recomputes them exactly."""
        self.metrics.close()
        kept = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("step", 0) <= step:
                kept.append(line + "\n")
        tmp = self.metrics_path.with_name(f".{self.metrics_path.name}.{os.getpid()}")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, self.metrics_path)
        self.metrics = open(self.metrics_path, "a", encoding="utf-8")

    def close(self) -> None:
        self.metrics.close()
        self.events.close()


class NullLog:
    listeners: list = []

    def metric(self, **row) -> None:
        pass

    def event(self, kind: str, **row) -> dict:
        return {"kind": kind, **row}

    def truncate_metrics_after(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass
