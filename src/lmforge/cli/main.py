"""`lmforge` entry point. Verbs are registered here; heavy imports happen inside each verb."""

from __future__ import annotations

import sys

import typer

from lmforge import __version__
from lmforge.cli import (chat, curate, data, demo, export, generate, merge, models, prune, runs, serve, studio,
                         tokenizer, train)
from lmforge.cli import eval as eval_cmd
from lmforge.cli import map as map_cmd

app = typer.Typer(
    name="lmforge",
    help="Turn your own data into a small language model you own, understand and run locally.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.add_typer(data.app, name="data")
app.add_typer(tokenizer.app, name="tokenizer")
app.command("map")(map_cmd.map_)
app.command("curate")(curate.curate)
app.command("train")(train.train)
app.command("generate")(generate.generate)
app.command("chat")(chat.chat)
app.command("serve")(serve.serve)
app.command("export")(export.export)
app.command("merge")(merge.merge)
app.command("prune")(prune.prune)
app.add_typer(eval_cmd.app, name="eval")
app.add_typer(models.app, name="models")
app.command("demo")(demo.demo)
app.command("studio")(studio.studio)
app.add_typer(runs.app, name="runs")


def _version(value: bool):
    if value:
        typer.echo(f"lmforge {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Turn your own data into a small language model you own, understand and run locally."""


def main() -> None:
    from lmforge.errors import LmforgeError

    try:
        app()
    except LmforgeError as e:
        from rich.console import Console

        Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {e.format()}", markup=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
