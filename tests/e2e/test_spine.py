"""The spine through the CLI: ingest -> tokenizer -> train -> generate, as a user types it."""

import json

import yaml
from conftest import CODE_INCLUDE, STDLIB, run_cli, tiny_recipe


def test_ingest_tokenize_train_generate(tmp_path):
    args = ["data", "ingest", STDLIB, "-o", tmp_path / "ds", "--val-fraction", "0.15"]
    for pattern in CODE_INCLUDE[:2]:
        args += ["--include", pattern]
    run_cli(*args, check=True)
    run_cli("tokenizer", "train", tmp_path / "ds", "-o", tmp_path / "tok", "--vocab-size", 400, check=True)
    recipe = tiny_recipe(tmp_path / "ds", tmp_path / "tok", max_steps=30)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    proc = run_cli("train", tmp_path / "r.yaml", "--out", tmp_path / "run", "--max-steps", 25,
                   "--set", "train.lr=0.004", check=True)
    assert "25 steps" in proc.stdout and "bits/byte" in proc.stdout
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text())
    assert saved["train"]["max_steps"] == 25 and saved["train"]["lr"] == 0.004
    lineage = json.loads((tmp_path / "run" / "model" / "lmforge.json").read_text())
    assert lineage["steps"] == 25
    a = run_cli("generate", tmp_path / "run" / "model", "import json\n", "--max-tokens", 20, "--seed", 3, check=True)
    b = run_cli("generate", tmp_path / "run" / "model", "import json\n", "--max-tokens", 20, "--seed", 3, check=True)
    assert a.stdout == b.stdout and a.stdout.startswith("import json\n") and len(a.stdout) > len("import json\n")
    # --resume of a finished run with a higher step budget continues from its last checkpoint
    proc = run_cli("train", tmp_path / "r.yaml", "--out", tmp_path / "run", "--max-steps", 30, "--resume")
    assert proc.returncode == 2 and "differs" in proc.stderr  # the first run had --set train.lr=0.004
    run_cli("train", tmp_path / "r.yaml", "--out", tmp_path / "run", "--max-steps", 30, "--resume",
            "--set", "train.lr=0.004", check=True)
    events = [json.loads(x)["kind"] for x in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert events == ["start", "resume"]
