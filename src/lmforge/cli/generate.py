"""`lmforge generate MODEL PROMPT`: continue a prompt, streaming the text."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def generate(
    model: Path = typer.Argument(..., help="A model directory in Hugging Face Llama layout."),
    prompt: str = typer.Argument(..., help="The text to continue."),
    max_tokens: int = typer.Option(128, "--max-tokens", min=1, help="Most new tokens to generate."),
    temperature: float = typer.Option(0.8, min=0.0, help="0 is greedy."),
    top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass."),
    top_k: Optional[int] = typer.Option(None, "--top-k", min=1, help="Sample among the k likeliest tokens."),
    seed: Optional[int] = typer.Option(None, help="Seed for sampling (same seed, same text)."),
    repetition_penalty: float = typer.Option(1.0, "--repetition-penalty", min=1.0,
                                             help="Discourage tokens already in the text (1.0 = off)."),
    heal: bool = typer.Option(True, help="Token healing of the prompt's last token."),
):
    """Print PROMPT followed by the model's continuation."""
    import sys

    from lmforge.errors import ModelError
    from lmforge.infer.engine import stream_text
    from lmforge.model.hf import load_pretrained

    m, tok = load_pretrained(model)
    if tok is None:
        raise ModelError("no tokenizer.json", where=str(model), hint="the model directory needs its tokenizer files")
    sys.stdout.write(prompt)
    for piece in stream_text(m, tok, prompt, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                             top_k=top_k, seed=seed, repetition_penalty=repetition_penalty, heal=heal):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
