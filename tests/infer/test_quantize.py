"""Weight-only int8 / int4 on PyTorch's CPU kernels against the dequantized weights (closed form), and their
measured cost on a trained model's held-out text."""

import pytest
import torch
from torch import nn

from lmforge.data.dataset import Dataset
from lmforge.errors import ModelError
from lmforge.infer.local import load
from lmforge.infer.quantize import Int4Linear, Int8Linear, perplexity, quantize_model


def _linear(n=96, k=128):
    torch.manual_seed(0)
    layer = nn.Linear(k, n, bias=False)
    nn.init.normal_(layer.weight)
    return layer


def test_int8_kernel_is_the_dequantized_matmul():
    layer = _linear()
    q = Int8Linear(layer)
    x = torch.randn(2, 5, 128)
    ref = x @ q.dequantized().T
    torch.testing.assert_close(q(x), ref, rtol=1e-4, atol=1e-4)
    assert (q.dequantized() - layer.weight).abs().max() <= q.scale.max() / 2 + 1e-6  # round-to-nearest


def test_int4_kernel_is_the_groupwise_dequantized_matmul():
    layer, g = _linear(), 32
    q = Int4Linear(layer, g)
    w = layer.weight.detach().view(96, -1, g)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = (high - low) / 15
    deq = (torch.round((w - low) / scale).clamp(0, 15) * scale + low).view(96, 128)
    x = torch.randn(3, 128)
    torch.testing.assert_close(q(x), x @ deq.T, rtol=1e-4, atol=1e-4)
    assert (deq - layer.weight).abs().max() <= scale.max() / 2 + 1e-6


def _windows(model, small_dataset, n=6, length=128):
    texts = [r["text"] for r in Dataset(small_dataset).records("validation")]
    ids = [t for text in texts for t in model.tokenizer.encode(text, add_special_tokens=True)]
    return [ids[i * length:(i + 1) * length] for i in range(n)]


@pytest.mark.parametrize("method,max_rise", [("int8", 0.01), ("int4", 0.15)])
def test_quantized_model_costs_little_perplexity(trained_model, small_dataset, method, max_rise):
    full = load(trained_model)
    windows = _windows(full, small_dataset)
    base = perplexity(full.model, windows)
    quant = load(trained_model, quantize=method)
    kinds = {type(m).__name__ for m in quant.model.modules()}
    assert ("Int8Linear" if method == "int8" else "Int4Linear") in kinds and "Linear" in kinds  # head kept
    rise = perplexity(quant.model, windows) / base - 1
    assert -0.02 < rise < max_rise, f"{method}: perplexity {base:.3f} -> {rise:+.2%}"
    text = quant.generate("def ", max_tokens=16, temperature=0)
    assert isinstance(text, str) and text


def test_unknown_method_is_refused(trained_model):
    with pytest.raises(ModelError, match="unknown quantization"):
        quantize_model(load(trained_model).model, "int3")
