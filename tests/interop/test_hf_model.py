"""Interchange with Hugging Face transformers, checked against transformers itself."""

import json

import pytest
import torch
from conftest import require

pytestmark = pytest.mark.interop
transformers = require("transformers")

from lmforge.infer.engine import generate_ids  # noqa: E402
from lmforge.model.config import ModelConfig  # noqa: E402
from lmforge.model.hf import load_model, load_pretrained, save_pretrained  # noqa: E402
from lmforge.model.transformer import Transformer  # noqa: E402

CONFIGS = [
    dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True, rope_theta=1e4),
    dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False, rope_theta=1e4),
    dict(hidden_size=96, num_attention_heads=6, num_key_value_heads=1, tie_word_embeddings=True, rope_theta=5e5),
    dict(hidden_size=128, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False, rope_theta=2e3,
         num_hidden_layers=3, intermediate_size=200, vocab_size=1000),
]
IDS = ["mha-tied", "gqa-untied", "mqa-theta5e5", "gqa-wide-untied"]


def _cfg(kw):
    base = dict(vocab_size=320, intermediate_size=112, num_hidden_layers=2, max_position_embeddings=128)
    return {**base, **kw}


@pytest.mark.parametrize("kw", CONFIGS, ids=IDS)
def test_lmforge_model_loads_in_transformers(kw, tmp_path):
    model = Transformer(ModelConfig(**_cfg(kw)))
    model.reset_parameters(seed=1)
    save_pretrained(model, tmp_path / "m")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m", attn_implementation="eager").eval()
    x = torch.randint(0, model.config.vocab_size, (2, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model.eval()(x) - hf(x).logits).abs().max().item()
    assert diff <= 1e-4


@pytest.mark.parametrize("kw", CONFIGS, ids=IDS)
def test_transformers_model_loads_in_lmforge(kw, tmp_path):
    torch.manual_seed(2)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**_cfg(kw))).eval()
    hf.save_pretrained(tmp_path / "h")
    model = load_model(tmp_path / "h")
    x = torch.randint(0, model.config.vocab_size, (2, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (model(x) - hf(x).logits).abs().max().item()
    assert diff <= 1e-4


def test_config_maps_one_to_one(tmp_path):
    cfg = ModelConfig(**_cfg(CONFIGS[1]))
    save_pretrained(Transformer(cfg), tmp_path / "m")
    hf_cfg = transformers.AutoConfig.from_pretrained(tmp_path / "m")
    for key, value in cfg.model_dump().items():
        if key == "rope_theta":
            got = getattr(hf_cfg, "rope_theta", None) or hf_cfg.rope_parameters["rope_theta"]
        else:
            got = getattr(hf_cfg, key)
        assert got == value, key
    assert ModelConfig.from_hf(json.loads((tmp_path / "m" / "config.json").read_text())) == cfg


@pytest.mark.parametrize("penalty", [1.0, 1.3])
def test_greedy_generation_matches_transformers_generate(tmp_path, penalty):
    """Our KV-cached decoding (with or without a repetition penalty) picks the same tokens as
    transformers' own cached generate()."""
    torch.manual_seed(3)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**_cfg(CONFIGS[1]))).eval()
    hf.save_pretrained(tmp_path / "h")
    model = load_model(tmp_path / "h")
    prompt = [5, 17, 42, 9, 100]
    ours = list(generate_ids(model, prompt, max_tokens=30, temperature=0, repetition_penalty=penalty))
    theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=30, do_sample=False, min_new_tokens=30,
                         pad_token_id=0, repetition_penalty=penalty)[0, len(prompt):].tolist()
    assert ours == theirs


def test_tokenizer_loads_in_autotokenizer(small_tokenizer):
    from lmforge.model.tokenizer import Tokenizer

    ours = Tokenizer.from_dir(small_tokenizer)
    theirs = transformers.AutoTokenizer.from_pretrained(small_tokenizer)
    text = "def f(x):\n    return x ** 2  # ünïcödé ✓\n"
    assert theirs.encode(text, add_special_tokens=False) == ours.encode(text)
    assert theirs.decode(ours.encode(text)) == text
    assert theirs.bos_token == "<|bos|>" and theirs.eos_token_id == ours.eos_id
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert theirs.apply_chat_template(chat, tokenize=False) == ours.apply_chat_template(
        chat, add_generation_prompt=False)


def test_directory_written_by_transformers_runs_in_lmforge_generate(tmp_path, small_tokenizer):
    """A model + tokenizer saved by transformers' save_pretrained works with `lmforge generate`."""
    from conftest import run_cli

    from lmforge.model.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(small_tokenizer)
    torch.manual_seed(4)
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(**_cfg({**CONFIGS[0], "vocab_size": tok.vocab_size})))
    hf.save_pretrained(tmp_path / "h")
    transformers.AutoTokenizer.from_pretrained(small_tokenizer).save_pretrained(tmp_path / "h")
    prompt = "import json\n"
    model, tokenizer = load_pretrained(tmp_path / "h")
    ids = tokenizer.encode(prompt, bos=True)
    expected = hf.generate(torch.tensor([ids]), max_new_tokens=12, min_new_tokens=12, do_sample=False,
                           pad_token_id=0)[0, len(ids):].tolist()
    proc = run_cli("generate", tmp_path / "h", prompt, "--max-tokens", 12, "--temperature", 0, "--no-heal",
                   check=True)
    assert proc.stdout == prompt + tokenizer.decode(expected) + "\n"


def test_chat_ids_match_transformers_chat_template(small_tokenizer):
    from lmforge.model.tokenizer import Tokenizer

    ours = Tokenizer.from_dir(small_tokenizer)
    theirs = transformers.AutoTokenizer.from_pretrained(small_tokenizer)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Sort a list?"},
            {"role": "assistant", "content": "sorted(xs)"}]
    for gen in (False, True):
        expected = theirs.apply_chat_template(chat, tokenize=True, add_generation_prompt=gen)
        if isinstance(expected, dict) or hasattr(expected, "input_ids"):  # transformers >= 5 returns a BatchEncoding
            expected = expected["input_ids"]
        assert ours.encode_chat(chat, add_generation_prompt=gen) == list(expected)
