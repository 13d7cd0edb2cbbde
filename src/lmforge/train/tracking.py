"""Experiment trackers: TensorBoard always, MLflow and Weights & Biases when a recipe names them.

Every tracker has the same four calls (`Tracker`), so the trainer's tracking handler is a loop over a list.
Each one keeps its data inside the run directory by default, so a run directory stays the whole record of a
run, and each one survives resumption: TensorBoard by appending event files to the same folder, MLflow and
W&B by continuing the run id that `RUN/trackers.json` remembers. Only rank 0 should build trackers.

The heavy libraries are imported inside the constructors: importing this module costs nothing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from lmforge.errors import RecipeError
from lmforge.io import read_json, write_json

TRACKERS_FILE = "trackers.json"  # {tracker name: what resuming it needs (run id, tracking URI)}
KNOWN = ("tensorboard", "mlflow", "wandb")
# what to install for each tracker (the pip name is not always the module name)
INSTALL = {"tensorboard": "pip install tensorboard", "mlflow": "pip install mlflow", "wandb": "pip install wandb"}


class Tracker:
    """The interface: a no-op base, so a tracker overrides only what it records."""

    name = "tracker"

    def log_config(self, config: dict) -> None:
        """Record the resolved recipe (nested dict, as `recipe.yaml` holds it)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Record scalars at optimizer step `step` (train rows and validation rows alike)."""

    def log_event(self, event: dict) -> None:
        """Record a run event (an `events.jsonl` row: {"time", "kind", "step", ...})."""

    def close(self) -> None:
        """Flush and release; safe to call twice."""


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}: the flat keys MLflow params need."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _state(run_dir: Path) -> dict:
    path = run_dir / TRACKERS_FILE
    try:
        return read_json(path) if path.is_file() else {}
    except ValueError:  # a torn file (it is written atomically, so only by hand): start afresh
        return {}


def _remember(run_dir: Path, name: str, entry: dict) -> None:
    state = _state(run_dir)
    state[name] = entry
    write_json(run_dir / TRACKERS_FILE, state)


def _event_text(event: dict) -> str:
    rest = {k: v for k, v in event.items() if k not in ("time", "kind", "step")}
    return f"**{event.get('kind', 'event')}** at step {event.get('step')}: `{json.dumps(rest)}`"


class TensorBoard(Tracker):
    """Event files under RUN/tensorboard/, so `tensorboard --logdir runs` shows every run side by side.

    A resume or rollback event restarts the writer with `purge_step` = the restored step + 1: a new event
    file in the same folder that begins with a session-start marker, on which TensorBoard's reader drops
    the points logged earlier at that step or later (those between the checkpoint and the kill, or before
    the rollback), so re-run steps replace them instead of drawing a second curve. Every call flushes, so a
    run killed with SIGKILL leaves readable files."""

    name = "tensorboard"

    def __init__(self, run_dir: str | os.PathLike):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch imports tensorboard lazily and says so in the message
            raise RecipeError("TensorBoard logging needs the tensorboard package",
                              hint=INSTALL["tensorboard"]) from e
        self._writer = SummaryWriter
        self.dir = Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(str(self.dir), flush_secs=5)
        self._closed = False

    def log_config(self, config: dict) -> None:
        import yaml

        self.writer.add_text("config", "```yaml\n" + yaml.safe_dump(config, sort_keys=False) + "```", 0)
        self.writer.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, float(value), step)
        self.writer.flush()

    def log_event(self, event: dict) -> None:
        restored = event.get("to_step") if event.get("kind") == "rollback" else (
            event.get("step") if event.get("kind") == "resume" else None)
        if restored is not None:
            self.writer.close()
            self.writer = self._writer(str(self.dir), flush_secs=5, purge_step=int(restored) + 1)
        self.writer.add_text("events", _event_text(event), int(event.get("step") or 0))
        self.writer.flush()

    def close(self) -> None:
        if not self._closed:
            self.writer.close()
            self._closed = True


class MLflow(Tracker):
    """An MLflow run. Tracking goes to `sqlite:///RUN/mlflow.db` (artifacts in RUN/mlartifacts) unless
    MLFLOW_TRACKING_URI is set; MLflow 3 refuses its old file store (`./mlruns`) by default, so the local
    store is MLflow's own recommended SQLite one. A resumed run continues the same MLflow run.

    The experiment is the recipe's name (or MLFLOW_EXPERIMENT_NAME), the run is named after the run
    directory; params are the flattened recipe (MLflow forbids changing a param, so a key a resume changed,
    such as train.max_steps, is recorded as the tag `changed.KEY`); events are JSON artifacts under
    events/."""

    name = "mlflow"

    def __init__(self, run_dir: str | os.PathLike, config: dict):
        _require("mlflow")
        import logging

        from mlflow.tracking import MlflowClient

        self.run_dir = Path(run_dir)
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        local = not uri
        if local:
            for module in ("sqlalchemy", "alembic"):
                if importlib.util.find_spec(module) is None:
                    raise RecipeError(f"MLflow's local SQLite store needs {module} (mlflow-skinny lacks it)",
                                      hint="pip install mlflow, or set MLFLOW_TRACKING_URI to a server")
            uri = f"sqlite:///{(self.run_dir / 'mlflow.db').resolve()}"
            for noisy in ("mlflow.store.db.utils", "alembic.runtime.migration"):  # table creation chatter
                logging.getLogger(noisy).setLevel(logging.WARNING)
        self.client = MlflowClient(tracking_uri=uri)
        self._status = "FAILED"  # until a finished or interrupted event says otherwise
        self._closed = False
        saved = _state(self.run_dir).get(self.name, {})
        if saved.get("tracking_uri") == uri and self._exists(saved.get("run_id")):
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or str(config.get("name") or "lmforge")
        found = self.client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            location = (self.run_dir / "mlartifacts").resolve().as_uri() if local else None
            experiment_id = self.client.create_experiment(experiment, artifact_location=location)
        run = self.client.create_run(experiment_id, run_name=self.run_dir.name,
                                     tags={"lmforge.run_dir": str(self.run_dir.resolve())})
        self.run_id = run.info.run_id
        _remember(self.run_dir, self.name, {"run_id": self.run_id, "tracking_uri": uri})

    def _exists(self, run_id: str | None) -> bool:
        if not run_id:
            return False
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
            return True
        except MlflowException:
            return False

    def log_config(self, config: dict) -> None:
        from mlflow.entities import Param, RunTag

        logged = self.client.get_run(self.run_id).data.params
        params, tags = [], []
        for key, value in flatten(config).items():
            text = json.dumps(value) if not isinstance(value, str) else value
            if key not in logged:
                params.append(Param(key, text[:6000]))
            elif logged[key] != text[:6000]:
                tags.append(RunTag(f"changed.{key}", text[:5000]))
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        if tags:
            self.client.log_batch(self.run_id, tags=tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, int(step)) for k, v in metrics.items()])

    def log_event(self, event: dict) -> None:
        kind = str(event.get("kind", "event"))
        stamp = int(float(event.get("time") or time.time()) * 1000)
        self.client.log_dict(self.run_id, event, f"events/{int(event.get('step') or 0):07d}-{kind}-{stamp}.json")
        if kind == "finished":
            self._status = "FINISHED"
        elif kind == "interrupted":
            self._status = "KILLED"

    def close(self) -> None:
        """Ends the MLflow run as FINISHED after a finished event, KILLED after an interrupted one, else
        FAILED (the loop stopped for another reason); a resume sets it RUNNING again."""
        if not self._closed:
            self.client.set_terminated(self.run_id, status=self._status)
            self._closed = True


class WandB(Tracker):
    """A Weights & Biases run, offline by default (WANDB_MODE overrides), its files under RUN/wandb/.

    Each process writes one `offline-run-*` folder; a resumed run reuses the run id (`resume="allow"`), so
    `wandb sync RUN/wandb/offline-run-*` uploads every segment into one run. W&B history is monotonic in
    its step: a step below one already logged by this process (the re-run steps after a rollback) is not
    sent, and events are counted in the history as `events/KIND`."""

    name = "wandb"

    def __init__(self, run_dir: str | os.PathLike, config: dict):
        _require("wandb")
        import wandb

        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        saved = _state(self.run_dir).get(self.name, {})
        run_id = saved.get("run_id") or secrets.token_hex(6)  # W&B ids: letters and digits
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "lmforge", name=self.run_dir.name,
            group=str(config.get("name") or "") or None, id=run_id, resume="allow",
            mode=os.environ.get("WANDB_MODE") or "offline", dir=str(self.run_dir), config=config,
            settings=wandb.Settings(console="off", silent=True, disable_git=True),
        )
        self._last_step = -1
        self._counts: dict[str, int] = {}
        self._closed = False
        if not saved:
            _remember(self.run_dir, self.name, {"run_id": run_id})

    def log_config(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step < self._last_step:
            return
        self._last_step = step
        self.run.log({k: float(v) for k, v in metrics.items()}, step=int(step))

    def log_event(self, event: dict) -> None:
        kind = str(event.get("kind", "event"))
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self._last_step = max(self._last_step, int(event.get("step") or 0))
        self.run.log({f"events/{kind}": self._counts[kind]}, step=self._last_step)
        self.run.summary["last_event"] = json.dumps(event)

    def close(self) -> None:
        if not self._closed:
            import wandb

            self.run.finish()
            # finish() can return before W&B's service has written the run's last records (wandb 0.31,
            # offline: about 1 close in 6 here); teardown waits for it, so RUN/wandb is whole once we return
            if wandb.run is None:
                wandb.teardown()
            self._closed = True


def _require(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        raise RecipeError(f"train.trackers names {name}, which is not installed", hint=INSTALL[name])


def make_trackers(names: list[str] | tuple[str, ...], run_dir: str | os.PathLike, config: dict) -> list[Tracker]:
    """TensorBoard plus each tracker `names` lists (mlflow, wandb), each with `config` already logged.
    An unknown name, or one whose library is not installed, is a RecipeError naming the fix."""
    unknown = [n for n in names if n not in KNOWN]
    if unknown:
        raise RecipeError(f"unknown tracker {unknown[0]!r}", where="train.trackers",
                          hint=f"choose from {', '.join(KNOWN)}")
    for name in names:
        if name != "tensorboard":
            _require(name)  # before any tracker starts: a typo'd install should not leave half a run behind
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    trackers: list[Tracker] = [TensorBoard(run_dir)]
    try:
        if "mlflow" in names:
            trackers.append(MLflow(run_dir, config))
        if "wandb" in names:
            trackers.append(WandB(run_dir, config))
        for tracker in trackers:
            tracker.log_config(config)
    except BaseException:
        for tracker in trackers:
            tracker.close()
        raise
    return trackers
