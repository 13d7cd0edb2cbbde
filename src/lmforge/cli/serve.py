"""`lmforge serve [MODEL ...]`: the OpenAI-compatible API and the chat page (lmforge.serve.openai)."""

from __future__ import annotations

import os
from typing import List, Optional

import typer


def serve(
    models: Optional[List[str]] = typer.Argument(None, metavar="[MODEL]...", help="Model directories, GGUF files "
                                                 "or catalog names (default: every catalog model, loaded on first "
                                                 "use)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 to share on your network)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on; 0 picks a free one."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="LMFORGE_API_KEY",
                                          help="Require 'Authorization: Bearer KEY' on /v1 (env LMFORGE_API_KEY)."),
    max_batch: int = typer.Option(8, "--max-batch", min=1, help="Requests decoded together per model; more wait."),
    backend: str = typer.Option("auto", "--backend", help="torch, llamacpp (a GGUF through llama.cpp) or auto."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8 or int4 for the torch backend."),
    compile: bool = typer.Option(False, "--compile/--no-compile", help="torch backend: compile the decode step "
                                 "(faster for small models after a compile of 10-60 s; docs/running.md)."),
    open_browser: bool = typer.Option(False, "--open/--no-open", help="Open the chat page in a web browser."),
):
    """Serve models over an OpenAI-compatible API (/v1/...) with a chat page at /."""
    from lmforge.errors import ModelError
    from lmforge.infer import catalog
    from lmforge.infer.local import load, model_id, resolve_path
    from lmforge.serve.http import check_port
    from lmforge.serve.openai import ModelPool, create_app

    if port:
        check_port(host, port)  # before loading anything

    def loader(path):
        return lambda: load(path, backend=backend, quantize=quantize, max_batch=max_batch, compile=compile)

    loaded = {}
    for m in models or []:
        path = resolve_path(m)
        name = m if catalog.get(m) is not None and not os.path.exists(m) else model_id(path)
        loaded[name] = loader(path)()
    sources = {} if models else {e["name"]: loader(e["path"]) for e in catalog.entries()}
    if not loaded and not sources:
        raise ModelError("nothing to serve: no MODEL given and the catalog is empty",
                         hint="lmforge serve RUN_DIR/model, or lmforge models import PATH first")
    from lmforge.serve.http import run_server

    run_server(create_app(ModelPool(loaded, sources), api_key=api_key), host=host, port=port,
               what=f"serving {', '.join(sorted({*loaded, *sources}))}", open_browser=open_browser)
