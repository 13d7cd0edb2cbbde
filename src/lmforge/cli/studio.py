"""`lmforge studio MAP`: serve the studio (a zoomable map of a dataset) for a map directory."""

from __future__ import annotations

from pathlib import Path

import typer


def studio(
    map_dir: Path = typer.Argument(..., metavar="MAP", help="A map directory written by `lmforge map`."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 to share on your network)."),
    port: int = typer.Option(8765, min=0, max=65535, help="Port to listen on; 0 picks a free one."),
    open_browser: bool = typer.Option(True, "--open/--no-open", help="Open the page in a web browser."),
):
    """Explore MAP in the browser: topics, search, colour and filter by signal, lasso, tag and export."""
    from lmforge.serve.studio import serve

    serve(map_dir, host=host, port=port, open_browser=open_browser)
