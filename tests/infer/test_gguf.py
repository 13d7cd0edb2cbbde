"""GGUF export against its consumers: llama-cpp-python (tokenization equal to the Hugging Face tokenizer, logits
and greedy tokens equal to lmforge's), GPT4All's own bindings, an Ollama Modelfile; and the llama.cpp backend
behind lmforge.load / generate / chat / embed."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import require, run_cli

from lmforge.infer.engine import prompt_ids
from lmforge.infer.local import load

require("gguf")
require("llama_cpp")

TRICKY = ["12345 3.14 1e-9 0x1F", "don't we'll they're I'M", "line one\r\nline two\r\n", "\tindented\t\ttabs",
          "non\u00a0breaking\u00a0spaces", "emoji \U0001F600\U0001F680 ok", "\u4e2d\u6587\u5b57 \u65e5\u672c\u8a9e",
          "   leading spaces", "def f(x):\n    return x ** 2  # comment\n", "ü é ß — “quotes”"]


@pytest.fixture(scope="module")
def model_dir(trained_model, tmp_path_factory):
    """A copy of the trained model, since exports write their perplexity change into its lmforge.json."""
    out = tmp_path_factory.mktemp("gguf") / "coder" / "model"
    shutil.copytree(trained_model, out)
    return out


@pytest.fixture(scope="module")
def files(model_dir):
    out = {}
    for qtype in ("f16", "q8_0", "q4_0"):
        file = model_dir.parent / f"coder-{qtype}.gguf"
        run_cli("export", model_dir, "--type", qtype, "-o", file, check=True)
        out[qtype] = file
    return out


@pytest.fixture(scope="module")
def validation_ids(model_dir):
    from lmforge.data.dataset import Dataset, record_text

    lineage = json.loads((model_dir / "lmforge.json").read_text())
    tok = load(model_dir).tokenizer
    ids = []
    for record in Dataset(lineage["dataset"]["path"]).records("validation"):
        ids.append(prompt_ids(tok, record_text(record))[:200])
        if len(ids) == 4:
            return ids


def _llama(file, **kw):
    from lmforge.infer.llamacpp import _llama

    return _llama(file, 256, **kw)


def test_llama_cpp_tokenizes_exactly_as_hugging_face(files, model_dir):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast.from_pretrained(model_dir)
    llm = _llama(files["f16"], vocab_only=True)
    for text in TRICKY:
        assert llm.tokenize(text.encode(), add_bos=True, special=False) == hf(text)["input_ids"], text
        assert llm.detokenize(hf(text, add_special_tokens=False)["input_ids"]).decode() == text


@pytest.mark.parametrize("qtype,agreement", [("f16", 0.99), ("q8_0", 0.97), ("q4_0", 0.85)])
def test_logits_agree_with_lmforge_on_validation_text(files, model_dir, validation_ids, qtype, agreement):
    """Teacher-forced next-token argmax over validation text: f16 >= 99% (measured 100%), q8_0 100%, q4_0 ~95%."""
    m = load(model_dir)
    llm = _llama(files[qtype], logits_all=True)
    same = total = 0
    for ids in validation_ids:
        with torch.no_grad():
            ours = m.model(torch.tensor([ids]))[0].argmax(-1).numpy()                # (T,)
        llm.reset()
        llm.eval(ids)
        theirs = np.array(llm.scores[: len(ids)]).argmax(-1)                         # (T,)
        same += int((ours == theirs).sum())
        total += len(ids)
    assert total > 300 and same / total >= agreement


def test_quantized_exports_record_their_perplexity_change(files, model_dir):
    exports = {e["type"]: e for e in json.loads((model_dir / "lmforge.json").read_text())["exports"]}
    assert set(exports) == {"f16", "q8_0", "q4_0"}
    for qtype, bound in (("f16", 0.001), ("q8_0", 0.01), ("q4_0", 0.10)):
        p = exports[qtype]["perplexity"]
        assert p["measured_on"] == "validation split" and p["tokens"] > 500
        assert abs(p["change"]) < bound and p["change"] == pytest.approx(p["ppl"] / p["ppl_fp32"] - 1)
        assert exports[qtype]["file"] == str(files[qtype].resolve())


def test_the_llamacpp_backend_matches_the_torch_backend(files, model_dir):
    torch_m, cpp = load(model_dir), load(files["f16"])
    assert type(cpp).__name__ == "LlamaCppModel" and cpp.context_length == 256
    for prompt in ("def main(", "import os\n", "class A:\n    "):
        expected = torch_m.generate(prompt, max_tokens=16, temperature=0)
        assert cpp.generate(prompt, max_tokens=16, temperature=0) == expected
        assert "".join(cpp.stream(prompt, max_tokens=16, temperature=0)) == expected
    messages = [{"role": "system", "content": "Python."}, {"role": "user", "content": "a loop"}]
    assert cpp.chat(messages, max_tokens=12, temperature=0) == torch_m.chat(messages, max_tokens=12, temperature=0)
    texts = ["import sys", "def add(a, b):\n    return a + b"]
    cos = (cpp.embed(texts) * torch_m.embed(texts)).sum(-1)
    assert cos.min() > 0.99
    # the same GGUF through --backend llamacpp on the command line
    out = run_cli("generate", files["f16"], "def main(", "--max-tokens", "16", "--temperature", "0", check=True)
    assert out.stdout.rstrip("\n") == "def main(" + torch_m.generate("def main(", max_tokens=16, temperature=0)


def test_gpt4all_loads_the_file_offline_and_generates(files):
    require("gpt4all")
    code = ("from gpt4all import GPT4All; import sys; "
            "m = GPT4All(model_name=sys.argv[1], model_path=sys.argv[2], allow_download=False, device='cpu'); "
            "print(repr(m.generate('def main(', max_tokens=8, temp=0)))")
    file = files["q8_0"]
    proc = subprocess.run([sys.executable, "-c", code, file.name, str(file.parent)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(eval(proc.stdout.strip().splitlines()[-1])) > 0


def test_ollama_folder(model_dir, tmp_path):
    out = tmp_path / "ollama"
    run_cli("export", model_dir, "--format", "ollama", "--type", "q8_0", "-o", out, "--no-measure", check=True)
    modelfile = (out / "Modelfile").read_text()
    [from_line] = [line for line in modelfile.splitlines() if line.startswith("FROM ")]
    assert (out / from_line[5:]).is_file()
    assert 'TEMPLATE """' in modelfile and '.Messages' in modelfile
    assert 'PARAMETER stop "<|end|>"' in modelfile
    assert _llama(out / from_line[5:], vocab_only=True).metadata["general.file_type"] == "7"  # q8_0


def test_bad_export_requests_are_one_line_and_leave_nothing(model_dir, tmp_path):
    cases = [
        (("export", tmp_path / "missing", "-o", tmp_path / "a.gguf"), "no such model"),
        (("export", model_dir, "--type", "q3_k", "-o", tmp_path / "b.gguf"), "unknown GGUF type 'q3_k'"),
        (("export", model_dir, "-o", tmp_path / "nodir" / "c.gguf"), "the output's folder does not exist"),
        (("export", model_dir, "--format", "onnx", "-o", tmp_path / "d"), "unknown format 'onnx'"),
    ]
    for args, message in cases:
        proc = run_cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (args, proc.stderr)
    assert list(tmp_path.iterdir()) == []
