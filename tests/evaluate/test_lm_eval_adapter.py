"""lmforge's model type inside lm-eval: lm-eval's own loop (requests, metrics) over lmforge's scorer gives the
scores `lmforge eval` gives."""

from __future__ import annotations

import json

import pytest

from conftest import require, run_cli
from fixtures_eval import task_dir  # noqa: F401  (a fixture)


@pytest.mark.interop
def test_lm_eval_runs_the_lmforge_model_type_with_lmforges_scores(trained_model, task_dir):
    lm_eval = require("lm_eval")
    import lmforge.evaluate.lm_eval_adapter  # noqa: F401  registers "lmforge"
    from lm_eval.tasks import TaskManager

    from lmforge.evaluate.run import evaluate

    names = ["t_mc", "t_ll", "t_roll"]
    theirs = lm_eval.simple_evaluate(model="lmforge", model_args=f"pretrained={trained_model},batch_size=4",
                                     tasks=names, task_manager=TaskManager(include_path=[str(task_dir)]),
                                     bootstrap_iters=0, log_samples=False)
    ours = evaluate(str(trained_model), ",".join(str(task_dir / f"{n}.yaml") for n in names), contamination=False)
    for task in names:
        for key, value in ours["results"][task].items():
            if key == "alias" or "_stderr," in key:
                continue
            assert float(theirs["results"][task][key]) == pytest.approx(value, rel=1e-9), (task, key)
    # lm-eval's own `--model hf` still resolves after the registration
    from lm_eval.api.registry import get_model

    assert get_model("hf").__name__ == "HFLM"


def test_backend_lm_eval_path(trained_model, task_dir, tmp_path):
    require("lm_eval")
    out = tmp_path / "lm-eval"
    proc = run_cli("eval", trained_model, "--tasks", task_dir / "t_mc.yaml", "--backend", "lm-eval", "--limit", "8",
                   "-o", out, check=True)
    report = json.loads((out / "report.json").read_text())
    assert "acc,none" in report["results"]["t_mc"] and "t_mc" in proc.stdout
    bad = run_cli("eval", trained_model, "--tasks", "validation", "--backend", "lm-eval")
    assert bad.returncode == 2 and "does not run inside lm-eval" in bad.stderr
