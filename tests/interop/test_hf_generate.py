"""A model directory generates in lmforge what it generates in transformers: the prompt is tokenized as the
model's own tokenizer files say (BOS or not), checked against `AutoTokenizer` + `generate()` as a user runs them.

The tokenizers here are byte-level BPEs trained by the `tokenizers` library and saved by transformers (or by
`tokenizers` alone), with special tokens lmforge does not use, so nothing leans on lmforge's own conventions.
"""

import json
import sysconfig
from pathlib import Path

import pytest
import torch
from conftest import require, run_cli

pytestmark = pytest.mark.interop
transformers = require("transformers")

import lmforge  # noqa: E402

PROMPT = "import json\n\n\ndef load(path):\n    with open(path) as f:\n"
N = 16

# case -> (BOS first, EOS last) in the ids transformers' tokenizer(PROMPT) gives: the planted truth of each file.
# transformers (5.x) reads only tokenizer.json's post-processor when there is one, never add_*_token flags.
CASES = {
    "template-bos": (True, False),             # tokenizer.json's TemplateProcessing adds <s>
    "saved-without-post-processor": (False, False),  # PreTrainedTokenizerFast saved a backend without one
    "null-post-processor": (False, False),     # tokenizer.json written by `tokenizers`, post_processor null
    "add_bos_token-false": (True, False),      # the <s> template, and tokenizer_config.json says add_bos_token: false
    "add_bos_token-true": (False, False),      # no post-processor, and tokenizer_config.json says add_bos_token: true
    "add_eos_token-true": (True, False),       # the <s> template, and add_eos_token: true
    "lmforge-written": (True, False),          # lmforge's own model and tokenizer writer
}


