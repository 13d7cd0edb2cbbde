"""conftest.require: a missing optional module skips a test, except under LMFORGE_REQUIRE_ALL=1 (`make test`) or
the test's own variable (LMFORGE_REQUIRE_BROWSER=1), where it fails naming the module and the fix. Checked by
running pytest in a subprocess on generated test files and reading its outcome counts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MISSING = "lmforge_no_such_module_0x5f3759df"


def _pytest(tmp_path: Path, source: str, **env: str) -> tuple[dict, str]:
    """Outcome counts ({"passed": 1, ...}) and output of pytest on one generated test file."""
    (tmp_path / "test_generated.py").write_text(source)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LMFORGE_REQUIRE")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", "-o", "addopts=",
                           "test_generated.py"], cwd=tmp_path, capture_output=True, text=True,
                          env={**clean, "PYTHONPATH": str(TESTS), **env})
    out = proc.stdout + proc.stderr
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|skipped|failed|errors?)\b", out)}
    return counts, out


IN_TEST = f"""
from conftest import require

def test_needs_missing():
    require("{MISSING}")

def test_needs_present():
    assert require("json").dumps([1]) == "[1]"
"""


def test_missing_module_skips_by_default(tmp_path):
    counts, out = _pytest(tmp_path, IN_TEST)
    assert counts == {"passed": 1, "skipped": 1}, out
    assert MISSING in out and "pip install -e '.[test]'" in out


@pytest.mark.parametrize("env", [{"LMFORGE_REQUIRE_ALL": "1"},
                                 {"LMFORGE_REQUIRE_ALL": "1", "LMFORGE_REQUIRE_BROWSER": "0"}])
def test_missing_module_fails_when_everything_is_required(tmp_path, env):
    counts, out = _pytest(tmp_path, IN_TEST, **env)
    assert counts == {"passed": 1, "failed": 1}, out
    assert "FAILED test_generated.py::test_needs_missing" in out
    assert f"{MISSING} is not installed; install the test extra: pip install -e '.[test]'" in out


def test_a_tests_own_variable_requires_it(tmp_path):
    source = f"""
from conftest import require

def test_browser():
    require("{MISSING}", env="LMFORGE_REQUIRE_BROWSER")

def test_other():
    require("{MISSING}")
"""
    counts, out = _pytest(tmp_path, source, LMFORGE_REQUIRE_BROWSER="1")
    assert counts == {"failed": 1, "skipped": 1}, out
    assert "FAILED test_generated.py::test_browser" in out


def test_module_level_require(tmp_path):
    source = f'from conftest import require\n\nmod = require("{MISSING}")\n\n\ndef test_a():\n    pass\n'
    counts, out = _pytest(tmp_path, source)
    assert counts == {"skipped": 1}, out
    counts, out = _pytest(tmp_path, source, LMFORGE_REQUIRE_ALL="1")
    assert counts.get("error", counts.get("errors")) == 1 and "passed" not in counts, out
    assert MISSING in out


def test_installed_but_broken_module_is_an_error_not_a_skip(tmp_path):
    # an installed package whose own dependency is missing: a broken environment, never a quiet skip
    (tmp_path / "brokenpkg.py").write_text(f"import {MISSING}\n")
    counts, out = _pytest(tmp_path, 'from conftest import require\n\ndef test_a():\n    require("brokenpkg")\n',
                          PYTHONPATH=f"{TESTS}{os.pathsep}{tmp_path}")
    assert counts == {"failed": 1}, out
    assert "ModuleNotFoundError" in out
