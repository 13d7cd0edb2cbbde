"""The llama.cpp backend (lmforge.infer.llamacpp): a GGUF lmforge exported, run through llama-cpp-python behind
LocalModel's generate / stream / chat / embed, against the torch backend on the same weights."""

import shutil

import pytest
import torch
from conftest import require, run_cli

from lmforge.errors import ModelError
from lmforge.infer.local import load

require("gguf")
require("llama_cpp")

PROMPTS = ("def main(", "import os\n", "class A:\n    ")
MESSAGES = [{"role": "system", "content": "Python."}, {"role": "user", "content": "a loop"}]


@pytest.fixture(scope="module")
def model_dir(trained_model, tmp_path_factory):
    """A copy of the trained model with its f32 GGUF beside the weights (as `--backend llamacpp` finds it). f32,
    not f16: these tests compare greedy text token for token, and f16 rounding flips near-ties (seen on an AMD
    EPYC); how close f16 and the quantized types stay is test_gguf's business."""
    from lmforge.infer.gguf import export_gguf

    out = tmp_path_factory.mktemp("llamacpp") / "coder"
    shutil.copytree(trained_model, out)
    export_gguf(out, out / "coder-f32.gguf", qtype="f32")
    return out


@pytest.fixture(scope="module")
def torch_m(model_dir):
    return load(model_dir)


@pytest.fixture(scope="module")
def cpp(model_dir):
    return load(model_dir / "coder-f32.gguf")


def test_a_gguf_loads_on_the_llamacpp_backend(model_dir, torch_m, cpp):
    from lmforge.infer.llamacpp import LlamaCppModel

    assert isinstance(cpp, LlamaCppModel) and cpp.context_length == torch_m.context_length == 256
    assert type(torch_m).__name__ == "LocalModel"  # a directory stays on torch unless asked
    assert isinstance(load(model_dir, backend="llamacpp"), LlamaCppModel)  # its GGUF, found in the directory
    assert cpp.tokenizer.vocab_size == torch_m.tokenizer.vocab_size
    with pytest.raises(ModelError, match="runs on the llama.cpp backend"):
        load(model_dir / "coder-f32.gguf", backend="torch")
    for option, message in (({"quantize": "int8"}, "--quantize is for the torch backend"),
                            ({"compile": True}, "--compile is for the torch backend")):
        with pytest.raises(ModelError, match=message):
            load(model_dir / "coder-f32.gguf", **option)


def test_no_gguf_for_the_llamacpp_backend_is_a_clear_error(trained_model):
    with pytest.raises(ModelError, match="there is none here"):
        load(trained_model, backend="llamacpp")


def test_greedy_generate_and_stream_equal_the_torch_backend(torch_m, cpp):
    for prompt in PROMPTS:
        expected = torch_m.generate(prompt, max_tokens=16, temperature=0)
        assert expected and cpp.generate(prompt, max_tokens=16, temperature=0) == expected
        pieces = list(cpp.stream(prompt, max_tokens=16, temperature=0))
        assert len(pieces) > 1 and "".join(pieces) == expected
    # request semantics carry over: stop strings, seeded sampling, batches of prompts
    stop = torch_m.generate("def main(", max_tokens=16, temperature=0)[3:5]
    assert cpp.generate("def main(", max_tokens=16, temperature=0, stop=[stop]) == \
        torch_m.generate("def main(", max_tokens=16, temperature=0, stop=[stop])
    assert cpp.generate(list(PROMPTS), max_tokens=8, temperature=0) == \
        torch_m.generate(list(PROMPTS), max_tokens=8, temperature=0)
    sampled = [cpp.generate("import ", max_tokens=12, temperature=0.9, seed=s) for s in (1, 1, 2)]
    assert sampled[0] == sampled[1]


def test_chat_uses_the_exported_template(torch_m, cpp):
    assert cpp.chat_prompt(MESSAGES) == torch_m.chat_prompt(MESSAGES)  # template text vs lmforge's ids
    assert cpp.chat(MESSAGES, max_tokens=12, temperature=0) == torch_m.chat(MESSAGES, max_tokens=12, temperature=0)
    assert "".join(cpp.chat(MESSAGES, max_tokens=12, temperature=0, stream=True)) == \
        cpp.chat(MESSAGES, max_tokens=12, temperature=0)


def test_embed_matches_the_torch_backend(torch_m, cpp):
    texts = ["import sys", "def add(a, b):\n    return a + b", "class Config:\n    name = 'x'"]
    ours, theirs = torch_m.embed(texts), cpp.embed(texts)
    assert theirs.shape == ours.shape == (3, torch_m.model.config.hidden_size)
    assert torch.allclose(theirs.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert (theirs * ours).sum(-1).min() > 0.99
    single = cpp.embed("import sys")
    assert single.shape == (torch_m.model.config.hidden_size,) and torch.allclose(single, theirs[0], atol=1e-5)
    assert not torch.allclose(theirs[0], theirs[1], atol=1e-2)  # different texts, different vectors


def test_generate_on_the_command_line_with_backend_llamacpp(model_dir, torch_m):
    out = run_cli("generate", model_dir, "def main(", "--backend", "llamacpp", "--max-tokens", "16",
                  "--temperature", "0", check=True)
    assert out.stdout.rstrip("\n") == "def main(" + torch_m.generate("def main(", max_tokens=16, temperature=0)
