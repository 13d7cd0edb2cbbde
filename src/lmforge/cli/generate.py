"""`lmforge generate MODEL PROMPT`: continue a prompt, streaming the text."""

from __future__ import annotations

from typing import List, Optional

import typer


def generate(
    model: str = typer.Argument(..., help="A model directory (Hugging Face Llama layout) or a catalog name."),
    prompt: str = typer.Argument(..., help="The text to continue."),
    max_tokens: int = typer.Option(128, "--max-tokens", min=1, help="Most new tokens to generate."),
    temperature: float = typer.Option(0.8, min=0.0, help="0 is greedy."),
    top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="Sample among the k likeliest tokens (0 = off)."),
    min_p: float = typer.Option(0.0, "--min-p", min=0.0, max=1.0,
                                help="Drop tokens less likely than this times the likeliest (0 = off)."),
    seed: Optional[int] = typer.Option(None, help="Seed for sampling (same seed, same text)."),
    backend: str = typer.Option("auto", "--backend", help="torch, llamacpp (a GGUF through llama.cpp) or auto "
                                "(llamacpp for a .gguf)."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8 or int4: weight-only quantized linear "
                                           "layers (faster, smaller; the cost: docs/running.md)."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch backend: compile the decode step "
                                 "(faster for small models after a compile of 10-60 s; docs/running.md)."),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", min=1.0,
                                             help="Discourage tokens already in the text (1.0 = off)."),
    stop: Optional[List[str]] = typer.Option(None, "--stop", help="End the text before this string (repeatable)."),
    heal: bool = typer.Option(True, help="Token healing of the prompt's last token."),
):
    """Print PROMPT followed by the model's continuation."""
    import sys

    from lmforge.infer.engine import prompt_ids
    from lmforge.infer.local import load

    m = load(model, backend=backend, quantize=quantize, compile=compile)
    room = m.context_length - len(prompt_ids(m.tokenizer, prompt))  # stop at the context's end, not before
    sys.stdout.write(prompt)
    for piece in m.stream(prompt, max_tokens=max(1, min(max_tokens, room)), temperature=temperature,
                          top_p=top_p, top_k=top_k, min_p=min_p, seed=seed, repetition_penalty=repetition_penalty,
                          stop=tuple(stop or ()), heal=heal):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
