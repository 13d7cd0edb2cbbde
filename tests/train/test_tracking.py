"""Trackers, each read back by its own library: TensorBoard's event reader, MLflow's client, and W&B's
protobuf records in its offline `.wandb` files. Planted values go in; the same values must come out."""

from __future__ import annotations

import json
import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lmforge.errors import RecipeError
from lmforge.train.tracking import TRACKERS_FILE, flatten, make_trackers
from conftest import require

CONFIG = {"name": "tiny", "seed": 7, "train": {"lr": 0.001, "max_steps": 20, "precision": "fp32"},
          "data": {"datasets": ["a", "b"]}}
# a planted curve: loss 10/step, a validation row every 5 steps
TRAIN = {s: {"loss": 10.0 / s, "lr": 1e-3 * s, "tokens_per_s": 100.0 + s} for s in range(1, 11)}
VAL = {s: {"val_loss": 3.0 - s / 10, "val_bpb": 1.5 - s / 100} for s in (5, 10)}


def log_planted(trackers, steps=range(1, 11), scale=1.0):
    for s in steps:
        for t in trackers:
            t.log_metrics({k: v * scale for k, v in TRAIN[s].items()}, s)
            if s in VAL:
                t.log_metrics({k: v * scale for k, v in VAL[s].items()}, s)


def tb_reader(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def tb_texts(acc, tag: str) -> list[tuple[int, str]]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(f"{tag}/text_summary")]


def tb_scalars(acc, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


# --- TensorBoard ------------------------------------------------------------------------------------------

def test_tensorboard_scalars_events_and_config_read_back(tmp_path):
    [tb] = make_trackers([], tmp_path, CONFIG)  # TensorBoard is always there
    log_planted([tb])
    tb.log_event({"time": 1.0, "kind": "checkpoint", "step": 7, "path": "checkpoints/step-0000007"})
    tb.close()
    tb.close()  # twice is harmless
    acc = tb_reader(tmp_path)
    for key in ("loss", "lr", "tokens_per_s"):
        assert tb_scalars(acc, key) == [(s, pytest.approx(TRAIN[s][key], rel=1e-6)) for s in range(1, 11)]
    assert tb_scalars(acc, "val_bpb") == [(s, pytest.approx(VAL[s]["val_bpb"], rel=1e-6)) for s in (5, 10)]
    [(step, text)] = tb_texts(acc, "events")
    assert step == 7 and text == '**checkpoint** at step 7: `{"path": "checkpoints/step-0000007"}`'
    [(step, config)] = tb_texts(acc, "config")
    assert step == 0 and "max_steps: 20" in config and "lr: 0.001" in config


def test_tensorboard_resume_appends_and_rerun_steps_replace_old_ones(tmp_path):
    """A run killed at step 10 resumes from its step-5 checkpoint and re-logs 6..10: the reader shows 1..5
    from the first process and the resumed process's values from 6 on, not both."""
    [tb] = make_trackers([], tmp_path, CONFIG)
    log_planted([tb])
    tb.close()
    [tb] = make_trackers([], tmp_path, CONFIG)
    tb.log_event({"time": 2.0, "kind": "resume", "step": 5})
    log_planted([tb], steps=range(6, 11), scale=2.0)
    tb.close()
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) >= 2  # appended, not replaced
    acc = tb_reader(tmp_path)
    assert tb_scalars(acc, "loss") == [(s, pytest.approx(TRAIN[s]["loss"] * (1 if s <= 5 else 2), rel=1e-6))
                                       for s in range(1, 11)]
    assert tb_scalars(acc, "val_loss") == [(5, pytest.approx(VAL[5]["val_loss"])),
                                           (10, pytest.approx(VAL[10]["val_loss"] * 2))]
    assert [step for step, _ in tb_texts(acc, "events")] == [5]


def test_tensorboard_rollback_replaces_the_rolled_back_steps(tmp_path):
    """A spike at step 8 rolls back to step 5: steps 6..8 are re-run (other data, other losses) and the
    reader keeps only the re-run values, plus the rollback's text at step 8."""
    [tb] = make_trackers([], tmp_path, CONFIG)
    log_planted([tb], steps=range(1, 9))
    tb.log_event({"time": 1.0, "kind": "rollback", "step": 8, "to_step": 5, "skip": [5, 8], "reason": "spike"})
    log_planted([tb], steps=range(6, 11), scale=0.5)
    tb.close()
    acc = tb_reader(tmp_path)
    assert tb_scalars(acc, "loss") == [(s, pytest.approx(TRAIN[s]["loss"] * (1 if s <= 5 else 0.5), rel=1e-6))
                                       for s in range(1, 11)]
    [(step, text)] = tb_texts(acc, "events")
    assert step == 8 and "rollback" in text and '"to_step": 5' in text and '"skip": [5, 8]' in text


