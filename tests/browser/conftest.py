"""Browser tests drive Debian's Chromium through Playwright, with WebGL in software (SwiftShader), against the
built studio (src/lmforge/studio/dist) served by uvicorn in a background thread.

This directory is a package (it has __init__.py) so that this conftest does not shadow tests/conftest.py,
which other test modules import as `conftest`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require

ROOT = Path(__file__).resolve().parents[2]
STUDIO = ROOT / "src" / "lmforge" / "studio"
CHROMIUM = os.environ.get("LMFORGE_CHROMIUM", "/usr/bin/chromium")
# Headless WebGL without a GPU: ANGLE over SwiftShader. Playwright adds --headless and a fresh profile.
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--use-gl=angle", "--use-angle=swiftshader",
               "--enable-unsafe-swiftshader"]


def _skip(reason: str):
    # `make test` sets LMFORGE_REQUIRE_BROWSER=1: there a missing browser or build is a failure, not a skip.
    if os.environ.get("LMFORGE_REQUIRE_BROWSER") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def studio_dist() -> Path:
    """The built front end; built here when node_modules is present but dist is not."""
    dist = STUDIO / "dist"
    if not (dist / "index.html").is_file():
        if not (STUDIO / "node_modules").is_dir() or shutil.which("npm") is None:
            _skip("the studio front end is not built (run `make studio`)")
        subprocess.run(["npm", "run", "build"], cwd=STUDIO, check=True, capture_output=True)
    return dist


@pytest.fixture(scope="session")
def chromium():
    if not Path(CHROMIUM).exists():
        _skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set LMFORGE_CHROMIUM)")
    sync_api = require("playwright.sync_api", env="LMFORGE_REQUIRE_BROWSER")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()