@pytest.fixture(scope="module")
def backend():
    """A byte-level BPE on real code, trained by `tokenizers` with <s> and </s> as its special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    files = sorted((Path(sysconfig.get_paths()["stdlib"]) / "json").glob("*.py"))
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([f.read_text() for f in files], trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok


def _with_post_processor(backend, bos: bool):
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_str(backend.to_str())
    tok.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
                                                       special_tokens=[("<s>", 0)]) if bos else None
    return tok


def _save_transformers_tokenizer(backend, bos: bool, out: Path, **config):
    transformers.PreTrainedTokenizerFast(tokenizer_object=_with_post_processor(backend, bos), bos_token="<s>",
                                         eos_token="</s>").save_pretrained(out)
    if config:  # flags the way transformers 4.x and many published models write them
        file = out / "tokenizer_config.json"
        file.write_text(json.dumps({**json.loads(file.read_text()), **config}))


def _save_plain_tokenizer(backend, out: Path, **config):
    _with_post_processor(backend, False).save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", **config}))


def _build(case: str, out: Path, backend, small_tokenizer) -> None:
    if case == "lmforge-written":
        from lmforge.model.config import ModelConfig
        from lmforge.model.hf import save_pretrained
        from lmforge.model.tokenizer import Tokenizer
        from lmforge.model.transformer import Transformer

        tok = Tokenizer.from_dir(small_tokenizer)
        model = Transformer(ModelConfig(vocab_size=tok.vocab_size, hidden_size=64, intermediate_size=112,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                        max_position_embeddings=128, initializer_range=0.3,
                                        tie_word_embeddings=False, bos_token_id=tok.bos_id,
                                        eos_token_id=tok.eos_id, pad_token_id=tok.pad_id))
        model.reset_parameters(seed=5)
        save_pretrained(model, out, tokenizer=tok)
        return
    torch.manual_seed(5)
    # initializer_range large enough that every prompt token, BOS included, steers the greedy text
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=backend.get_vocab_size(), hidden_size=64, intermediate_size=112, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.3,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    hf.save_pretrained(out)
    if case == "template-bos":
        _save_transformers_tokenizer(backend, True, out)
    elif case == "saved-without-post-processor":
        _save_transformers_tokenizer(backend, False, out)
    elif case == "null-post-processor":
        _save_plain_tokenizer(backend, out)
    elif case == "add_bos_token-false":
        _save_transformers_tokenizer(backend, True, out, add_bos_token=False)
    elif case == "add_bos_token-true":
        _save_plain_tokenizer(backend, out, add_bos_token=True)
    elif case == "add_eos_token-true":
        _save_transformers_tokenizer(backend, True, out, add_eos_token=True)


@pytest.fixture(scope="module", params=list(CASES))
def model_dir(request, backend, small_tokenizer, tmp_path_factory):
    """(case, directory, transformers' tokenizer, transformers' model) for each kind of tokenizer."""
    out = tmp_path_factory.mktemp(request.param)
    _build(request.param, out, backend, small_tokenizer)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    return request.param, out, tok, model


def _transformers_greedy(tok, model, **inputs) -> list[int]:
    """The new token ids of transformers' greedy generate() (the user's call: generate(**tok(prompt)))."""
    n = inputs["input_ids"].shape[1]
    with torch.no_grad():
        out = model.generate(**inputs, do_sample=False, max_new_tokens=N, pad_token_id=tok.eos_token_id)
    return out[0, n:].tolist()


def test_prompt_ids_are_what_the_tokenizer_files_say(model_dir):
    case, path, tok, _ = model_dir
    theirs = tok(PROMPT).input_ids
    bos, eos = CASES[case]
    assert (theirs[0] == tok.bos_token_id) == bos and (theirs[-1] == tok.eos_token_id) == eos  # the oracle itself
    ours = lmforge.load(path).tokenizer
    assert ours.encode(PROMPT, add_special_tokens=True) == theirs


def test_lmforge_generate_matches_transformers_generate(model_dir):
    """`lmforge generate --temperature 0 --no-heal` prints the prompt and what transformers' greedy generate()
    continues it with (healing off: transformers has no such step)."""
    case, path, tok, model = model_dir
    new = _transformers_greedy(tok, model, **tok(PROMPT, return_tensors="pt"))
    proc = run_cli("generate", path, PROMPT, "--temperature", 0, "--max-tokens", N, "--no-heal", check=True)
    assert proc.stdout == PROMPT + tok.decode(new, skip_special_tokens=True) + "\n"


def test_python_api_matches_transformers_generate(model_dir):
    case, path, tok, model = model_dir
    new = _transformers_greedy(tok, model, **tok(PROMPT, return_tensors="pt"))
    m = lmforge.load(path)
    expected = tok.decode(new, skip_special_tokens=True)
    assert m.generate(PROMPT, max_tokens=N, temperature=0, heal=False) == expected
    assert "".join(m.stream(PROMPT, max_tokens=N, temperature=0, heal=False)) == expected
    # in a batch beside prompts of other lengths, the same tokens
    assert m.generate(["x", PROMPT, PROMPT[:-9]], max_tokens=N, temperature=0, heal=False)[1] == expected


@pytest.mark.parametrize("case", ["template-bos", "null-post-processor", "lmforge-written"])
def test_token_healing_matches_transformers_with_the_first_token_constrained(case, backend, small_tokenizer,
                                                                            tmp_path):
    """With healing on (the default), lmforge's text is transformers' greedy generate() from the prompt's ids
    minus the last token, its first new token limited to those whose text starts with the dropped token's."""
    _build(case, tmp_path, backend, small_tokenizer)
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = tok(PROMPT).input_ids
    head, dropped = ids[:-1], tok.decode(ids[-1:])
    assert dropped.isascii() and PROMPT.endswith(dropped)  # so decoding a token's text is decoding its bytes
    allowed = [i for i in range(len(tok)) if i not in tok.all_special_ids and tok.decode([i]).startswith(dropped)]
    assert len(allowed) > 1
    everything = list(range(len(tok)))

    def first_healed(_, seq):  # transformers' hook: the ids allowed next, given the sequence so far
        return allowed if len(seq) == len(head) else everything

    new = _transformers_greedy(tok, model, input_ids=torch.tensor([head]), attention_mask=torch.ones(1, len(head)),
                               prefix_allowed_tokens_fn=first_healed)
    proc = run_cli("generate", tmp_path, PROMPT, "--temperature", 0, "--max-tokens", N, check=True)
    text = tok.decode(new, skip_special_tokens=True)
    assert text.startswith(dropped) and proc.stdout == PROMPT + text[len(dropped):] + "\n"


def test_lmforge_tokenizer_files_tell_transformers_about_bos(small_tokenizer):
    """A tokenizer as `lmforge tokenizer train` writes it: AutoTokenizer adds BOS as lmforge (and its trainer) do."""
    from lmforge.model.tokenizer import Tokenizer

    theirs = transformers.AutoTokenizer.from_pretrained(small_tokenizer)(PROMPT).input_ids
    ours = Tokenizer.from_dir(small_tokenizer)
    assert theirs[0] == ours.bos_id and ours.encode(PROMPT, add_special_tokens=True) == theirs
