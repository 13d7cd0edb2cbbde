"""The precision and speed switches each train: forced bf16 autocast (whatever the CPU), fp32, torch.compile,
activation checkpointing (whose gradients are the plain ones), fused AdamW; and the compile decision falls
back to eager, with a warning, only for a compiler failure, while a real bug in the trial step propagates."""

import json

import pytest
import torch
from conftest import tiny_recipe

from lmforge.model.config import ModelConfig
from lmforge.model.transformer import Transformer
from lmforge.train.fit import train_step
from lmforge.train.optim import make_optimizer
from lmforge.train.recipe import TrainSpec, parse_recipe
from lmforge.train.trainer import train

# Short runs: bf16 may be emulated (~20x slower on AVX2-only CPUs), compile costs a trial compilation.
SHORT = dict(max_steps=16, micro_batch_size=4, lr=1e-2, warmup_steps=2, log_interval=1, eval_interval=100,
             checkpoint_interval=100, final_eval_tokens=2048)


def losses(out) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def fell(curve: list[float]) -> bool:
    """The last four steps' mean loss is well below the first step's."""
    return sum(curve[-4:]) / 4 < curve[0] - 0.7


def counting_checkpoint(monkeypatch) -> list:
    calls = []
    real = torch.utils.checkpoint.checkpoint

    def checkpoint(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", checkpoint)
    return calls


@pytest.mark.parametrize("switch", [{"precision": "bf16"}, {"precision": "fp32"}, {"compile": True},
                                    {"activation_checkpointing": True}],
                         ids=["bf16", "fp32", "compile", "activation-checkpointing"])
def test_each_switch_trains(small_dataset, small_tokenizer, tmp_path, monkeypatch, switch):
    import lmforge.train.loss as loss_module

    calls = counting_checkpoint(monkeypatch)
    dtypes = set()  # the dtype of the logits the training loss sees: bf16 under autocast, else fp32

    def cross_entropy_sum(logits, targets, _real=loss_module.cross_entropy_sum):
        dtypes.add(logits.dtype)
        return _real(logits, targets)

    monkeypatch.setattr(loss_module, "cross_entropy_sum", cross_entropy_sum)
    raw = tiny_recipe(small_dataset, small_tokenizer, **{**SHORT, **switch})
    result = train(parse_recipe(raw), tmp_path / "run", progress=False)
    curve = losses(tmp_path / "run")
    assert len(curve) == SHORT["max_steps"]
    # from ln(512) = 6.24 at the start; 16 steps take any of these runs well below it
    assert curve[0] > 6.0 and fell(curve), curve
    assert result["validation"]["loss"] < curve[0] - 0.6, result["validation"]
    assert result["precision"] == switch.get("precision", "fp32")
    assert result["compiled"] is bool(switch.get("compile"))
    assert dtypes == {torch.bfloat16 if result["precision"] == "bf16" else torch.float32}
    start = json.loads((tmp_path / "run" / "events.jsonl").read_text().splitlines()[0])
    assert start["kind"] == "start" and start["precision"] == result["precision"]
    assert start["compile"] is result["compiled"]
    if switch.get("activation_checkpointing"):
        assert len(calls) >= 2 * SHORT["max_steps"]  # every block of every training forward recomputed
    else:
        assert not calls


def tiny_model(seed: int = 0) -> Transformer:
    model = Transformer(ModelConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32))
    model.reset_parameters(seed=seed)
    return model.train()


def micro_batches(n: int = 2):
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        t = torch.randint(0, 96, (3, 33), generator=g)
        y = t[:, 1:].clone()
        y[0, :10] = -100  # a masked stretch, as chat data has
        out.append((t[:, :-1], y))
    return out


def test_activation_checkpointing_gives_the_same_gradients(monkeypatch):
    calls = counting_checkpoint(monkeypatch)
    plain, ckpt = tiny_model(), tiny_model()
    ckpt.activation_checkpointing = True
    spec = TrainSpec(lr=1e-2, precision="fp32")
    grads = {}
    for name, model in (("plain", plain), ("ckpt", ckpt)):
        opt = make_optimizer(model, spec)
        before = len(calls)
        # capture the gradients clip_and_step is about to use: the optimizer step sees them
        seen = {}
        for group in opt.param_groups:
            for p in group["params"]:
                p.register_post_accumulate_grad_hook(lambda p, seen=seen: seen.__setitem__(id(p), p.grad.clone()))
        loss, norm = train_step(model, opt, micro_batches(), precision="fp32", grad_clip=1.0)
        grads[name] = (loss, norm, [seen[id(p)] for p in model.parameters()], len(calls) - before)
    (l1, n1, g1, c1), (l2, n2, g2, c2) = grads["plain"], grads["ckpt"]
    assert c1 == 0 and c2 == 2 * 3  # two micro-batches x three blocks
    assert l1 == l2 and n1 == pytest.approx(n2, rel=1e-6)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_adamw_is_fused(optimizer):
    model = tiny_model()
    opt = make_optimizer(model, TrainSpec(optimizer=optimizer))
    adamw = [o for o in opt.optimizers if isinstance(o, torch.optim.AdamW)]
    assert len(adamw) == 1 and all(g["fused"] for g in adamw[0].param_groups)
    # and the fused kernel computes what the reference AdamW computes
    ref_model = tiny_model()
    ref = torch.optim.AdamW([p for p in ref_model.parameters()], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0,
                            fused=False, foreach=False)
    fused = torch.optim.AdamW([p for p in model.parameters()], lr=1e-2, betas=(0.9, 0.95), weight_decay=0.0,
                              fused=True)
    for m, o in ((ref_model, ref), (model, fused)):
        for _ in range(3):
            train_step(m, o, micro_batches(1), precision="fp32", grad_clip=0.0)
    for a, b in zip(ref_model.parameters(), model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def failing_compile(error):
    def compile(model, *args, **kwargs):
        def compiled(*a, **k):
            raise error
        return compiled
    return compile


def test_compile_failure_falls_back_to_eager_but_a_bug_propagates(small_dataset, small_tokenizer, tmp_path,
                                                                  monkeypatch):
    from torch._dynamo.exc import BackendCompilerFailed

    from lmforge.train.setup import setup

    recipe = parse_recipe(tiny_recipe(small_dataset, small_tokenizer, **{**SHORT, "compile": True}))
    failure = BackendCompilerFailed("inductor", RuntimeError("C++ compiler not found"), None)
    monkeypatch.setattr(torch, "compile", failing_compile(failure))
    with pytest.warns(UserWarning, match="torch.compile failed.*training in eager mode"):
        result = train(recipe, tmp_path / "fallback", progress=False)
    assert result["compiled"] is False and result["steps"] == SHORT["max_steps"]
    curve = losses(tmp_path / "fallback")
    assert fell(curve), curve

    monkeypatch.setattr(torch, "compile", failing_compile(ValueError("a real bug in the model")))
    with pytest.raises(ValueError, match="a real bug in the model"):
        setup(recipe, tmp_path / "bug", progress=False)
