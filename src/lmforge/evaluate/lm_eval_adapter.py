"""lmforge models inside EleutherAI's lm-evaluation-harness: a registered model type `lmforge` whose requests
are scored by lmforge's own scorer (so lm-eval and `lmforge eval` give the same numbers on the same task), and
the `lmforge eval --backend lm-eval` path that runs task files through `lm_eval.simple_evaluate`.

lm-eval has no plugin discovery for `lm_eval --model NAME`: the type is registered when this module is imported,
and `lm_eval.models` is imported first (registering before it breaks `--model hf`). From Python:

    import lmforge.evaluate.lm_eval_adapter  # registers "lmforge"
    lm_eval.simple_evaluate(model="lmforge", model_args="pretrained=runs/demo/model", tasks=[...])
"""

from __future__ import annotations

from pathlib import Path

import lm_eval.models  # noqa: F401  (lm-eval's own model types first)
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model


class LmforgeLM(LM):
    """lm-eval's LM interface over lmforge's scorer (evaluate/scorer.py)."""

    def __init__(self, pretrained: str = "", batch_size: int | str = 16, precision: str = "fp32", **_):
        super().__init__()
        from lmforge.evaluate.run import _load_scorer

        self.scorer = _load_scorer(str(pretrained), batch_size=int(batch_size or 16), precision=precision)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        pairs = [self.scorer.pair(*req.args) for req in requests]
        return [(r.logprob, r.greedy) for r in self.scorer.loglikelihood(pairs)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return [sum(r.logprob for r in self.scorer.loglikelihood(self.scorer.rolling_pairs(req.args[0])))
                for req in requests]

    def generate_until(self, requests, disable_tqdm: bool = False):
        out = []
        for req in requests:  # each request carries its own stop strings and length
            context, kwargs = req.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            out += self.scorer.generate([context], until=until, max_tokens=int(kwargs.get("max_gen_toks", 256)),
                                        temperature=temperature)
        return out


register_model("lmforge")(LmforgeLM)


def evaluate_with_lm_eval(model: str, tasks: str, *, out: Path | None = None, limit: int | None = None,
                          batch_size: int = 16, num_fewshot: int | None = None, seed: int = 1234) -> dict:
    """Run task files (or the shipped YAML tasks) through lm_eval.simple_evaluate with the `lmforge` model type;
    returns lm-eval's results dict (written to OUT/report.json)."""
    import json

    from lmforge.errors import DataError
    from lmforge.evaluate.builtin import YAML_TASKS, task_file
    from lmforge.evaluate.run import resolve_tasks
    from lmforge.infer.local import resolve_path

    names, folders = [], set()
    for task in resolve_tasks(tasks):
        if isinstance(task, str) and task not in YAML_TASKS:
            raise DataError(f"task {task!r} is lmforge's own and does not run inside lm-eval",
                            hint=f"with --backend lm-eval use task files or {', '.join(YAML_TASKS)}")
        path = task_file(task) if isinstance(task, str) else Path(task.source)
        names.append(task if isinstance(task, str) else task.name)
        folders.add(str(path.resolve().parent))
    lm = LmforgeLM(pretrained=str(resolve_path(model)), batch_size=batch_size)
    results = lm_eval_simple(lm, names, sorted(folders), limit=limit, num_fewshot=num_fewshot, seed=seed)
    if out is not None:
        from lmforge.io import atomic_write_text

        atomic_write_text(Path(out) / "report.json", json.dumps(results, indent=2, default=str) + "\n")
    return results


def lm_eval_simple(lm, names: list[str], folders: list[str], **options) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    seed = options.pop("seed", 1234)
    results = simple_evaluate(model=lm, tasks=names, task_manager=TaskManager(include_path=folders),
                              random_seed=seed, fewshot_random_seed=seed, log_samples=False, bootstrap_iters=0,
                              **options)
    return {k: v for k, v in results.items() if k in ("results", "configs", "versions", "n-shot", "higher_is_better",
                                                      "n-samples", "config")}
