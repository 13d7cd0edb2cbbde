"""The spine through the CLI: ingest -> tokenizer -> train -> generate -> resume, as a user types it."""

import json

import yaml
from conftest import CODE_INCLUDE, STDLIB, run_cli, tiny_recipe

SEQ_LEN, MICRO_BATCH = 64, 8  # tiny_recipe's: one step sees MICRO_BATCH windows of SEQ_LEN tokens


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def steps_with(rows, key):
    return [r["step"] for r in rows if key in r]


def test_ingest_tokenize_train_generate(tmp_path):
    args = ["data", "ingest", STDLIB, "-o", tmp_path / "ds", "--val-fraction", "0.15"]
    for pattern in CODE_INCLUDE[:2]:
        args += ["--include", pattern]
    run_cli(*args, check=True)
    run_cli("tokenizer", "train", tmp_path / "ds", "-o", tmp_path / "tok", "--vocab-size", 400, check=True)
    # a metrics row every step, validation every 20 and a checkpoint every 10 steps
    recipe = tiny_recipe(tmp_path / "ds", tmp_path / "tok", max_steps=30, log_interval=1)
    assert recipe["train"]["seq_len"] == SEQ_LEN and recipe["train"]["micro_batch_size"] == MICRO_BATCH
    assert (recipe["train"]["eval_interval"], recipe["train"]["checkpoint_interval"]) == (20, 10)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    proc = run_cli("train", tmp_path / "r.yaml", "--out", run, "--max-steps", 25, "--set", "train.lr=0.004",
                   check=True)
    assert "25 steps" in proc.stdout and "bits/byte" in proc.stdout
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["train"]["max_steps"] == 25 and saved["train"]["lr"] == 0.004
    lineage = json.loads((run / "model" / "lmforge.json").read_text())
    assert lineage["steps"] == 25 and lineage["tokens"] == 25 * SEQ_LEN * MICRO_BATCH
    a = run_cli("generate", run / "model", "import json\n", "--max-tokens", 20, "--seed", 3, check=True)
    b = run_cli("generate", run / "model", "import json\n", "--max-tokens", 20, "--seed", 3, check=True)
    assert a.stdout == b.stdout and a.stdout.startswith("import json\n") and len(a.stdout) > len("import json\n")

    # the newest checkpoint is the last step (keep_checkpoints 2: steps 20 and 25)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000020", "step-0000025"]
    metrics_before = (run / "metrics.jsonl").read_text()
    events_before = (run / "events.jsonl").read_text()
    # a resume that changes the training itself is refused, and leaves the run as it was
    proc = run_cli("train", tmp_path / "r.yaml", "--out", run, "--max-steps", 30, "--resume",
                   "--set", "train.lr=0.005")
    assert proc.returncode == 2 and "differs" in proc.stderr
    assert (run / "metrics.jsonl").read_text() == metrics_before and (run / "events.jsonl").read_text() == events_before

    # --resume with a higher step budget continues from the newest checkpoint, step 25
    run_cli("train", tmp_path / "r.yaml", "--out", run, "--max-steps", 30, "--resume",
            "--set", "train.lr=0.004", check=True)
    events = jsonl(run / "events.jsonl")
    assert [(e["kind"], e["step"]) for e in events] == [("start", 0), ("finished", 25), ("resume", 25),
                                                        ("finished", 30)]
    lineage = json.loads((run / "model" / "lmforge.json").read_text())
    assert lineage["steps"] == 30 and lineage["tokens"] == 30 * SEQ_LEN * MICRO_BATCH
    # the newest two, and step 20: the only (so the best) validated checkpoint (keep_best)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000020", "step-0000025", "step-0000030"]
    # metrics.jsonl: the first run's rows untouched, then steps 26..30 appended: every step once, no gap
    text = (run / "metrics.jsonl").read_text()
    assert text.startswith(metrics_before)
    rows = jsonl(run / "metrics.jsonl")
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 31))
    assert [r["tokens"] for r in train_rows] == [s * SEQ_LEN * MICRO_BATCH for s in range(1, 31)]
    assert steps_with(rows, "val_loss") == [20]            # 26..30 holds no multiple of 20
    assert steps_with(rows, "final_val_loss") == [25, 30]  # each run ends with a final validation
