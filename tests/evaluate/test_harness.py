"""The harness against lm-eval itself (its Hugging Face backend scoring the same directory), batch-size
invariance, the trainer's own validation figure, report layout, and bad task files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import require, run_cli
from fixtures_eval import task_dir  # noqa: F401  (a fixture)

def _ours(model, task_dir, names, **kw):
    from lmforge.evaluate.run import evaluate

    return evaluate(str(model), ",".join(str(task_dir / f"{n}.yaml") for n in names), contamination=False, **kw)


def _lm_eval_hf(model, task_dir, names, **model_args):
    lm_eval = require("lm_eval")
    from lm_eval.tasks import TaskManager

    args = ",".join([f"pretrained={model}", "dtype=float32", *(f"{k}={v}" for k, v in model_args.items())])
    return lm_eval.simple_evaluate(model="hf", model_args=args, tasks=names, device="cpu", batch_size=8,
                                   task_manager=TaskManager(include_path=[str(task_dir)]), log_samples=True,
                                   bootstrap_iters=0)


@pytest.mark.slow
@pytest.mark.interop
def test_scores_equal_lm_evals_hugging_face_backend(trained_model, task_dir):
    """lm-eval builds the requests (few-shot layout, delimiters, filters) and transformers scores them; lmforge
    does both itself. Same scores, same filtered generations. The rolling task runs lm-eval with
    add_bos_token=False: with the tokenizer's BOS also in the token list, lm-eval scores a BOS after its BOS prefix,
    a token that is not in the text."""
    ours = _ours(trained_model, task_dir, ["t_mc", "t_ll", "t_gen", "t_roll"])
    theirs = _lm_eval_hf(trained_model, task_dir, ["t_mc", "t_ll", "t_gen"])
    rolling = _lm_eval_hf(trained_model, task_dir, ["t_roll"], add_bos_token=False)
    for task, metric, tol in [("t_mc", "acc,none", 0), ("t_mc", "acc_norm,none", 0), ("t_ll", "acc,none", 0),
                              ("t_ll", "perplexity,none", 1e-5), ("t_gen", "exact_match,word", 0)]:
        assert ours["results"][task][metric] == pytest.approx(float(theirs["results"][task][metric]), rel=tol,
                                                              abs=tol), (task, metric)
    for metric in ("bits_per_byte,none", "byte_perplexity,none", "word_perplexity,none"):
        assert ours["results"]["t_roll"][metric] == pytest.approx(rolling["results"]["t_roll"][metric], rel=1e-5)
    assert ours["n-shot"]["t_mc"] == 2
    # the same generations, filtered the same way
    from lmforge.evaluate.run import _load_scorer
    from lmforge.evaluate.harness import run_task
    from lmforge.evaluate.tasks import load_task_file

    mine = run_task(load_task_file(task_dir / "t_gen.yaml"), _load_scorer(str(trained_model), batch_size=4,
                                                                         precision="fp32"))
    assert [s["filtered_resps"][0] for s in mine.samples] == \
        [s["filtered_resps"][0] for s in sorted(theirs["samples"]["t_gen"], key=lambda s: s["doc_id"])]
    assert any(s["filtered_resps"][0] != "[invalid]" for s in mine.samples)


def test_scores_do_not_move_with_batch_size(trained_model, task_dir):
    from lmforge.evaluate.harness import run_task
    from lmforge.evaluate.run import _load_scorer
    from lmforge.evaluate.tasks import load_task_file

    tasks = [load_task_file(task_dir / f"{n}.yaml") for n in ("t_mc", "t_ll", "t_roll")]
    one = _load_scorer(str(trained_model), batch_size=1, precision="fp32")
    many = _load_scorer(str(trained_model), batch_size=16, precision="fp32")
    for task in tasks:
        a, b = run_task(task, one), run_task(task, many)
        assert a.values == b.values, task.name                     # bit-identical per-item values in fp32
        assert [s["resps"] for s in a.samples] == [s["resps"] for s in b.samples]
    bf16 = _load_scorer(str(trained_model), batch_size=16, precision="bf16")
    for task in tasks:
        a, b = run_task(task, many), run_task(task, bf16)
        for key in a.values:
            from lmforge.evaluate.metrics import aggregate

            fa, fb = aggregate(key.split(",")[0], a.values[key]), aggregate(key.split(",")[0], b.values[key])
            tol = 0.1 if key.startswith("acc") else 0.02  # the tolerance docs/evaluation.md states for bf16
            assert fb == pytest.approx(fa, rel=tol, abs=tol), (task.name, key, fa, fb)


def test_validation_task_is_the_trainers_own_figure(trained_model):
    from lmforge.evaluate.builtin import run_validation
    from lmforge.evaluate.metrics import bootstrap
    from lmforge.evaluate.run import _load_scorer

    lineage = json.loads((trained_model / "lmforge.json").read_text())
    result = run_validation(trained_model, _load_scorer(str(trained_model), batch_size=8, precision="fp32"))
    values = result.values["bits_per_byte,none"]
    s = bootstrap("bits_per_byte", values)
    assert s["score"] == pytest.approx(lineage["validation"]["bpb"], rel=1e-6)
    assert sum(v[1] for v in values) == lineage["validation"]["bytes"]
    assert s["ci"][0] < s["score"] < s["ci"][1]


def test_bootstrap_and_paired_tests_against_closed_forms():
    import numpy as np
    from scipy.stats import binom

    from lmforge.evaluate.metrics import bootstrap, mcnemar, paired_bootstrap

    rng = np.random.default_rng(0)
    n, p = 400, 0.3
    values = (rng.random(n) < p).astype(float).tolist()
    s = bootstrap("acc", values, iters=4000)
    mean = float(np.mean(values))
    se = math.sqrt(mean * (1 - mean) / n)
    assert s["score"] == mean
    assert s["stderr"] == pytest.approx(se, rel=0.08)
    assert s["ci"][0] == pytest.approx(mean - 1.96 * se, abs=0.01) and s["ci"][1] == pytest.approx(mean + 1.96 * se,
                                                                                                    abs=0.01)
    # McNemar: 2 items only A gets right, 12 only B: exact two-sided binomial p
    a = [True] * 2 + [False] * 12 + [True] * 20
    b = [False] * 2 + [True] * 12 + [True] * 20
    m = mcnemar(a, b)
    assert (m["only_a"], m["only_b"]) == (2, 12)
    assert m["p_value"] == pytest.approx(2 * binom.cdf(2, 14, 0.5))
    d = paired_bootstrap("acc", [float(x) for x in a], [float(x) for x in b])
    assert d["difference"] == pytest.approx(10 / 34)
    assert d["ci"][0] > 0 and d["p_bootstrap"] < 0.05
    same = paired_bootstrap("acc", [float(x) for x in a], [float(x) for x in a])
    assert same["difference"] == 0 and same["ci"] == [0.0, 0.0]


def test_fewshot_examples_are_seeded_and_never_the_document_itself(task_dir, tmp_path):
    from lmforge.evaluate.tasks import load_task_file

    text = (task_dir / "t_mc.yaml").read_text().replace("fewshot_split: train\n", "").replace(
        "fewshot_config:\n  sampler: first_n\n", "").replace(f"    train: {task_dir / 'mc_train.jsonl'}\n", "")
    (tmp_path / "same_split.yaml").write_text(text)
    task = load_task_file(tmp_path / "same_split.yaml")
    docs = task.docs()
    for i, doc in enumerate(docs):
        shots = task.fewshot_docs(i, 2, seed=5)
        assert doc not in shots and len(shots) == 2
        assert shots == task.fewshot_docs(i, 2, seed=5)
    assert any(task.fewshot_docs(i, 2, seed=5) != task.fewshot_docs(i, 2, seed=6) for i in range(len(docs)))
    ctx = task.context(docs[0], 0, seed=5)
    a, b = task.fewshot_docs(0, 2, seed=5)
    assert ctx == "".join(task.text(d) + task.choices(d)[task.target(d)] + "\n###\n" for d in (a, b)) + task.text(docs[0])


def test_report_layout_reads_in_lm_evals_tooling_and_extends_the_lineage(trained_model, task_dir, tmp_path):
    lm_eval_utils = require("lm_eval.utils")
    out = tmp_path / "report"
    proc = run_cli("eval", trained_model, "--tasks", f"{task_dir / 't_mc.yaml'},validation", "--limit", "12",
                   "-o", out, "--no-contamination", check=True)
    assert "t_mc" in proc.stdout and "acc,none" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    res = report["results"]["t_mc"]
    assert set(res) >= {"alias", "acc,none", "acc_stderr,none", "acc_norm,none", "acc_norm_stderr,none"}
    lo, hi = report["intervals"]["t_mc"]["acc,none"]
    assert lo <= res["acc,none"] <= hi
    assert report["n-samples"]["t_mc"] == {"original": 24, "effective": 12}
    table = lm_eval_utils.make_table(report)                   # lm-eval's own results table
    assert "t_mc" in table and "acc_norm" in table and "validation" in table
    samples = [json.loads(x) for x in (out / "samples_t_mc.jsonl").read_text().splitlines()]
    assert len(samples) == 12 and all("acc,none" in s for s in samples)
    assert report["results"]["t_mc"]["acc,none"] == pytest.approx(sum(s["acc,none"] for s in samples) / 12)
    html = (out / "report.html").read_text()
    assert "<svg" not in html or "</svg>" in html
    assert "t_mc" in html
    lineage = json.loads((trained_model / "lmforge.json").read_text())
    assert lineage["evals"][-1]["report"] == str(out.resolve())
    assert lineage["evals"][-1]["results"]["t_mc"]["acc,none"] == res["acc,none"]


@pytest.mark.parametrize("edit, message", [
    (lambda t: t + "process_docs: x\n", "unsupported task keys: process_docs"),
    (lambda t: t.replace("doc_to_text: '{{context}}'", "doc_to_text: !function utils.f"), "!function utils.f"),
    (lambda t: t.replace("dataset_path: json", "dataset_path: cais/mmlu"), "is not local data"),
    (lambda t: t.replace("mc_test.jsonl", "missing.jsonl"), "does not exist"),
    (lambda t: t.replace("metric: acc_norm", "metric: bleu"), "unknown metric 'bleu'"),
    (lambda t: t.replace("doc_to_text: '{{context}}'", "doc_to_text: '{{nope}}'"), "'nope' is undefined"),
])
def test_bad_task_files_get_one_clear_error_and_no_report(trained_model, task_dir, tmp_path, edit, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit((task_dir / "t_mc.yaml").read_text()))
    out = tmp_path / "report"
    proc = run_cli("eval", trained_model, "--tasks", bad, "-o", out, "--no-contamination")
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not out.exists()


def test_list_shows_the_shipped_tasks():
    proc = run_cli("eval", "--list", check=True)
    for name in ("validation", "humaneval", "stdlib_next_line", "stdlib_docstring"):
        assert name in proc.stdout


def test_compare_two_reports_pairs_their_items(tmp_path):
    """Two planted reports on the same items: B right on 12 items A gets wrong, A on 2."""
    from scipy.stats import binom

    a = [1] * 2 + [0] * 12 + [1] * 20
    b = [0] * 2 + [1] * 12 + [1] * 20
    for name, vals in (("a", a), ("b", b)):
        d = tmp_path / name
        d.mkdir()
        (d / "report.json").write_text("{}")
        (d / "samples_t.jsonl").write_text("".join(json.dumps({"doc_id": i, "acc,none": v}) + "\n"
                                                   for i, v in enumerate(vals)))
    proc = run_cli("eval", "compare", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "cmp.json", check=True)
    result = json.loads((tmp_path / "cmp.json").read_text())["tasks"]["t"]["acc,none"]
    assert result["difference"] == pytest.approx(10 / 34)
    assert result["mcnemar"]["p_value"] == pytest.approx(2 * binom.cdf(2, 14, 0.5))
    assert result["better"] == "b" and "better: b" in proc.stdout
    bad = run_cli("eval", "compare", tmp_path / "a", tmp_path / "nope")
    assert bad.returncode == 2 and "two report folders" in bad.stderr


def test_contamination_from_lineage_splits_every_score(trained_model, small_dataset, tmp_path):
    """One planted item copied from the model's training split is dirty; invented ones are clean; the report
    scores the clean and dirty items apart."""
    from lmforge.data.dataset import Dataset
    from lmforge.evaluate.run import evaluate

    record = next(r for r in Dataset(small_dataset).records("train") if len(r["text"]) > 3000)
    lines = record["text"].splitlines()
    invented = [f"zq{i}x = frobnicate_{i}(wibble, {i})" for i in range(40)]
    docs = [{"context": "\n".join(lines[:40]) + "\n", "choices": [lines[40], invented[0]], "label": 0}]
    docs += [{"context": "\n".join(invented[i:i + 6]) + "\n", "choices": [invented[i + 6], invented[i + 7]],
              "label": 0} for i in range(0, 30, 3)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (tmp_path / "t_dirty.yaml").write_text(
        f"task: t_dirty\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {tmp_path / 'd.jsonl'}\n"
        "output_type: multiple_choice\ndoc_to_text: '{{context}}'\ndoc_to_choice: choices\ndoc_to_target: label\n"
        "target_delimiter: ''\n")
    report = evaluate(str(trained_model), str(tmp_path / "t_dirty.yaml"))
    c = report["contamination"]["t_dirty"]
    assert c["status"] == "complete"
    assert c["item_status"] == ["dirty"] + ["clean"] * 10
    assert all(m["dirty"] == 1 for m in c["methods"].values())       # all four methods see the copy
    assert c["splits"]["dirty"]["n"] == 1 and c["splits"]["clean"]["n"] == 10
    clean = c["splits"]["clean"]["acc,none"]["score"]
    assert report["results"]["t_dirty"]["acc,none"] == pytest.approx(
        (clean * 10 + c["splits"]["dirty"]["acc,none"]["score"]) / 11)


def test_perturb_rename_reports_the_paired_change(trained_model, task_dir):
    from lmforge.evaluate.run import evaluate

    report = evaluate(str(trained_model), str(task_dir / "t_mc.yaml"), perturb="rename", contamination=False)
    entry = report["perturbation"]["t_mc"]["rename"]["acc,none"]
    assert entry["original"] == report["results"]["t_mc"]["acc,none"]
    assert entry["difference"] == pytest.approx(entry["perturbed"] - entry["original"])
    assert entry["ci"][0] <= entry["difference"] <= entry["ci"][1]
    assert 0 <= entry["mcnemar"]["p_value"] <= 1
    assert "Renamed items" in __import__("lmforge.evaluate.report", fromlist=["x"]).render_html(report)


def test_compare_two_models_evaluates_both_on_the_same_items(trained_model, task_dir, tmp_path):
    """The same model twice: every paired difference is exactly zero and neither is better."""
    proc = run_cli("eval", "compare", trained_model, trained_model, "--tasks", task_dir / "t_mc.yaml", "--limit", "10",
                   "-o", tmp_path / "cmp.json", check=True)
    result = json.loads((tmp_path / "cmp.json").read_text())["tasks"]["t_mc"]
    assert result["items"] == 10
    for key in ("acc,none", "acc_norm,none"):
        assert result[key]["difference"] == 0 and result[key]["better"] == "neither"
        assert result[key]["mcnemar"]["p_value"] == 1.0
    assert "better: neither" in proc.stdout
