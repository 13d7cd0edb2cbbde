"""The humaneval task's loop: generation -> sandbox -> (with --repair) the error fed back -> per-round pass@1.
The generator here is planted (it answers wrong until it is shown an error), so the expected curve is known."""

from __future__ import annotations

import pytest


class PlantedScorer:
    """Wrong first; the canonical solution once the prompt carries a failure (what a repairing model does)."""

    def __init__(self, problems):
        self.by_prompt = {p["prompt"]: p for p in problems.values()}
        self.prompts = []

    def generate(self, prompts, *, until, max_tokens, temperature=0.0, seed=None):
        self.prompts.append(prompts)
        out = []
        for prompt in prompts:
            problem = next(p for key, p in self.by_prompt.items() if prompt.endswith(key))
            shown_error = "# A previous attempt at this function failed: failed" in prompt
            out.append(problem["canonical_solution"] if shown_error else "    return None\n")
        return out


def test_repair_rounds_feed_the_error_back_and_count_pass_at_1_per_round():
    from lmforge.evaluate import code
    from lmforge.evaluate.builtin import run_humaneval

    problems = code.load_problems("humaneval")
    scorer = PlantedScorer(problems)
    result = run_humaneval(scorer, limit=6, repair=2)
    assert [r["pass@1"] for r in result.extra["repair"]] == [0.0, 1.0]      # solved in round 1, loop stops
    assert len(scorer.prompts) == 2 and len(scorer.prompts[1]) == 6
    assert "    return None" in scorer.prompts[1][0]                         # the failed attempt is shown
    assert result.values["pass@1,create_test"] == [1.0] * 6
    assert all(s["round"] == [1] for s in result.samples)
    assert result.extra["isolation"]["network"]
    no_repair = run_humaneval(PlantedScorer(problems), limit=6)
    assert no_repair.values["pass@1,create_test"] == [0.0] * 6 and len(no_repair.extra["repair"]) == 1


@pytest.mark.slow
def test_canonical_solutions_score_pass_at_1_of_one_through_the_task():
    from lmforge.evaluate import code
    from lmforge.evaluate.builtin import run_humaneval

    problems = code.load_problems("humaneval")

    class Canonical:
        def generate(self, prompts, **_):
            by_prompt = {p["prompt"]: p["canonical_solution"] for p in problems.values()}
            return [next(v for k, v in by_prompt.items() if prompt.endswith(k)) for prompt in prompts]

    result = run_humaneval(Canonical())
    assert len(result.values["pass@1,create_test"]) == 164
    assert sum(result.values["pass@1,create_test"]) == 164
