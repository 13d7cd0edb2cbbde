"""`lmforge chat MODEL`: talk to a model in the terminal, tokens streaming as they come."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

HELP = """commands:
  /reset          forget the conversation (the system prompt stays)
  /system TEXT    set the system prompt (/system alone clears it)
  /save FILE      write the conversation as JSON
  /exit           leave (Ctrl-D too); Ctrl-C stops a reply mid-way"""


def chat(
    model: str = typer.Argument(..., help="A model directory or a catalog name."),
    system: Optional[str] = typer.Option(None, "--system", help="A system prompt for the conversation."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Most tokens per reply."),
    temperature: float = typer.Option(0.7, min=0.0, help="0 is greedy."),
    top_p: float = typer.Option(0.95, "--top-p", min=0.0, max=1.0, help="Nucleus sampling mass."),
    top_k: int = typer.Option(40, "--top-k", min=0, help="Sample among the k likeliest tokens (0 = off)."),
    min_p: float = typer.Option(0.05, "--min-p", min=0.0, max=1.0, help="Drop tokens below this share of the top."),
    repetition_penalty: float = typer.Option(1.1, "--repetition-penalty", min=1.0, help="1.0 = off."),
    seed: Optional[int] = typer.Option(None, help="Seed for sampling."),
    backend: str = typer.Option("auto", "--backend", help="torch, llamacpp (a GGUF through llama.cpp) or auto "
                                "(llamacpp for a .gguf)."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8 or int4: weight-only quantized linear "
                                           "layers (faster, smaller; the cost: docs/running.md)."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch backend: compile the decode step "
                                 "(faster for small models after a compile of 10-60 s; docs/running.md)."),
):
    """Chat with MODEL: history, a system prompt and slash commands (/help)."""
    import sys

    from lmforge.errors import LmforgeError
    from lmforge.infer.chat import ChatSession
    from lmforge.infer.local import load

    m = load(model, backend=backend, quantize=quantize, compile=compile)
    session = ChatSession(m, system=system, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                          top_k=top_k, min_p=min_p, repetition_penalty=repetition_penalty, seed=seed)
    try:
        import readline  # noqa: F401  (line editing and history for input(), where the platform has it)
    except ImportError:
        pass
    print(f"{m}: type a message, /help for commands", flush=True)
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            print()
            return
        except KeyboardInterrupt:
            print()
            continue
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            if not _command(session, text):
                return
            continue
        try:
            for piece in session.send(line):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            sys.stdout.write(" [stopped]")
        except LmforgeError as e:  # one bad turn (too long for the context) does not end the conversation
            sys.stdout.write(f"error: {e.format()}")
        sys.stdout.write("\n")
        sys.stdout.flush()


def _command(session, text: str) -> bool:
    """Run a slash command; False means leave."""
    name, _, arg = text.partition(" ")
    arg = arg.strip()
    if name in ("/exit", "/quit", "/bye"):
        return False
    if name == "/reset":
        session.reset()
        print("(conversation cleared)")
    elif name == "/system":
        session.set_system(arg)
        print(f"(system prompt {'set' if arg else 'cleared'})")
    elif name == "/save":
        if not arg:
            print("usage: /save FILE")
        else:
            print(f"(saved to {session.save(Path(arg).expanduser())})")
    elif name == "/help":
        print(HELP)
    else:
        print(f"unknown command {name}; /help lists them")
    return True
