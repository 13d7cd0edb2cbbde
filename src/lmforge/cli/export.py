"""`lmforge export MODEL --format gguf|ollama --type f16|q8_0|q4_0 -o PATH`: a GGUF for llama.cpp, GPT4All and
Ollama (lmforge.infer.gguf)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def export(
    model: str = typer.Argument(..., help="A model directory or a catalog name."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="The .gguf file (--format gguf) or a new folder "
                                       "(--format ollama); default: NAME-TYPE.gguf or NAME-ollama/ here."),
    format: str = typer.Option("gguf", "--format", help="gguf, or ollama (the GGUF plus a Modelfile)."),
    type_: str = typer.Option("f16", "--type", help="f16, q8_0 or q4_0."),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure the perplexity change against the "
                                 "fp32 model on its validation split and record it in lmforge.json."),
):
    """Write MODEL as one GGUF file, tokenizer and chat template included."""
    from lmforge.errors import ModelError
    from lmforge.infer.gguf import TYPES, export_gguf, export_ollama, perplexity_change, record_export
    from lmforge.infer.local import model_id, resolve_path

    if format not in ("gguf", "ollama"):
        raise ModelError(f"unknown format {format!r}", hint="choose gguf or ollama")
    if type_ not in TYPES:
        raise ModelError(f"unknown GGUF type {type_!r}", hint=f"choose one of {', '.join(TYPES)}")
    path = resolve_path(model)
    if format == "ollama":
        folder = export_ollama(path, out or Path(f"{model_id(path)}-ollama"), qtype=type_)
        file = next(folder.glob("*.gguf"))
        typer.echo(f"wrote {folder}: ollama create NAME -f {folder / 'Modelfile'}")
    else:
        file = export_gguf(path, out or Path(f"{model_id(path)}-{type_}.gguf"), qtype=type_)
        typer.echo(f"wrote {file} ({file.stat().st_size / 1e6:.1f} MB)")
    if measure:
        change = perplexity_change(path, file)
        record_export(path, {"file": str(file.resolve()), "format": format, "type": type_, "perplexity": change})
        if change is None:
            typer.echo("perplexity not measured: no held-out text to measure on")
        else:
            typer.echo(f"perplexity {change['ppl']:.3f} against {change['ppl_fp32']:.3f} in fp32 "
                       f"({change['change']:+.2%}, {change['tokens']} tokens of {change['measured_on']})")
