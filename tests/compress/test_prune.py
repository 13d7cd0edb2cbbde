"""Pruning: masks with exactly the asked sparsity (global, per layer, per row, 2:4, iterative), Wanda's scores
against a closed form and a planted case, `lmforge prune` writing exact zeros transformers loads, and the
compression record (perplexity ratio, KL, top-1 agreement) against closed forms."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import require, run_cli

from lmforge.compress.prune import (input_norms, is_two_four, magnitude_scores, masks_from_scores, two_four,
                                    wanda_scores)
from lmforge.infer.quality import divergence
from lmforge.model.config import ModelConfig
from lmforge.model.transformer import Transformer


def _model(seed=0):
    m = Transformer(ModelConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    m.reset_parameters(seed=seed)
    return m


def test_masks_keep_exactly_the_asked_share():
    scores = magnitude_scores(_model())
    total = sum(s.numel() for s in scores.values())
    g = masks_from_scores(scores, 0.3, scope="global")
    assert sum(int(m.sum()) for m in g.values()) == round(total * 0.7)
    threshold = min(s[m].min() for s, m in zip(scores.values(), g.values()))
    assert all((s[~m] <= threshold).all() for s, m in zip(scores.values(), g.values()))  # the smallest went
    layer = masks_from_scores(scores, 0.3, scope="layer")
    assert all(int(m.sum()) == round(m.numel() * 0.7) for m in layer.values())
    row = masks_from_scores(scores, 0.5, scope="row")
    assert all((m.sum(1) == m.shape[1] // 2).all() for m in row.values())


def test_iterative_pruning_reaches_density_rate_to_the_level():
    scores = magnitude_scores(_model())
    total = sum(s.numel() for s in scores.values())
    prior = None
    for level in range(1, 5):
        masks = masks_from_scores(scores, 1 - 0.8 ** level, scope="global", prior=prior)
        assert sum(int(m.sum()) for m in masks.values()) == round(total * 0.8 ** level)
        if prior is not None:  # nothing pruned comes back
            assert all(not (m & ~p).any() for m, p in zip(masks.values(), prior.values()))
        prior = masks


def test_two_four_keeps_the_two_largest_of_every_four():
    s = torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.1, 0.3, 0.2, 0.9]])
    assert two_four(s).tolist() == [[False, True, True, False, False, True, False, True]]
    masks = masks_from_scores(magnitude_scores(_model()), 0.5, pattern="2:4")
    assert all(is_two_four(m) for m in masks.values())


def test_input_norms_and_wanda_scores_match_a_closed_form():
    model = _model().eval()
    ids = [list(range(1, 30)), list(range(30, 61))]
    captured = []
    layer = model.layers[1].mlp.down_proj
    h = layer.register_forward_pre_hook(lambda mod, args: captured.append(args[0].reshape(-1, args[0].shape[-1])))
    norms = input_norms(model, ids)
    h.remove()
    expected = torch.cat(captured).pow(2).sum(0).sqrt()
    key = "model.layers.1.mlp.down_proj.weight"
    assert torch.allclose(norms[key], expected, rtol=1e-5)
    assert torch.allclose(wanda_scores(model, ids)[key], layer.weight.abs() * expected[None, :], rtol=1e-5)


def test_wanda_keeps_small_weights_on_loud_inputs_that_magnitude_drops():
    """Planted: one input feature of a layer is 100x louder than the rest and its weights 10x smaller than
    the layer's typical weight."""
    model = _model().eval()
    lin = model.layers[0].self_attn.q_proj
    with torch.no_grad():
        lin.weight[:, 5] = 0.1 * lin.weight.abs().mean() * torch.sign(lin.weight[:, 5])
        model.layers[0].input_layernorm.weight[5] = 100.0
    key = "model.layers.0.self_attn.q_proj.weight"
    ids = [list(range(1, 60))]
    mag = masks_from_scores(magnitude_scores(model), 0.5, scope="row")[key]
    wanda = masks_from_scores(wanda_scores(model, ids), 0.5, scope="row")[key]
    assert mag[:, 5].float().mean() < 0.1 and wanda[:, 5].all()


def test_divergence_closed_forms():
    torch.manual_seed(0)
    logits = {i: torch.randn(20, 11) for i in range(3)}
    chunks = [[i] * 20 for i in range(3)]
    same = divergence(lambda ids: logits[ids[0]], lambda ids: logits[ids[0]], chunks)
    assert same["kl"] == pytest.approx(0, abs=1e-6) and same["top1_agreement"] == 1 and same["nll"] == same["nll_reference"]
    uniform = divergence(lambda ids: logits[ids[0]], lambda ids: torch.zeros(20, 11), chunks)
    lp = torch.cat([torch.log_softmax(logits[i][:-1], -1) for i in range(3)])
    entropy = -(lp.exp() * lp).sum(-1).mean().item()
    assert uniform["kl"] == pytest.approx(math.log(11) - entropy, rel=1e-5)
    assert uniform["nll"] == pytest.approx(math.log(11) * 57, rel=1e-6)


@pytest.mark.parametrize("method,pattern", [("magnitude", "unstructured"), ("wanda", "unstructured"),
                                            ("wanda", "2:4")])
def test_prune_cli_writes_exact_zeros_that_transformers_loads(trained_model, tmp_path, method, pattern):
    from lmforge.io import read_json
    from lmforge.model.hf import load_model

    out = tmp_path / "pruned"
    proc = run_cli("prune", trained_model, "--method", method, "--sparsity", "0.5", "--pattern", pattern, "-o", out)
    assert proc.returncode == 0, proc.stderr
    pruned = load_model(out)
    for name, _, _, lin in pruned.block_linears():
        assert (lin.weight == 0).float().mean().item() == pytest.approx(0.5, abs=1e-3), name
    cost = read_json(out / "compression.json")
    assert cost == read_json(out / "lmforge.json")["compression"]
    assert cost["ppl_ratio"] > 1 and 0 < cost["kl"] and 0 < cost["top1_agreement"] < 1
    assert cost["linear_density"] == pytest.approx(0.5, abs=1e-3) and cost["bytes"] == cost["bytes_reference"]
    if pattern == "2:4":
        assert cost["two_four"] is True and "none on CPU" in cost["speedup"] and "no CPU kernel" in proc.stdout
    transformers = require("transformers")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    x = torch.randint(0, pruned.config.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (hf(x).logits - pruned.eval()(x)).abs().max() <= 1e-4


def test_prune_refuses_bad_input_without_output(trained_model, tmp_path):
    for args, says in ((["--sparsity", "1.5"], "sparsity"), (["--method", "sparsegpt"], "unknown pruning method"),
                       (["--pattern", "2:4", "--sparsity", "0.7"], "prunes exactly half"),
                       (["--scope", "diagonal"], "unknown pruning scope")):
        proc = run_cli("prune", trained_model, *args, "-o", tmp_path / "out")
        assert proc.returncode != 0 and says in proc.stderr, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out").exists()
