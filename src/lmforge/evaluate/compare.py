"""`lmforge eval compare A B`: per task and metric, score(B) - score(A) on the items both evaluated, with a paired
bootstrap interval, and for right/wrong metrics McNemar's exact p-value, so "B is better" comes with a number.

A and B are report directories (their samples_TASK.jsonl hold the per-item values) or two models, which are
then evaluated first on the same tasks with the same settings.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmforge.errors import DataError
from lmforge.evaluate import metrics


def read_samples(report_dir: Path) -> dict[str, dict[int, dict]]:
    """{task: {doc_id: sample}} from a report directory."""
    report_dir = Path(report_dir)
    if not (report_dir / "report.json").is_file():
        raise DataError("not an evaluation report (no report.json)", where=str(report_dir),
                        hint="give the -o folder of `lmforge eval`, or two models")
    out = {}
    for file in sorted(report_dir.glob("samples_*.jsonl")):
        task = file.stem[len("samples_"):]
        rows = {}
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                sample = json.loads(line)
                rows[int(sample["doc_id"])] = sample
        out[task] = rows
    return out


def compare_reports(a: Path, b: Path, *, iters: int = metrics.BOOTSTRAP_ITERS, seed: int = 0) -> dict:
    sa, sb = read_samples(a), read_samples(b)
    common = sorted(set(sa) & set(sb))
    if not common:
        raise DataError(f"the two reports share no task ({', '.join(sa) or 'none'} against {', '.join(sb) or 'none'})",
                        hint="evaluate both models on the same --tasks")
    out = {"a": str(a), "b": str(b), "tasks": {}}
    for task in common:
        docs = sorted(set(sa[task]) & set(sb[task]))
        keys = sorted({k for s in sa[task].values() for k in s if "," in k and k.split(",")[0] in metrics.METRICS})
        per_task = {"items": len(docs)}
        for key in keys:
            if not all(key in sa[task][d] and key in sb[task][d] for d in docs):
                continue
            va, vb = [sa[task][d][key] for d in docs], [sb[task][d][key] for d in docs]
            metric = key.split(",")[0]
            entry = {"a": metrics.aggregate(metric, va), "b": metrics.aggregate(metric, vb),
                     "higher_is_better": metrics.higher_is_better(metric),
                     **metrics.paired_bootstrap(metric, va, vb, iters=iters, seed=seed)}
            if all(v in (0, 1) for v in va + vb if not isinstance(v, list)) and not isinstance(va[0], list):
                entry["mcnemar"] = metrics.mcnemar([bool(v) for v in va], [bool(v) for v in vb])
            lo, hi = entry["ci"]
            if lo <= 0 <= hi or lo != lo:  # the interval holds no difference (or there is none to compute)
                entry["better"] = "neither"
            else:
                entry["better"] = "b" if (lo > 0) == entry["higher_is_better"] else "a"
            per_task[key] = entry
        out["tasks"][task] = per_task
    return out


def format_comparison(result: dict) -> str:
    lines = [f"A = {result['a']}", f"B = {result['b']}", ""]
    for task, entries in result["tasks"].items():
        lines.append(f"{task} ({entries['items']} paired items)")
        for key, e in entries.items():
            if key == "items":
                continue
            p = f", McNemar p={e['mcnemar']['p_value']:.3g}" if "mcnemar" in e else ""
            lines.append(f"  {key:<28} A {e['a']:.4g}  B {e['b']:.4g}  B-A {e['difference']:+.4g} "
                         f"[{e['ci'][0]:+.4g}, {e['ci'][1]:+.4g}]{p}  better: {e['better']}")
    return "\n".join(lines)
