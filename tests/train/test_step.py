"""One optimizer step (`train_step`): gradient accumulation equals the big batch, and clipping scales the
global gradient norm to min(norm, clip) while the norm it returns (and the trainer logs) is the one before
clipping. Gradients are compared with plain autograd on the whole batch, computed here."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_recipe

from lmforge.model.config import ModelConfig
from lmforge.model.transformer import Transformer
from lmforge.train.optim import make_optimizer
from lmforge.train.recipe import TrainSpec, parse_recipe
from lmforge.train.trainer import train, train_step

VOCAB, SEQ = 101, 24


def tiny_model() -> Transformer:
    model = Transformer(ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ))
    model.reset_parameters(seed=0)
    return model


def windows(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.randint(0, VOCAB, (n, SEQ + 1), generator=torch.Generator().manual_seed(seed))  # (n, T+1)
    return rows[:, :-1], rows[:, 1:]  # inputs (n, T), next-token targets (n, T)


def autograd_oracle(model, x, y) -> tuple[list[torch.Tensor], float]:
    """The big-batch gradient, by autograd on a mean cross-entropy written here (not the model's own loss)."""
    model = copy.deepcopy(model)
    logits = model(x)  # (n, T, V)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
    loss.backward()
    return [p.grad.clone() for p in model.parameters()], loss.item()


class Recorder:
    """An optimizer that keeps the gradients it is asked to apply (after clipping) and changes nothing."""

    def step(self):
        self.grads = [p.grad.clone() for p in self.params]

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None


def step_grads(model, micro, grad_clip: float) -> tuple[list[torch.Tensor], float, float]:
    model = copy.deepcopy(model)
    rec = Recorder()
    rec.params = list(model.parameters())
    loss, norm = train_step(model, rec, micro, precision="fp32", grad_clip=grad_clip)
    return rec.grads, loss, norm


def global_norm(grads) -> float:
    return math.sqrt(sum(float(g.double().pow(2).sum()) for g in grads))


def assert_grads_close(got, want, scale: float = 1.0):
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        torch.testing.assert_close(a, b * scale, rtol=1e-5, atol=1e-8, msg=lambda m, i=i: f"parameter {i}: {m}")


def split(x, y, parts: int):
    return list(zip(x.chunk(parts), y.chunk(parts)))


@pytest.mark.parametrize("accum", [1, 2, 4])
def test_accumulated_gradient_is_the_big_batch_gradient(accum):
    """grad_accum x (8 / grad_accum) windows gives the gradient and mean loss of the 8 windows at once."""
    model, (x, y) = tiny_model(), windows(8)
    want, want_loss = autograd_oracle(model, x, y)
    got, loss, norm = step_grads(model, split(x, y, accum), grad_clip=0)
    assert_grads_close(got, want)
    assert math.isclose(loss, want_loss, rel_tol=1e-6)
    assert math.isclose(norm, global_norm(want), rel_tol=1e-5)


def update_gap(optimizer: str, precision: str) -> float:
    """The largest relative difference between the parameter updates of grad_accum=1 and grad_accum=2 on the
    same windows, through the trainer's real optimizers (with clipping on)."""
    model, (x, y) = tiny_model(), windows(8, seed=1)
    after = []
    for accum in (1, 2):
        m = copy.deepcopy(model)
        opt = make_optimizer(m, TrainSpec(optimizer=optimizer, lr=1e-2, grad_clip=1.0, precision=precision))
        train_step(m, opt, split(x, y, accum), precision="fp32", grad_clip=1.0)
        after.append([p.detach() for p in m.parameters()])
    gaps = []
    for i, (big, acc, start) in enumerate(zip(*after, model.parameters(), strict=True)):
        update = big - start.detach()
        assert update.norm() > 0, i
        gaps.append(float((acc - big).norm() / update.norm()))
    return max(gaps)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_accumulation_gives_the_same_parameters_after_a_step(optimizer):
    """Compared as the relative error of each parameter's update. Both optimizers are nearly blind to a
    gradient's scale (Adam divides by it, Muon orthogonalises), which is why the gradients themselves are
    checked above."""
    assert update_gap(optimizer, "fp32") < 1e-4


def muon_updates(precision: str) -> list[torch.Tensor]:
    """The hidden matrices' updates of one Muon step (forward in fp32) with Newton-Schulz in `precision`."""
    model, (x, y) = tiny_model(), windows(8, seed=1)
    m = copy.deepcopy(model)
    opt = make_optimizer(m, TrainSpec(optimizer="muon", lr=1e-2, grad_clip=1.0, precision=precision))
    train_step(m, opt, split(x, y, 1), precision="fp32", grad_clip=1.0)
    return [a.detach() - b.detach() for (n, a), b in zip(m.named_parameters(), model.parameters(), strict=True)
            if a.dim() == 2 and not n.startswith(("embed_tokens", "lm_head"))]


def test_muon_newton_schulz_follows_train_precision():
    """`precision: fp32` is fp32 in Muon too, on any CPU (accumulation's float32 rounding moves its updates by
    under 1e-4); forced bf16 rounds Newton-Schulz to 8 bits of mantissa, so the same gradients give updates
    that differ from fp32's by far more than that (3-19% per matrix on an AMD EPYC), whatever the CPU's bf16
    kernels."""
    assert update_gap("muon", "fp32") < 1e-4
    gaps = [float((a - b).norm() / b.norm()) for a, b in zip(muon_updates("bf16"), muon_updates("fp32"),
                                                              strict=True)]
    assert gaps and min(gaps) > 1e-3, gaps


def test_clipping_scales_the_global_norm_to_the_clip():
    """Above the clip, every gradient is scaled by clip / norm (one factor for all parameters, applied to the
    accumulated gradient, not per micro-batch); the returned norm is the one before clipping."""
    model, (x, y) = tiny_model(), windows(8, seed=2)
    want, _ = autograd_oracle(model, x, y)
    norm = global_norm(want)
    clip = norm / 4
    got, _, returned = step_grads(model, split(x, y, 2), grad_clip=clip)
    assert math.isclose(returned, norm, rel_tol=1e-5)  # pre-clip
    assert math.isclose(global_norm(got), clip, rel_tol=1e-5)  # = min(norm, clip)
    assert_grads_close(got, want, scale=clip / norm)


@pytest.mark.parametrize("clip_over_norm", [4.0, 0.0])  # a clip above the norm; 0 disables clipping
def test_gradient_within_the_clip_is_untouched(clip_over_norm):
    model, (x, y) = tiny_model(), windows(8, seed=3)
    want, _ = autograd_oracle(model, x, y)
    norm = global_norm(want)
    got, _, returned = step_grads(model, split(x, y, 2), grad_clip=clip_over_norm * norm)
    assert math.isclose(returned, norm, rel_tol=1e-5)
    assert_grads_close(got, want)


def test_trainer_logs_the_norm_before_clipping(small_dataset, small_tokenizer, tmp_path):
    """metrics.jsonl's grad_norm: the first step's is the same with clipping off and with a clip far below it
    (same weights, same batch), and it exceeds that clip, which no clipped norm could."""
    logged = {}
    for clip in (0.0, 1e-3):
        raw = tiny_recipe(small_dataset, small_tokenizer, max_steps=3, log_interval=1, grad_clip=clip,
                          final_eval_tokens=1024)
        out = tmp_path / f"clip-{clip}"
        train(parse_recipe(raw), out, progress=False)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        logged[clip] = [r["grad_norm"] for r in rows if "grad_norm" in r]
    assert len(logged[1e-3]) == 3
    assert math.isclose(logged[1e-3][0], logged[0.0][0], rel_tol=1e-6)
    assert all(n > 100 * 1e-3 for n in logged[1e-3])
