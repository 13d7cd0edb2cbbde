"""`lmforge models list | import PATH | info NAME | rm NAME`: the local model catalog (lmforge.infer.catalog)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(help="The local model catalog: names for model directories and GGUF files.",
                  no_args_is_help=True)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@app.command("list")
def list_():
    """List the catalog's models."""
    from rich.console import Console
    from rich.table import Table

    from lmforge.infer.catalog import catalog_dir, entries

    console = Console(highlight=False)
    rows = entries()
    if not rows:
        console.print(f"no models in {catalog_dir()} yet: lmforge models import PATH [--name NAME]")
        return
    table = Table("name", "format", "context", "size", "path", box=None)
    for e in rows:
        kind = f"{e['format']} {e['quantization']}" if e.get("quantization") else e["format"]
        table.add_row(e["name"], kind, str(e.get("context_length") or "-"), _size(e["size_bytes"]), e["path"])
    console.print(table)


@app.command("import")
def import_(
    path: Path = typer.Argument(..., help="A model directory (lmforge's or a Hugging Face Llama) or a .gguf file."),
    name: Optional[str] = typer.Option(None, "--name", help="Catalog name (default: the run's or file's name)."),
    copy: bool = typer.Option(False, "--copy", help="Copy the files into the catalog (default: refer to them)."),
    force: bool = typer.Option(False, "--force", help="Replace an entry of the same name."),
):
    """Add a model to the catalog under a name every MODEL argument accepts."""
    from lmforge.infer.catalog import add

    entry = add(path, name=name, copy=copy, force=force)
    typer.echo(f"{entry['name']}: {entry['path']}")


@app.command("info")
def info(name: str = typer.Argument(..., help="A catalog name.")):
    """Print a catalog entry (path, format, size, lineage) as JSON."""
    from lmforge.errors import ModelError
    from lmforge.infer.catalog import names_hint, get

    entry = get(name)
    if entry is None:
        raise ModelError(f"the catalog has no model named {name!r}", hint=names_hint())
    typer.echo(json.dumps(entry, indent=2))


@app.command("rm")
def rm(name: str = typer.Argument(..., help="A catalog name.")):
    """Remove a catalog entry (files it copied go with it; a model it referred to stays where it is)."""
    from lmforge.infer.catalog import remove

    entry = remove(name)
    typer.echo(f"removed {name}" + ("" if entry["copied"] else f" (its files stay in {entry['source']})"))
