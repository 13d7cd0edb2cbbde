"""`lmforge runs list [ROOT]` and `lmforge runs show RUN`: what each run directory says about its run."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="List training runs and show one: status, steps, validation, throughput, resumes.",
                  no_args_is_help=True)


def _cells(*values: str):
    """Cells as plain text: a path or an event reason may hold brackets that rich would read as markup."""
    from rich.text import Text

    return [Text(v) for v in values]


def _f(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _steps(s) -> str:
    return f"{_f(s.step, 'd')}/{_f(s.max_steps, 'd')}"


@app.command("list")
def list_(
    root: Path = typer.Argument(Path("runs"), help="The folder the run directories are in (or one run directory)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
):
    """One row per run directory under ROOT: status, step/max_steps, best validation loss and bits/byte,
    tokens/s (mean of the last logged rows), resumes, rollbacks, precision, last checkpoint."""
    from rich.console import Console
    from rich.table import Table

    from lmforge.train.runs import find_runs, summarize

    summaries = [summarize(p) for p in find_runs(root)]
    if as_json:
        typer.echo(json.dumps([s.to_dict(events=False) for s in summaries], indent=2))
        return
    console = Console(highlight=False)
    if not summaries:
        console.print(f"no run directories under {root}")
        return
    table = Table("run", "status", "step", "best val loss", "bits/byte", "tokens/s", "resumes", "rollbacks",
                  "precision", "checkpoint", box=None, header_style="bold")
    for s in summaries:
        table.add_row(*_cells(s.path, s.status, _steps(s), _f(s.best_val_loss, ".4f"), _f(s.best_val_bpb, ".4f"),
                              _f(s.tokens_per_s, ",.0f"), str(s.resumes), str(s.rollbacks), s.precision or "-",
                              _f(s.last_checkpoint_step, "d")))
    console.print(table)


@app.command("show")
def show(
    run: Path = typer.Argument(..., help="A run directory (the --out of lmforge train)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (the summary and the recent events)."),
):
    """A run's status, steps, validation, throughput, resumes and rollbacks, precision, last checkpoint and
    model, then its most recent events."""
    from rich.console import Console
    from rich.table import Table

    from lmforge.train.runs import RECENT_ROWS, event_details, event_time, summarize

    s = summarize(run)
    if as_json:
        typer.echo(json.dumps(s.to_dict(), indent=2))
        return
    best = "-" if s.best_val_loss is None else (
        f"{s.best_val_loss:.4f} nats/token, {_f(s.best_val_bpb, '.4f')} bits/byte (step {_f(s.best_val_step, 'd')})")
    final = "-" if s.final_val_loss is None else (
        f"{s.final_val_loss:.4f} nats/token, {_f(s.final_val_bpb, '.4f')} bits/byte")
    rows = [
        ("run", s.path),
        ("status", s.status + (f" (pid {s.pid})" if s.status == "running" else "")),
        ("step", _steps(s)),
        ("tokens", _f(s.tokens, ",d")),
        ("best validation", best),
        ("final validation", final),
        ("throughput", "-" if s.tokens_per_s is None else
         f"{s.tokens_per_s:,.0f} tokens/s (mean of the last {RECENT_ROWS} logged rows)"),
        ("resumes", str(s.resumes)),
        ("rollbacks", str(s.rollbacks)),
        ("precision", s.precision or "-"),
        ("last checkpoint", s.last_checkpoint or "-"),
        ("model", s.model or "-"),
    ]
    console = Console(highlight=False)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows:
        grid.add_row(*_cells(key, value))
    console.print(grid)
    if s.events:
        console.print()
        table = Table("time", "event", "step", "details", title="recent events", title_justify="left",
                      box=None, header_style="bold")
        for e in s.events:
            table.add_row(*_cells(event_time(e), str(e.get("kind", "?")), str(e.get("step", "-")), event_details(e)))
        console.print(table)
