"""Checkpoints: a sha256 manifest over every file, atomic appearance (a crash inside a save leaves no
checkpoint and no debris), keep-last-N plus keep-best pruning, `--checkpoint-every`, and what rerunning a run
directory does: refuse a changed recipe naming the keys, say a finished run is finished."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from conftest import run_cli, tiny_recipe

from lmforge.io import sha256_file
from lmforge.train.checkpoint import FILES, checkpoint_dirs, is_intact, latest_intact, save_checkpoint
from lmforge.train.recipe import parse_recipe
from lmforge.train.trainer import train


def names(run) -> list[str]:
    return [p.name for p in checkpoint_dirs(run)]


def events(run) -> list[dict]:
    return [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run12(small_dataset, small_tokenizer, tmp_path_factory):
    raw = tiny_recipe(small_dataset, small_tokenizer, max_steps=12, checkpoint_interval=4, keep_checkpoints=10,
                      eval_interval=6)
    out = tmp_path_factory.mktemp("runs") / "r"
    train(parse_recipe(raw), out, progress=False)
    return raw, out


def test_manifest_covers_every_file_and_catches_any_change(run12):
    _, out = run12
    assert names(out) == ["step-0000000", "step-0000004", "step-0000008", "step-0000012"]
    for ckpt in checkpoint_dirs(out):
        manifest = json.loads((ckpt / "manifest.json").read_text())
        assert set(manifest) == set(os.listdir(ckpt)) - {"manifest.json"} == set(FILES)
        assert all(sha256_file(ckpt / name) == digest for name, digest in manifest.items())
        assert is_intact(ckpt)
        state = json.loads((ckpt / "state.json").read_text())
        assert state["step"] == int(ckpt.name.split("-")[1]) and state["data_position"] == state["step"]
    ckpt = checkpoint_dirs(out)[-1]
    for name in FILES:  # one flipped byte anywhere is caught
        path = ckpt / name
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        assert not is_intact(ckpt), name
        path.write_bytes(original)
        assert is_intact(ckpt)
    (ckpt / "manifest.json").rename(ckpt / "manifest.bak")  # no manifest: not a checkpoint to resume from
    try:
        with pytest.warns(UserWarning, match="incomplete or corrupt"):
            assert latest_intact(out) == checkpoint_dirs(out)[-2]
    finally:
        (ckpt / "manifest.bak").rename(ckpt / "manifest.json")


def test_crash_inside_a_save_leaves_no_checkpoint_and_the_old_ones_intact(run12, monkeypatch, tmp_path):
    import shutil

    import safetensors.torch

    raw, src = run12
    out = tmp_path / "r"
    shutil.copytree(src, out)
    shutil.rmtree(out / "model")
    before = sorted(os.listdir(out / "checkpoints"))
    digests = {n: json.loads((out / "checkpoints" / n / "manifest.json").read_text()) for n in before}

    def dies_half_way(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 1000)  # half a file, then the disk fills
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", dies_half_way)
    longer = {**raw, "train": {**raw["train"], "max_steps": 16}}  # a resumable change: steps 13-16, save at 16
    with pytest.raises(OSError, match="No space"):
        train(parse_recipe(longer), out, progress=False)
    assert sorted(os.listdir(out / "checkpoints")) == before  # no step-0000016, no temporary sibling
    for n in before:
        assert is_intact(out / "checkpoints" / n)
        assert json.loads((out / "checkpoints" / n / "manifest.json").read_text()) == digests[n]

    monkeypatch.undo()
    result = train(parse_recipe(longer), out, progress=False)
    assert result["resumed_from"] == 12 and result["steps"] == 16
    assert names(out)[-1] == "step-0000016" and is_intact(out / "checkpoints" / "step-0000016")


@pytest.fixture
def state(small_dataset, small_tokenizer, tmp_path):
    """A real TrainState (model, optimizer, methods) from setup(), saved at planted steps."""
    from lmforge.train.setup import setup

    raw = tiny_recipe(small_dataset, small_tokenizer)
    return setup(parse_recipe(raw), tmp_path / "run", progress=False)


# (step, validation loss measured at that checkpoint or None) and, after saving it, the checkpoints that
# keep_checkpoints=2 plus keep_best must leave: the newest two and the lowest validation loss so far.
PLANTED = [
    (1, 5.0, [1]),
    (2, 4.0, [1, 2]),
    (3, None, [2, 3]),
    (4, 4.5, [2, 3, 4]),
    (5, 3.0, [4, 5]),
    (6, None, [5, 6]),
    (7, 3.5, [5, 6, 7]),
    (8, 6.0, [5, 7, 8]),
    (9, 2.5, [8, 9]),
]


def test_keep_last_n_and_keep_best_prune_against_planted_validation_losses(state):
    for step, val, expected in PLANTED:
        state.step = state.data_position = step
        save_checkpoint(state, keep=2, keep_best=True, val_loss=val)
        assert names(state.run_dir) == [f"step-{s:07d}" for s in expected], step
    assert all(is_intact(p) for p in checkpoint_dirs(state.run_dir))
    for step in (10, 11):  # without keep_best: only the newest two
        state.step = step
        save_checkpoint(state, keep=2, keep_best=False, val_loss=9.0)
    assert names(state.run_dir) == ["step-0000010", "step-0000011"]


@pytest.fixture(scope="module")
def cli_run(small_dataset, small_tokenizer, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    recipe = root / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(small_dataset, small_tokenizer, checkpoint_interval=10)))
    out = root / "run"
    args = ["train", recipe, "--out", out, "--max-steps", 12, "--checkpoint-every", 4,
            "--set", "train.keep_checkpoints=10"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    return args, out


def test_checkpoint_every_on_the_cli(cli_run):
    _, out = cli_run
    # multiples of 4 (the recipe says 10), plus the spike guard's step 0 and the last step
    assert names(out) == ["step-0000000", "step-0000004", "step-0000008", "step-0000012"]
    saved = yaml.safe_load((out / "recipe.yaml").read_text())
    assert saved["train"]["checkpoint_interval"] == 4 and saved["train"]["max_steps"] == 12


def test_rerun_of_a_finished_run_says_finished_and_a_changed_recipe_is_refused(cli_run):
    args, out = cli_run
    n_events = len(events(out))
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "finished" in again.stdout and "12 steps" in again.stdout
    assert len(events(out)) == n_events  # nothing ran

    changed = run_cli(*args, "--set", "train.lr=0.001", "--set", "train.seq_len=32")
    assert changed.returncode != 0
    err = " ".join(changed.stderr.split())  # rich wraps long lines
    assert "differs" in err and "train.lr" in err and "train.seq_len" in err and "Traceback" not in err
    assert "train.warmup_steps" not in err  # names the keys that differ, only those
    assert len(events(out)) == n_events and names(out)[-1] == "step-0000012"
