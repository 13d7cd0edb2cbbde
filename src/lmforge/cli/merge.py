"""`lmforge merge BASE ADAPTER -o OUT`: fold a LoRA adapter (lmforge's or PEFT's) into its base model."""

from __future__ import annotations

from pathlib import Path

import typer


def merge(
    base: Path = typer.Argument(..., help="The base model directory the adapter was trained on."),
    adapter: Path = typer.Argument(..., help="The adapter directory (adapter_config.json, adapter_model.safetensors)."),
    out: Path = typer.Option(..., "-o", "--out", help="The merged model directory to write (must not exist)."),
):
    """Write BASE with ADAPTER merged in: a plain model directory that transformers, llama.cpp exports and
    every lmforge command load."""
    from lmforge.errors import ModelError
    from lmforge.model.lora import merge_adapter

    if out.exists():
        raise ModelError("the output directory exists", where=str(out), hint="choose a new -o path")
    typer.echo(f"merged {adapter} into {base}: {merge_adapter(base, adapter, out)}")
