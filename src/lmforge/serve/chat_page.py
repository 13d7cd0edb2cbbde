"""The browser chat page that `lmforge serve` shows at `/`: built by Vite with the studio's toolchain
(src/lmforge/studio/chat.html -> studio/dist/chat.html) and talking to the server's own OpenAI-compatible API."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parents[1] / "studio" / "dist"


def mount_chat_page(app, static_dir: Path = STATIC_DIR) -> None:
    """Serve the chat page at `/` and its assets under `/assets`; say how to build it when it is missing."""
    from fastapi.responses import FileResponse, HTMLResponse
    from fastapi.staticfiles import StaticFiles

    page = static_dir / "chat.html"
    if (static_dir / "assets").is_dir():
        app.mount("/assets", StaticFiles(directory=static_dir / "assets"), name="assets")

    @app.get("/", include_in_schema=False)
    def chat_page():
        if not page.is_file():
            return HTMLResponse("<p>The chat page is not built: run <code>make studio</code> "
                                "(the API under /v1 works without it).</p>", status_code=503)
        return FileResponse(page, media_type="text/html")