def test_tensorboard_data_survives_sigkill(tmp_path):
    """Every call flushes: a writer killed with SIGKILL (no close, no atexit) leaves every logged step."""
    code = textwrap.dedent(f"""
        import sys, time
        from lmforge.train.tracking import make_trackers
        [tb] = make_trackers([], {str(tmp_path)!r}, {{}})
        for s in range(1, 8):
            tb.log_metrics({{"loss": 1.0 / s}}, s)
        print("logged", flush=True)
        time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "logged"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert tb_scalars(tb_reader(tmp_path), "loss") == [(s, pytest.approx(1.0 / s)) for s in range(1, 8)]


# --- names ------------------------------------------------------------------------------------------------

def test_unknown_tracker_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match=r"train.trackers: unknown tracker 'neptune' \(choose from tensorboard, "
                                          r"mlflow, wandb\)"):
        make_trackers(["neptune"], tmp_path, CONFIG)


@pytest.mark.parametrize("name", ["mlflow", "wandb"])
def test_a_named_tracker_that_is_not_installed_names_the_install(tmp_path, monkeypatch, name):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == name else real(m, *a))
    with pytest.raises(RecipeError, match=rf"train.trackers names {name}, which is not installed "
                                          rf"\(pip install {name}\)"):
        make_trackers([name], tmp_path / "run", CONFIG)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_flatten():
    assert flatten(CONFIG) == {"name": "tiny", "seed": 7, "train.lr": 0.001, "train.max_steps": 20,
                               "train.precision": "fp32", "data.datasets": ["a", "b"]}


# --- MLflow -----------------------------------------------------------------------------------------------

@pytest.fixture
def local_mlflow(monkeypatch):
    require("mlflow")
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)


def mlflow_client(run_dir: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{(run_dir / 'mlflow.db').resolve()}")


def mlflow_history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_mlflow_metrics_params_events_read_back_with_mlflows_client(tmp_path, local_mlflow):
    tb, ml = make_trackers(["mlflow"], tmp_path, CONFIG)
    log_planted([tb, ml])
    ml.log_event({"time": 3.0, "kind": "finished", "step": 10})
    for t in (tb, ml):
        t.close()
    client = mlflow_client(tmp_path)
    run_id = json.loads((tmp_path / TRACKERS_FILE).read_text())["mlflow"]["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == tmp_path.name
    assert client.get_experiment(run.info.experiment_id).name == "tiny"
    assert run.data.params == {"name": "tiny", "seed": "7", "train.lr": "0.001", "train.max_steps": "20",
                               "train.precision": "fp32", "data.datasets": '["a", "b"]'}
    for key in ("loss", "lr", "tokens_per_s"):
        assert mlflow_history(client, run_id, key) == [(s, pytest.approx(TRAIN[s][key])) for s in range(1, 11)]
    assert mlflow_history(client, run_id, "val_loss") == [(s, pytest.approx(VAL[s]["val_loss"])) for s in (5, 10)]
    [artifact] = client.list_artifacts(run_id, "events")
    assert artifact.path.startswith("events/0000010-finished-")
    assert str(tmp_path / "mlartifacts") in run.info.artifact_uri  # artifacts stay inside the run directory


def test_mlflow_resume_continues_the_same_run(tmp_path, local_mlflow):
    _, ml = make_trackers(["mlflow"], tmp_path, CONFIG)
    log_planted([ml], steps=range(1, 6))
    first = ml.run_id
    ml.close()  # no finished event: the run ended some other way
    client = mlflow_client(tmp_path)
    assert client.get_run(first).info.status == "FAILED"

    longer = {**CONFIG, "train": {**CONFIG["train"], "max_steps": 40}}
    _, ml = make_trackers(["mlflow"], tmp_path, longer)
    assert ml.run_id == first
    assert client.get_run(first).info.status == "RUNNING"
    log_planted([ml], steps=range(6, 11))
    ml.log_event({"time": 4.0, "kind": "interrupted", "step": 10})
    ml.close()
    run = client.get_run(first)
    assert run.info.status == "KILLED"
    assert run.data.params["train.max_steps"] == "20" and run.data.tags["changed.train.max_steps"] == "40"
    assert mlflow_history(client, first, "loss") == [(s, pytest.approx(TRAIN[s]["loss"])) for s in range(1, 11)]
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_mlflow_tracking_uri_from_the_environment(tmp_path, local_mlflow, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'server.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "shared")
    _, ml = make_trackers(["mlflow"], tmp_path / "run", CONFIG)
    ml.log_metrics({"loss": 2.5}, 1)
    ml.close()
    assert not (tmp_path / "run" / "mlflow.db").exists()
    client = MlflowClient(tracking_uri=uri)
    assert client.get_experiment_by_name("shared") is not None
    assert mlflow_history(client, ml.run_id, "loss") == [(1, 2.5)]


# --- Weights & Biases (offline) ---------------------------------------------------------------------------

@pytest.fixture
def offline_wandb(tmp_path_factory, monkeypatch):
    require("wandb")
    home = tmp_path_factory.mktemp("wandb-home")
    for var in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))


def wandb_records(path: Path):
    """The records of a `.wandb` file: W&B's own protobuf `Record`s in LevelDB-log framing (a 7-byte file
    header, 32 KiB blocks, each chunk a 7-byte header: checksum, length, type FULL/FIRST/MIDDLE/LAST)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, parts = 7, 32768, []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        parts.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record


