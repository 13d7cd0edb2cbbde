"""The lottery ticket with rewinding: densities exactly (1 - rate)^L, survivors rewound to their step-K values,
the two controls, pruned weights exactly zero after retraining, the report, and exact resumption across
levels."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from conftest import run_cli, tiny_recipe
from safetensors.torch import load_file

from lmforge.compress.lottery import lottery
from lmforge.compress.prune import load_masks
from lmforge.io import read_json
from lmforge.model.hf import load_model
from lmforge.train.events import Event
from lmforge.train.methods import Method
from lmforge.train.recipe import parse_recipe

pytestmark = pytest.mark.slow
STEPS, K = 24, 4


@pytest.fixture(scope="module")
def raw(small_dataset, small_tokenizer):
    return tiny_recipe(small_dataset, small_tokenizer, max_steps=STEPS, checkpoint_interval=8, eval_interval=STEPS,
                       final_eval_tokens=4096, lr=1e-2)


class Starts(Method):
    """Records, for every run, the step it starts at and its weights then (after any checkpoint loaded)."""
    events = (Event.FIT_START,)

    def __init__(self):
        self.seen = {}

    def apply(self, event, state):
        from lmforge.train.state import model_weights

        self.seen[state.recipe.name] = (state.step, {k: v.clone() for k, v in model_weights(state.model).items()})


class StopOnce(Method):
    events = (Event.STEP_END,)

    def __init__(self, name: str, step: int):
        self.run_name, self.step, self.done = name, step, False

    def apply(self, event, state):
        if state.recipe.name == self.run_name and state.step == self.step and not self.done:
            self.done = state.stop = True


def test_levels_rewind_and_controls(raw, tmp_path):
    starts = Starts()
    report = lottery(parse_recipe(copy.deepcopy(raw)), tmp_path / "lt", levels=2, rate=0.2, rewind_step=K,
                     progress=False, methods=[starts])
    out = tmp_path / "lt"
    runs = {(r["kind"], r["level"]): r for r in report["runs"]}
    assert set(runs) == {("dense", 0)} | {(k, lv) for k in ("ticket", "reinit", "random") for lv in (1, 2)}
    rewound = load_file(str(out / "rewind" / f"step-{K:07d}" / "model.safetensors"))
    m1, m2 = load_masks(out / "ticket-01" / "mask.safetensors"), load_masks(out / "ticket-02" / "mask.safetensors")
    total = sum(m.numel() for m in m1.values())
    for level, masks in ((1, m1), (2, m2)):
        assert sum(int(m.sum()) for m in masks.values()) == round(total * 0.8 ** level)
        for kind in ("ticket", "reinit", "random"):
            assert runs[(kind, level)]["density"] == pytest.approx(round(total * 0.8 ** level) / total, abs=1e-12)
    assert all(not (b & ~a).any() for a, b in zip(m1.values(), m2.values()))  # level 2 only removes more
    rnd = load_masks(out / "random-02" / "mask.safetensors")
    assert all(int(rnd[k].sum()) == int(m2[k].sum()) for k in m2) and any(not torch.equal(rnd[k], m2[k]) for k in m2)

    name = raw["name"]
    step, weights = starts.seen[f"{name}-ticket-01"]
    assert step == K  # rewound to step K, not 0 ...
    for key, mask in m1.items():  # ... with the survivors at their step-K values and the rest zero
        assert torch.equal(weights[key], rewound[key] * mask)
    _, reinit = starts.seen[f"{name}-reinit-01"]
    key = next(iter(m1))
    assert torch.equal(reinit[key] == 0, ~m1[key]) and not torch.equal(reinit[key], weights[key])

    for kind in ("ticket", "reinit", "random"):  # the mask held through retraining: exact zeros
        model = load_model(out / f"{kind}-02" / "model")
        masks = rnd if kind == "random" else m2
        for lname, _, _, lin in model.block_linears():
            assert (lin.weight[~masks[f"model.{lname}.weight"]] == 0).all()
    cost = read_json(out / "ticket-02" / "model" / "compression.json")
    assert cost["method"] == "lottery-ticket" and cost["linear_density"] <= 0.64 + 1e-3 and cost["ppl_ratio"] > 0
    assert "<svg" in (out / "report.html").read_text() and read_json(out / "report.json")["runs"] == report["runs"]


def test_resumes_exactly_across_levels(raw, tmp_path):
    raw = {**copy.deepcopy(raw), "name": "lt"}
    straight = lottery(parse_recipe(copy.deepcopy(raw)), tmp_path / "a", levels=2, rewind_step=K, controls=False,
                       progress=False)
    with pytest.raises(KeyboardInterrupt):
        lottery(parse_recipe(copy.deepcopy(raw)), tmp_path / "b", levels=2, rewind_step=K, controls=False,
                progress=False, methods=[StopOnce("lt-ticket-02", 13)])
    assert not (tmp_path / "b" / "ticket-02" / "model").exists()
    resumed = lottery(parse_recipe(copy.deepcopy(raw)), tmp_path / "b", levels=2, rewind_step=K, controls=False,
                      progress=False)
    assert [r["val_loss"] for r in resumed["runs"]] == [r["val_loss"] for r in straight["runs"]]
    a = load_file(str(tmp_path / "a" / "ticket-02" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "ticket-02" / "model" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_cli_and_its_refusals(raw, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    proc = run_cli("prune", "--method", "lottery", "--recipe", recipe, "--levels", "1", "--rewind-step", "2",
                   "--no-controls", "-o", tmp_path / "lt")
    assert proc.returncode == 0, proc.stderr
    assert "ticket level 1: density 0.800" in proc.stdout and (tmp_path / "lt" / "report.html").is_file()
    bad = run_cli("prune", "--method", "lottery", "--recipe", recipe, "--rewind-step", str(STEPS), "-o", tmp_path / "x")
    assert bad.returncode != 0 and "--rewind-step" in bad.stderr and not (tmp_path / "x").exists()


def test_training_with_a_mask_keeps_zeros_and_refuses_another_mask(trained_model, small_dataset, tmp_path):
    import lmforge
    from lmforge.compress.oneshot import prune_model

    prune_model(trained_model, tmp_path / "pruned", method="magnitude", sparsity=0.5, measure=False)
    raw = tiny_recipe(small_dataset, trained_model, max_steps=12, checkpoint_interval=6, seq_len=128,
                      optimizer="muon")  # Muon spreads updates over whole matrices: the mask must hold anyway
    del raw["tokenizer"], raw["model"]
    raw |= {"init_from": str(tmp_path / "pruned"), "mask": str(tmp_path / "pruned" / "mask.safetensors")}
    lmforge.train(copy.deepcopy(raw), tmp_path / "run", progress=False)
    masks = load_masks(tmp_path / "pruned" / "mask.safetensors")
    model = load_model(tmp_path / "run" / "model")
    before = load_model(tmp_path / "pruned")
    for name, _, _, lin in model.block_linears():
        mask = masks[f"model.{name}.weight"]
        assert (lin.weight[~mask] == 0).all()
    changed = [not torch.equal(a.weight, b.weight) for (_, _, _, a), (_, _, _, b) in
               zip(model.block_linears(), before.block_linears())]
    assert all(changed)  # it trained
    from lmforge.compress.prune import save_masks

    save_masks({k: torch.ones_like(v) for k, v in masks.items()}, tmp_path / "pruned" / "mask.safetensors")
    with pytest.raises(lmforge.errors.LmforgeError, match="mask file changed"):
        lmforge.train(copy.deepcopy(raw) | {"train": {**raw["train"], "max_steps": 14}}, tmp_path / "run",
                      progress=False)
