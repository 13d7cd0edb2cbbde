"""The evaluation report: report.json in lm-eval's results layout (`results.TASK."METRIC,FILTER"`, with
`METRIC_stderr,FILTER` beside each, plus `configs`, `versions`, `n-shot`, `higher_is_better`, `n-samples`,
`config`), so lm-eval's own tooling reads it; lmforge's additions sit in top-level keys of their own
(`intervals`, `contamination`, `perturbation`, `repair`, `lmforge`). Per-document values go to
samples_TASK.jsonl (lm-eval's logged-samples shape), which is what `lmforge eval compare` pairs.
report.html is self-contained: tables and matplotlib plots inlined as SVG.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

from lmforge.evaluate import metrics


def _split_key(key: str) -> tuple[str, str]:
    metric, _, flt = key.partition(",")
    return metric, flt or "none"


def _scored(values: list, key: str, iters: int, seed: int) -> dict:
    return metrics.bootstrap(_split_key(key)[0], values, iters=iters, seed=seed)


def build_report(results, *, model_dir: Path, settings: dict, bootstrap_iters: int = metrics.BOOTSTRAP_ITERS,
                 seed: int = 0) -> dict:
    import datetime as dt

    from lmforge import __version__

    report = {"results": {}, "groups": {}, "configs": {}, "versions": {}, "n-shot": {}, "higher_is_better": {},
              "n-samples": {}, "config": settings,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "intervals": {}, "contamination": {},
              "perturbation": {}, "repair": {}, "lmforge": {"version": __version__, "model": str(model_dir)}}
    for r in results:
        res = {"alias": r.name}
        intervals = {}
        for key, values in r.values.items():
            metric, flt = _split_key(key)
            s = _scored(values, key, bootstrap_iters, seed)
            res[key] = s["score"]
            res[f"{metric}_stderr,{flt}"] = s["stderr"]
            intervals[key] = s["ci"]
        report["results"][r.name] = res
        report["intervals"][r.name] = intervals
        report["configs"][r.name] = r.config
        report["versions"][r.name] = 1.0
        report["n-shot"][r.name] = r.n_shot
        report["higher_is_better"][r.name] = {_split_key(k)[0]: metrics.higher_is_better(_split_key(k)[0])
                                              for k in r.values}
        report["n-samples"][r.name] = {"original": r.original, "effective": len(next(iter(r.values.values()), []))}
        report["contamination"][r.name] = contamination_section(r, bootstrap_iters, seed)
        if "perturbed" in r.extra:
            report["perturbation"][r.name] = perturbation_section(r, r.extra["perturbed"], bootstrap_iters, seed)
        if "repair" in r.extra:
            report["repair"][r.name] = r.extra["repair"]
        if "isolation" in r.extra:
            report["lmforge"]["sandbox"] = r.extra["isolation"]
    return report


def contamination_section(r, iters: int, seed: int) -> dict:
    """The check's facts (sources, lineage completeness, per-method dirty counts, agreement) and every metric on
    the all / clean / dirty / unknown items (evaluate/contamination.py decides each item's status)."""
    check = r.extra.get("contamination_check")
    if check is None:
        return {"status": r.extra.get("contamination", "not checked")}
    out = {k: v for k, v in check.items() if k not in ("methods", "dirty", "status", "splits", "model")}
    out["status"] = check["lineage"]                       # complete | partial | unknown
    out["methods"] = {name: {"dirty": int(sum(bool(x) for x in m.get("dirty", [])))}
                      for name, m in check.get("methods", {}).items()}
    out["item_status"] = check["status"]
    out["splits"] = {}
    for split, idx in check["splits"].items():
        entry = {"n": len(idx)}
        for key, values in r.values.items():
            if idx and len(values) == len(check["status"]):
                sc = _scored([values[i] for i in idx], key, iters, seed)
                entry[key] = {"score": sc["score"], "ci": sc["ci"]}
        out["splits"][split] = entry
    return out


def perturbation_section(r, p, iters: int, seed: int) -> dict:
    out = {}
    for key, values in r.values.items():
        other = p.values.get(key)
        if other is None or len(other) != len(values):
            continue
        metric = _split_key(key)[0]
        entry = {"original": metrics.aggregate(metric, values), "perturbed": metrics.aggregate(metric, other),
                 **metrics.paired_bootstrap(metric, values, other, iters=iters, seed=seed)}
        if all(v in (0.0, 1.0) for v in list(values) + list(other)):
            entry["mcnemar"] = metrics.mcnemar([bool(v) for v in values], [bool(v) for v in other])
        out[key] = entry
    return {"rename": out}


# --- files -----------------------------------------------------------------------------------------


def write_report(report: dict, results, out: Path) -> None:
    """report.json, samples_TASK.jsonl and report.html into `out`, all or nothing."""
    from lmforge.io import atomic_dir

    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        for r in results:
            with open(tmp / f"samples_{r.name}.jsonl", "w", encoding="utf-8") as f:
                for sample in r.samples:
                    f.write(json.dumps(sample, default=str) + "\n")
        (tmp / "report.html").write_text(render_html(report), encoding="utf-8")


def svg_of(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.find("<svg"):]


def fmt(x) -> str:
    return "–" if x is None or x != x else f"{x:.4g}"


def render_html(report: dict) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for task, res in report["results"].items():
        for key, value in res.items():
            if key == "alias" or "_stderr," in key:
                continue
            lo, hi = report["intervals"].get(task, {}).get(key, [None, None])
            status = report["contamination"].get(task, {}).get("status", "")
            rows.append(f"<tr><td>{html.escape(task)}</td><td>{html.escape(key)}</td><td>{fmt(value)}</td>"
                        f"<td>[{fmt(lo)}, {fmt(hi)}]</td><td>{html.escape(str(status))}</td></tr>")
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>lmforge evaluation</title><style>"
             "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>",
             f"<h1>Evaluation of {html.escape(report['lmforge']['model'])}</h1>",
             f"<p>{html.escape(report['date'])} · lmforge {html.escape(report['lmforge']['version'])} · settings: "
             f"<code>{html.escape(json.dumps(report['config']))}</code></p>",
             "<h2>Scores (95% bootstrap intervals)</h2><table><tr><th>task</th><th>metric,filter</th><th>score</th>"
             "<th>interval</th><th>contamination</th></tr>", *rows, "</table>"]
    # clean / dirty / all bars for each task's first metric
    bars = [(task, sec) for task, sec in report["contamination"].items() if sec.get("splits")]
    if bars:
        fig, axes = plt.subplots(1, len(bars), figsize=(3.2 * len(bars), 2.8), squeeze=False)
        for ax, (task, sec) in zip(axes[0], bars):
            key = next(k for k in report["results"][task] if k != "alias" and "_stderr," not in k)
            names, scores, errs = [], [], []
            for split in ("all", "clean", "dirty"):
                entry = sec["splits"].get(split, {}).get(key)
                if entry:
                    names.append(f"{split}\n(n={sec['splits'][split]['n']})")
                    scores.append(entry["score"])
                    lo, hi = entry["ci"]
                    errs.append([max(0, entry["score"] - lo) if lo == lo else 0,
                                 max(0, hi - entry["score"]) if hi == hi else 0])
            ax.bar(names, scores, yerr=list(zip(*errs)) if errs else None, capsize=4,
                   color=["#888", "#4a8", "#c54"][:len(names)])
            ax.set_title(f"{task}: {key}", fontsize=9)
        parts += ["<h2>Clean and dirty items</h2>", svg_of(fig)]
        for task, sec in bars:
            methods = ", ".join(f"{m}: {v['dirty']}" for m, v in sec.get("methods", {}).items())
            parts.append(f"<p><b>{html.escape(task)}</b>: dirty items by method — {html.escape(methods)}; "
                         f"agreement {html.escape(json.dumps(sec.get('agreement', {}), default=str)[:400])}</p>")
    if report["repair"]:
        fig, ax = plt.subplots(figsize=(4, 2.8))
        for task, rounds in report["repair"].items():
            ax.plot([r["round"] for r in rounds], [r["pass@1"] for r in rounds], marker="o", label=task)
        ax.set_xlabel("repair round")
        ax.set_ylabel("pass@1")
        ax.legend()
        parts += ["<h2>Execution feedback</h2>", svg_of(fig)]
    if report["perturbation"]:
        parts.append("<h2>Renamed items (paired)</h2><table><tr><th>task</th><th>metric</th><th>original</th>"
                     "<th>renamed</th><th>difference [95%]</th><th>McNemar p</th></tr>")
        for task, sec in report["perturbation"].items():
            for key, e in sec["rename"].items():
                p = e.get("mcnemar", {}).get("p_value")
                parts.append(f"<tr><td>{html.escape(task)}</td><td>{html.escape(key)}</td><td>{fmt(e['original'])}"
                             f"</td><td>{fmt(e['perturbed'])}</td><td>{fmt(e['difference'])} [{fmt(e['ci'][0])}, "
                             f"{fmt(e['ci'][1])}]</td><td>{fmt(p)}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)
