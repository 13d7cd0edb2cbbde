"""`lmforge eval MODEL --tasks ...`: load the model once, run each task, check its items against the model's
training data, score every metric on all / clean / dirty items with intervals, optionally rerun on renamed
items, and write the report (report.json in lm-eval's results layout, samples_TASK.jsonl, report.html), then
append the evaluation to the model's lineage.
"""

from __future__ import annotations

import os
from pathlib import Path

from lmforge.errors import DataError
from lmforge.evaluate import metrics
from lmforge.evaluate.builtin import BUILTIN, YAML_TASKS, run_humaneval, run_validation, task_file
from lmforge.evaluate.harness import TaskResult, run_task
from lmforge.evaluate.tasks import Task, load_task_file

PERTURBATIONS = ("rename",)


def resolve_tasks(spec: str) -> list[str | Task]:
    """Task names (shipped) and task files from `--tasks a,b,FILE.yaml`; a folder means all its *.yaml."""
    out: list[str | Task] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        path = Path(part)
        if part in BUILTIN:
            out.append(part)
        elif path.is_dir():
            files = sorted(path.glob("*.yaml"))
            if not files:
                raise DataError("no *.yaml task files here", where=part)
            out += [load_task_file(f) for f in files]
        elif path.suffix in (".yaml", ".yml") or path.exists():
            out.append(load_task_file(path))
        else:
            raise DataError(f"unknown task {part!r}", hint=f"shipped tasks: {', '.join(BUILTIN)} "
                            "(lmforge eval --list); or give a task .yaml file")
    if not out:
        raise DataError("no tasks given", hint="--tasks validation,stdlib_next_line or --tasks FILE.yaml")
    return out


def _load_scorer(model: str, *, batch_size: int, precision: str):
    import torch

    import lmforge
    from lmforge.evaluate.scorer import ModelScorer
    from lmforge.train.precision import resolve_precision

    if precision not in ("auto", "fp32", "bf16"):
        raise DataError(f"unknown precision {precision!r}", hint="fp32, bf16 (autocast) or auto")
    precision = resolve_precision(precision)
    local = lmforge.load(model, backend="torch", dtype=torch.float32, max_batch=batch_size)
    return ModelScorer(local, batch_size=batch_size, precision=precision)


def _run_one(task, scorer, model_dir: Path, *, limit, seed, num_fewshot, samples, temperature, repair,
             perturb_seed=None) -> TaskResult:
    if task == "validation":
        return run_validation(model_dir, scorer, limit=limit)
    if task == "humaneval":
        return run_humaneval(scorer, limit=limit, samples=samples, temperature=temperature, repair=repair,
                             seed=seed, perturb_seed=perturb_seed)
    if isinstance(task, str):
        task = load_task_file(task_file(task))
    if perturb_seed is not None:
        task = _renamed(task, perturb_seed)
    return run_task(task, scorer, limit=limit, seed=seed, num_fewshot=num_fewshot)


def _renamed(task: Task, seed: int) -> Task:
    """The task with entities renamed in every document (the same names across one document's fields)."""
    import copy

    from lmforge.evaluate.perturb import rename_entities

    out = copy.copy(task)
    out._docs = {}
    docs = []
    for i, doc in enumerate(task.docs()):
        keys = [k for k, v in doc.items() if isinstance(v, str)]
        lists = [k for k, v in doc.items() if isinstance(v, list) and all(isinstance(x, str) for x in v)]
        texts = [doc[k] for k in keys] + [x for k in lists for x in doc[k]]
        renamed = iter(rename_entities(texts, seed=seed + i))
        new = dict(doc)
        for k in keys:
            new[k] = next(renamed)
        for k in lists:
            new[k] = [next(renamed) for _ in doc[k]]
        docs.append(new)
    out._docs[task.test_split] = docs
    return out


def evaluate(model: str, tasks: str | list, *, out: str | os.PathLike | None = None, limit: int | None = None,
             batch_size: int = 16, precision: str = "fp32", seed: int = 1234, num_fewshot: int | None = None,
             samples: int = 1, temperature: float = 0.0, repair: int = 0, perturb: str | None = None,
             contamination: bool = True, bootstrap_iters: int = metrics.BOOTSTRAP_ITERS) -> dict:
    """Evaluate `model` on `tasks` and return the report (written to `out` when given)."""
    from lmforge.infer.local import resolve_path

    if perturb is not None and perturb not in PERTURBATIONS:
        raise DataError(f"unknown perturbation {perturb!r}", hint=f"choose {', '.join(PERTURBATIONS)}")
    task_list = resolve_tasks(tasks) if isinstance(tasks, str) else tasks
    model_dir = resolve_path(model)
    if model_dir.suffix == ".gguf":
        raise DataError("lmforge eval scores a model directory (the torch backend)", where=str(model_dir),
                        hint="evaluate the model directory the GGUF was exported from")
    scorer = _load_scorer(str(model_dir), batch_size=batch_size, precision=precision)
    results = []
    options = dict(limit=limit, seed=seed, num_fewshot=num_fewshot, samples=samples, temperature=temperature,
                   repair=repair)
    for task in task_list:
        result = _run_one(task, scorer, model_dir, **options)
        if perturb and result.name != "validation":
            result.extra["perturbed"] = _run_one(task, scorer, model_dir, **{**options, "repair": 0},
                                                 perturb_seed=seed)
        results.append(result)
    if contamination:
        check_contamination(results, model_dir, seed=seed)
    from lmforge.evaluate.report import build_report, write_report

    report = build_report(results, model_dir=model_dir, settings={
        "model": "lmforge", "model_args": str(model_dir), "batch_size": batch_size, "limit": limit,
        "precision": scorer.precision, "random_seed": seed, "num_fewshot": num_fewshot, "samples": samples,
        "temperature": temperature, "repair": repair, "perturb": perturb, "bootstrap_iters": bootstrap_iters},
        bootstrap_iters=bootstrap_iters)
    if out is not None:
        write_report(report, results, Path(out))
        record_eval(model_dir, report, Path(out))
    return report


def check_contamination(results: list[TaskResult], model_dir: Path, *, seed: int) -> None:
    """Every task's items against the training data in one pass over it (reading the data dominates), then each
    task's share of the verdicts as its own check (its splits and the methods' agreement on its items)."""
    from lmforge.evaluate.contamination import agreement, check, splits

    checked = [r for r in results if r.items is not None]
    if not checked:
        return
    found = check([item for r in checked for item in r.items], model_dir, seed=seed)
    start = 0
    for r in checked:
        part = slice(start, start + len(r.items))
        start += len(r.items)
        methods = {name: {k: v[part] for k, v in m.items()} for name, m in found["methods"].items()}
        status = found["status"][part]
        r.extra["contamination_check"] = {
            **{k: v for k, v in found.items() if k not in ("methods", "dirty", "status", "splits", "agreement")},
            "methods": methods, "dirty": found["dirty"][part], "status": status, "splits": splits(status),
            "agreement": agreement({name: m["dirty"] for name, m in methods.items()})}


def record_eval(model_dir: Path, report: dict, out: Path) -> None:
    """Append the evaluation (its scores, the report's path) to the model's lmforge.json `evals`."""
    from lmforge.io import read_json, write_json

    file = model_dir / "lmforge.json"
    if not file.is_file():
        return  # not an lmforge model: no lineage to extend
    lineage = read_json(file)
    entry = {"report": str(out.resolve()), "date": report["date"], "results": report["results"],
             "settings": report["config"]}
    lineage["evals"] = [e for e in lineage.get("evals", []) if e.get("report") != entry["report"]] + [entry]
    write_json(file, lineage)

