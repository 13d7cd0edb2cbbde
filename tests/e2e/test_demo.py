"""The demo pipeline on a small recipe: the three validation figures and their order, the report file; and
`lmforge demo` finding its packaged recipe from an installed wheel, away from the source tree."""

import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import tiny_recipe

from lmforge.demo import render_report, run_demo


def test_demo_reports_losses_against_baselines(small_dataset, small_tokenizer, tmp_path):
    from rich.console import Console

    recipe = tiny_recipe(small_dataset, small_tokenizer, max_steps=120, lr=1e-2, micro_batch_size=16)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    report = run_demo(tmp_path / "r.yaml", tmp_path / "run", prompts=["def f(x):\n"])
    v = report["validation"]
    # random init predicts nearly uniformly: ln(V) nats per token, to within the init's small logits
    assert abs(v["random_init"]["loss"] - math.log(512)) < 0.1
    assert v["trained"]["loss"] < v["unigram"]["loss"] < v["random_init"]["loss"]
    assert v["trained"]["tokens"] == v["unigram"]["tokens"] == v["random_init"]["tokens"]
    assert json.loads((tmp_path / "run" / "demo.json").read_text())["steps"] == 120
    assert report["completions"][0]["prompt"] == "def f(x):\n" and report["completions"][0]["completion"]
    console = Console(record=True, width=120)
    render_report(report, console)
    text = console.export_text()
    assert "unigram-entropy baseline" in text and "bits / byte" in text


ROOT = Path(__file__).resolve().parents[2]
# Run from the installed wheel: replace run_demo (hours of work) by a probe that reports the recipe the real
# `lmforge demo` command resolved, then validate that recipe as `lmforge train` would.
PROBE = """
import sys, lmforge, lmforge.demo
from lmforge.train.recipe import load_recipe
def probe(path, out, **kw):
    print("LMFORGE", lmforge.__file__)
    print("RECIPE", path)
    print("NAME", load_recipe(path).name, kw["max_steps"])
    raise SystemExit(0)
lmforge.demo.run_demo = probe
sys.argv = ["lmforge", "demo", "--max-steps", "2", "--out", "run"]
from lmforge.cli.main import main
main()
"""


@pytest.mark.slow
def test_demo_finds_its_recipe_in_an_installed_wheel(tmp_path):
    # build from a copy of the sources, so the shared checkout gets no build/ or egg-info
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src / "src", symlinks=True,
                    ignore=shutil.ignore_patterns("node_modules", "__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "wheels", src],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheels").glob("lmforge-*.whl")
    shipped = sorted(p.name for p in (ROOT / "recipes").glob("*.yaml"))
    assert shipped, "no recipes in the checkout"
    with zipfile.ZipFile(wheel) as z:
        for name in shipped:   # the packaged bytes are the checkout's recipe files
            assert z.read(f"lmforge/recipes/{name}") == (ROOT / "recipes" / name).read_bytes(), name

    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", site, wheel], check=True,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"   # a cwd with no recipes/ in it; the checkout is not on sys.path
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=elsewhere, capture_output=True, text=True,
                          env={**env, "PYTHONPATH": str(site)})
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert Path(lines["LMFORGE"]).is_relative_to(site), lines
    recipe = Path(lines["RECIPE"])
    assert recipe == site / "lmforge" / "recipes" / "tiny-code-stdlib.yaml", lines
    assert recipe.read_bytes() == (ROOT / "recipes" / "tiny-code-stdlib.yaml").read_bytes()
    assert lines["NAME"] == "tiny-code-stdlib 2"
