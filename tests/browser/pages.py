"""Helpers for the browser tests: open the studio in a page, read the map's pixels from a screenshot."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("LMFORGE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
VIEWPORT = {"width": 1280, "height": 800}
BACKGROUND = np.array([0x0E, 0x11, 0x16])  # the map's background colour (style.css --bg)


def open_studio(chromium, url: str, *, timeout_ms: int = 60_000):
    """A fresh page on the studio, once its points are drawn."""
    page = chromium.new_page(viewport=VIEWPORT, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("window.__lmforge && (window.__lmforge.ready || window.__lmforge.error)",
                           timeout=timeout_ms)
    err = page.evaluate("window.__lmforge.error")
    assert err is None and not errors, f"studio failed to load: {err or errors}"
    return page


def canvas_pixels(page) -> np.ndarray:
    """The map canvas as an RGB array [H, W, 3], read from a real screenshot (overlays hidden)."""
    from PIL import Image

    page.evaluate("for (const id of ['labels','toolbar','zoom','hover']) document.getElementById(id).style.visibility='hidden'")
    png = page.locator("#canvas").screenshot()
    page.evaluate("for (const id of ['labels','toolbar','zoom','hover']) document.getElementById(id).style.visibility=''")
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int32)


def drawn_mask(pixels: np.ndarray) -> np.ndarray:
    return np.abs(pixels - BACKGROUND).sum(axis=2) > 60


def save_artifact(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


@contextlib.contextmanager
def served(map_path: Path, static_dir: Path):
    """`lmforge studio MAP` in this process, on a free port: yields the page's URL."""
    from lmforge.serve.http import start_server
    from lmforge.serve.studio import create_app

    url, stop = start_server(create_app(map_path, static_dir=static_dir))
    try:
        yield url
    finally:
        stop()
