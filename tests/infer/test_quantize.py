"""Weight-only int8 / int4 on PyTorch's CPU kernels against the dequantized weights (closed form), their
measured cost on a trained model's held-out text, and the int8/int4 model directories `lmforge export --format
torch` writes (the same layers as quantizing at load, a fraction of the bytes, refused by transformers by name)."""

import json
import shutil

import pytest
import torch
from torch import nn

from conftest import require, run_cli
from lmforge.data.dataset import Dataset
from lmforge.errors import ModelError
from lmforge.infer.local import load
from lmforge.infer.quality import nll, torch_logits
from lmforge.infer.quantize import Int4Linear, Int8Linear, quantize_model


def perplexity(model, windows):
    total, count = nll(torch_logits(model), windows)
    return float(torch.exp(torch.tensor(total / count)))


def _linear(n=96, k=128):
    torch.manual_seed(0)
    layer = nn.Linear(k, n, bias=False)
    nn.init.normal_(layer.weight)
    return layer


# the kernels' activation dtypes: fp32 (exact up to summation order) and bf16 (inputs and outputs rounded to it)
DTYPES = pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)])


@DTYPES
def test_int8_kernel_is_the_dequantized_matmul(dtype, tol):
    layer = _linear()
    q = Int8Linear.from_linear(layer, dtype=dtype)
    x = torch.randn(2, 5, 128)
    ref = x.to(dtype).float() @ q.dequantized().T
    torch.testing.assert_close(q(x), ref, rtol=tol, atol=tol * ref.abs().max().item())
    assert q(x).dtype == x.dtype
    # round-to-nearest, plus (bf16) the scale's own rounding: up to 127 steps of 2^-9 of it
    slack = 127 * 2 ** -9 if dtype == torch.bfloat16 else 0
    assert (q.dequantized() - layer.weight).abs().max() <= q.scale.float().max() * (0.5 + slack) + 1e-6


@DTYPES
def test_int4_kernel_is_the_groupwise_dequantized_matmul(dtype, tol):
    layer, g = _linear(), 32
    q = Int4Linear.from_linear(layer, g, dtype=dtype)
    w = layer.weight.detach().view(96, -1, g)
    low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
    scale = (high - low) / 15
    deq = (torch.round((w - low) / scale).clamp(0, 15) * scale + low).view(96, 128)
    x = torch.randn(3, 128)
    ref = x.to(dtype).float() @ deq.T
    torch.testing.assert_close(q(x), ref, rtol=tol, atol=tol * ref.abs().max().item())
    assert (deq - layer.weight).abs().max() <= scale.max() / 2 + 1e-6


def test_the_kernels_run_in_the_dtype_measured_fastest():
    from lmforge.infer.quantize import compute_dtype

    assert compute_dtype() in (torch.float32, torch.bfloat16)
    assert Int8Linear.from_linear(_linear()).scale.dtype == compute_dtype()


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


@pytest.fixture(scope="module")
def source(trained_model, tmp_path_factory):
    """A copy of the trained model, since exports write their perplexity change into its lmforge.json."""
    out = tmp_path_factory.mktemp("quant") / "coder" / "model"
    shutil.copytree(trained_model, out)
    return out


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_torch_export_is_the_load_time_quantization_in_a_fraction_of_the_bytes(source, tmp_path, method):
    out = tmp_path / f"coder-{method}"
    proc = run_cli("export", source, "--format", "torch", "--type", method, "-o", out, check=True)
    assert "perplexity" in proc.stdout
    run_cli("models", "import", out, "--name", f"coder-{method}", check=True)
    assert f"hf {method}" in run_cli("models", "list", check=True).stdout
    exported, at_load = load(f"coder-{method}"), load(source, quantize=method)
    layer = Int8Linear if method == "int8" else Int4Linear
    assert sum(isinstance(m, layer) for m in exported.model.modules()) == 7 * exported.model.config.num_hidden_layers
    ids = torch.tensor([exported.tokenizer.encode("def main(argv):\n    return 0\n")])
    with torch.no_grad():
        torch.testing.assert_close(exported.model(ids), at_load.model(ids), rtol=0, atol=0)  # the same arithmetic
    assert exported.generate("def ", max_tokens=12, temperature=0) == at_load.generate("def ", max_tokens=12,
                                                                                       temperature=0)
    # bytes on disk: linear weights at 1 byte (int8) or half a byte plus a scale and zero per 32 (int4) per value
    fp32 = load(source).model
    linear = sum(m.weight.numel() for b in fp32.layers for m in b.modules() if isinstance(m, nn.Linear))
    rest = sum(p.numel() for p in fp32.parameters()) - linear
    per_value = 1 + 0 if method == "int8" else 0.5 + 8 / 32
    expected = 4 * rest + linear * per_value
    size = (out / "model.safetensors").stat().st_size
    assert expected <= size < expected * 1.03 + 65536, (size, expected)
    # the cost is recorded in both directories' lmforge.json and in the exported config
    for folder in (source, out):
        [entry] = [e for e in json.loads((folder / "lmforge.json").read_text())["exports"]
                   if e["file"] == str(out.resolve())]
        assert entry["format"] == "torch" and entry["type"] == method
        assert entry["perplexity"]["measured_on"] == "validation split"
        assert abs(entry["perplexity"]["change"]) < (0.01 if method == "int8" else 0.15)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["method"] == method
    lineage = json.loads((out / "lmforge.json").read_text())
    assert lineage["quantization"]["source"] == str(source.resolve()) and "dataset" in lineage


def test_transformers_refuses_a_quantized_export_instead_of_loading_it_wrongly(source, tmp_path):
    require("transformers")
    from transformers import AutoModelForCausalLM

    out = tmp_path / "int8"
    run_cli("export", source, "--format", "torch", "--no-measure", "-o", out, check=True)
    with pytest.raises(Exception, match="lmforge"):
        AutoModelForCausalLM.from_pretrained(out)


def test_bad_torch_exports_are_refused_without_output(source, tmp_path):
    out = tmp_path / "x"
    for args, message in ((["--type", "q8_0"], "--type q8_0 is not one --format torch writes"),
                          (["--type", "int3"], "choose one of int8, int4")):
        proc = run_cli("export", source, "--format", "torch", *args, "-o", out)
        assert proc.returncode != 0 and message in proc.stderr and not out.exists(), proc.stderr
    run_cli("export", source, "--format", "torch", "--no-measure", "-o", out, check=True)
    proc = run_cli("export", out, "--format", "torch", "--no-measure", "-o", tmp_path / "y")
    assert proc.returncode != 0 and "already quantized" in proc.stderr and not (tmp_path / "y").exists()
    proc = run_cli("export", source, "--format", "torch", "--no-measure", "-o", out)
    assert proc.returncode != 0 and "already exists" in proc.stderr
    with pytest.raises(ModelError, match="already quantized"):
        load(out, quantize="int4")
