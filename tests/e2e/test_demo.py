"""The demo pipeline on a small recipe: the three validation figures and their order, the report file."""

import json
import math

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
