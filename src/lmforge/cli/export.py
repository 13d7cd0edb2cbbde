"""`lmforge export MODEL --format gguf|ollama|torch --type ... -o PATH`: a GGUF for llama.cpp, GPT4All and Ollama
(lmforge.infer.gguf), or an int8/int4 model directory for the torch backend (lmforge.infer.quantize); each
quantized export's perplexity change is measured and recorded (lmforge.infer.quality)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

# the first type of each is the default (lmforge.infer.gguf.TYPES is the GGUF list; not imported: numpy)
_GGUF = ("f16", "q8_0", "q4_0", "f32")
FORMATS = {"gguf": _GGUF, "ollama": _GGUF, "torch": ("int8", "int4")}


def export(
    model: str = typer.Argument(..., help="A model directory or a catalog name."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="The .gguf file (--format gguf) or a new folder "
                                       "(ollama, torch); default: NAME-TYPE.gguf, NAME-ollama/ or NAME-TYPE/ here."),
    format: str = typer.Option("gguf", "--format", help="gguf, ollama (the GGUF plus a Modelfile) or torch (a "
                               "model directory with int8/int4 linear weights)."),
    type_: Optional[str] = typer.Option(None, "--type", help="gguf/ollama: f16 (default), q8_0, q4_0 or f32; "
                                        "torch: int8 (default) or int4."),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="Measure the perplexity change against the "
                                 "fp32 model on its validation split and record it in lmforge.json."),
):
    """Write MODEL in a form to run elsewhere or smaller: one GGUF file (tokenizer and chat template included),
    or a quantized model directory."""
    from lmforge.errors import ModelError
    from lmforge.infer.local import model_id, resolve_path
    from lmforge.infer.quality import perplexity_change, record_export

    if format not in FORMATS:
        raise ModelError(f"unknown format {format!r}", hint=f"choose one of {', '.join(FORMATS)}")
    type_ = type_ or FORMATS[format][0]
    if type_ not in FORMATS[format]:
        raise ModelError(f"--type {type_} is not one --format {format} writes",
                         hint=f"choose one of {', '.join(FORMATS[format])}")
    path = resolve_path(model)
    if format == "ollama":
        from lmforge.infer.gguf import export_ollama

        folder = export_ollama(path, out or Path(f"{model_id(path)}-ollama"), qtype=type_)
        written = next(folder.glob("*.gguf"))
        typer.echo(f"wrote {folder}: ollama create NAME -f {folder / 'Modelfile'}")
    elif format == "torch":
        from lmforge.infer.quantize import export_quantized

        written = export_quantized(path, out or Path(f"{model_id(path)}-{type_}"), type_)
        size = sum(f.stat().st_size for f in written.glob("*.safetensors"))
        typer.echo(f"wrote {written} ({size / 1e6:.1f} MB of weights)")
    else:
        from lmforge.infer.gguf import export_gguf

        written = export_gguf(path, out or Path(f"{model_id(path)}-{type_}.gguf"), qtype=type_)
        typer.echo(f"wrote {written} ({written.stat().st_size / 1e6:.1f} MB)")
    if measure:
        change = perplexity_change(path, written)
        entry = {"file": str(written.resolve()), "format": format, "type": type_, "perplexity": change}
        record_export(path, entry)
        if format == "torch":  # the export carries its own cost too
            record_export(written, entry)
        if change is None:
            typer.echo("perplexity not measured: no held-out text to measure on")
        else:
            typer.echo(f"perplexity {change['ppl']:.3f} against {change['ppl_fp32']:.3f} in fp32 "
                       f"({change['change']:+.2%}, {change['tokens']} tokens of {change['measured_on']})")