def wandb_segments(run_dir: Path) -> list[dict]:
    """Per offline-run folder, in order: its run id and its history rows {step: {key: value}}."""
    out = []
    # W&B names each offline-run-DATE_TIME-RUNID, with -N after it for a second one started in the same second
    name = re.compile(r"offline-run-(\d{8}_\d{6})-([A-Za-z0-9]+)(?:-(\d+))?")
    folders = {folder: name.fullmatch(folder.name).groups() for folder in (run_dir / "wandb").glob("offline-run-*")}
    for folder, (when, folder_id, again) in sorted(folders.items(), key=lambda f: (f[1][0], int(f[1][2] or 0))):
        [file] = folder.glob("run-*.wandb")
        run_id, history, config = None, {}, {}
        for r in wandb_records(file):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                run_id = run_id or r.run.run_id or None
                config.update({i.key: json.loads(i.value_json) for i in r.run.config.update})
            elif kind == "history":
                row = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
                history.setdefault(r.history.step.num, {}).update(
                    {k: v for k, v in row.items() if not k.startswith("_")})
        assert run_id == folder_id  # the run record is written: close() waits for W&B to finish
        out.append({"id": folder_id, "history": history, "config": config})
    return out


def test_wandb_offline_history_and_resume_read_back_from_its_files(tmp_path, offline_wandb):
    _, wb = make_trackers(["wandb"], tmp_path, CONFIG)
    log_planted([wb], steps=range(1, 8))
    wb.log_event({"time": 1.0, "kind": "rollback", "step": 7, "to_step": 5, "skip": [5, 7], "reason": "spike"})
    log_planted([wb], steps=range(6, 8), scale=3.0)  # re-run steps after the rollback: below 7, not sent
    wb.close()
    run_id = json.loads((tmp_path / TRACKERS_FILE).read_text())["wandb"]["run_id"]

    _, wb = make_trackers(["wandb"], tmp_path, CONFIG)  # the resumed process
    log_planted([wb], steps=range(8, 11))
    wb.close()

    first, second = wandb_segments(tmp_path)
    assert first["id"] == second["id"] == run_id
    assert first["config"]["train"] == CONFIG["train"]
    expected = {s: {**TRAIN[s], **VAL.get(s, {})} for s in range(1, 11)}
    # step 6 came again below the last logged step (7): dropped; step 7 again: W&B's open row takes the new values
    expected[7] = {**{k: v * 3 for k, v in TRAIN[7].items()}, "events/rollback": 1}
    merged = {**first["history"], **second["history"]}
    assert sorted(merged) == list(range(1, 11))
    for s, row in expected.items():
        assert merged[s] == pytest.approx(row), s
