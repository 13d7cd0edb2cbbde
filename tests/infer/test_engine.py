"""Generation: sampling against closed-form expectations, seeds, token healing, and the prompt's BOS as the
tokenizer's own files say."""

import json
import shutil

import pytest
import torch
from planting import tokenizer_as_written_before_bos_rule
from tokenizers import Tokenizer as Backend

from lmforge.data.dataset import Dataset
from lmforge.data.ingest import ingest
from lmforge.data.pack import open_tokens, pack_split
from lmforge.errors import ModelError
from lmforge.infer.engine import generate_ids, heal_prompt
from lmforge.infer.local import LocalModel
from lmforge.infer.sampling import SamplingParams, pick
from lmforge.model.config import ModelConfig
from lmforge.model.tokenizer import Tokenizer
from lmforge.model.transformer import Transformer


def sample(logits, *, generator, **params):
    return pick(logits, SamplingParams(**{k: v for k, v in params.items() if v is not None}), generator)


def generate_text(model, tok, prompt, **sampling):
    return LocalModel(model, tok).generate(prompt, **sampling)


def test_greedy_is_argmax_of_uncached_forward():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=2, max_position_embeddings=64)).eval()
    ids = [1, 2, 3]
    got = list(generate_ids(model, ids, max_tokens=15, temperature=0))
    seq = list(ids)
    with torch.no_grad():
        for _ in range(15):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    assert got == seq[3:]


def test_top_p_keeps_smallest_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    g = torch.Generator().manual_seed(0)
    draws = {sample(logits, temperature=1.0, top_p=0.75, top_k=None, generator=g) for _ in range(400)}
    assert draws == {0, 1}  # 0.5 < 0.75 <= 0.8: tokens 0 and 1 only
    assert {sample(logits, temperature=1.0, top_p=0.1, top_k=None, generator=g) for _ in range(50)} == {0}
    assert {sample(logits, temperature=1.0, top_p=1.0, top_k=2, generator=g) for _ in range(400)} == {0, 1}


def test_sampling_frequencies_follow_temperature():
    logits = torch.tensor([0.0, 1.0])
    g = torch.Generator().manual_seed(1)
    n = 4000
    ones = sum(sample(logits, temperature=0.5, top_p=1.0, top_k=None, generator=g) for _ in range(n))
    expected = torch.softmax(logits / 0.5, 0)[1].item()  # e^2 / (1 + e^2) = 0.881
    assert abs(ones / n - expected) < 0.02


def test_seed_reproducible():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, max_position_embeddings=64)).eval()
    a = list(generate_ids(model, [1], max_tokens=20, temperature=1.0, seed=5))
    b = list(generate_ids(model, [1], max_tokens=20, temperature=1.0, seed=5))
    c = list(generate_ids(model, [1], max_tokens=20, temperature=1.0, seed=6))
    assert a == b and a != c


def test_token_healing_restarts_the_last_token(small_tokenizer):
    """A prompt ending in a bare newline: the newline token is dropped, the first new token must begin
    with it, and the returned text continues the prompt without repeating the newline."""
    tok = Tokenizer.from_dir(small_tokenizer)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=64)).eval()
    prompt = "def f(x):\n"
    full = tok.encode(prompt, bos=True)
    ids, drop, mask = heal_prompt(tok, full)
    assert drop == b"\n" and ids == full[:-1]
    allowed = mask.nonzero().flatten().tolist()
    assert len(allowed) > 1 and all(tok.token_bytes[i].startswith(b"\n") for i in allowed)
    assert sum(b.startswith(b"\n") for b in tok.token_bytes) == len(allowed)
    engine = LocalModel(model, tok).engine
    request = engine.submit(full, SamplingParams(max_tokens=1, temperature=0), heal=True)
    engine.run([request])
    first = request.tokens[0]
    assert tok.token_bytes[first].startswith(b"\n")
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, -1]
    assert first == int(logits.masked_fill(~mask, float("-inf")).argmax())  # the likeliest allowed token
    assert generate_text(model, tok, prompt, max_tokens=1, temperature=0) == tok.token_bytes[first][1:].decode()
    # special tokens are never healed
    assert heal_prompt(tok, full + [tok.eos_id])[1] == b""


def _without_bos(small_tokenizer, dst):
    """lmforge's tokenizer with GPT-2's post-processor (ByteLevel: adds no special token) and a config to match."""
    shutil.copytree(small_tokenizer, dst)
    for name, key, value in (("tokenizer.json", "post_processor", {"type": "ByteLevel", "add_prefix_space": False,
                                                                     "trim_offsets": False, "use_regex": True}),
                             ("tokenizer_config.json", "add_bos_token", False)):
        data = json.loads((dst / name).read_text())
        (dst / name).write_text(json.dumps({**data, key: value}))
    return dst


def _random_model(vocab_size):
    """Random weights large enough (and an untied head) that the whole prompt, BOS included, steers the text."""
    torch.manual_seed(0)
    return Transformer(ModelConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, max_position_embeddings=64, initializer_range=0.5,
                                   tie_word_embeddings=False)).eval()


def _greedy_text(model, tok, ids, n):
    return tok.decode(generate_ids(model, ids, max_tokens=n, temperature=0, stop_ids={tok.eos_id}))


@pytest.mark.parametrize("kind", ["bos", "written-before-bos-rule", "no-bos"])
def test_prompt_starts_as_the_tokenizer_files_say(small_tokenizer, tmp_path, kind):
    """The prompt gets BOS exactly where the files do (read by the `tokenizers` library itself), except older
    lmforge files, whose models were trained with BOS and keep it; generation continues those ids."""
    path = {"bos": small_tokenizer,
            "written-before-bos-rule": tokenizer_as_written_before_bos_rule(small_tokenizer, tmp_path / "old"),
            "no-bos": _without_bos(small_tokenizer, tmp_path / "nobos")}[kind]
    tok = Tokenizer.from_dir(path)
    peer = Backend.from_file(str(small_tokenizer / "tokenizer.json"))  # lmforge's own files: BOS first
    bos, plain = peer.token_to_id("<|bos|>"), peer.encode("import json\n", add_special_tokens=False).ids
    expected = plain if kind == "no-bos" else [bos, *plain]
    model = _random_model(tok.vocab_size)
    got = generate_text(model, tok, "import json\n", max_tokens=12, temperature=0, heal=False)
    assert got == _greedy_text(model, tok, expected, 12)
    other = plain if expected[0] == bos else [bos, *plain]
    assert got != _greedy_text(model, tok, other, 12)  # the BOS decision shows in the text


def test_training_documents_start_as_prompts_do(small_tokenizer, tmp_path):
    """The trainer's packing and generation share one BOS rule (Tokenizer.adds_bos): a packed document is the
    tokens a prompt of the same text gets, then EOS, for a tokenizer with BOS and for one without."""
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "x = 1\n"}) + "\n")
    ingest([tmp_path / "in.jsonl"], tmp_path / "ds", val_fraction=0.0, progress=False)
    for path, bos in ((small_tokenizer, True), (_without_bos(small_tokenizer, tmp_path / "nobos"), False)):
        tok = Tokenizer.from_dir(path)
        packed = open_tokens(pack_split(Dataset(tmp_path / "ds"), tok, "train", tokenizer_hash=str(path),
                                        progress=False)).tolist()
        assert packed == [tok.bos_id] * bos + tok.encode("x = 1\n") + [tok.eos_id]
        assert packed[:-1] == tok.encode("x = 1\n", add_special_tokens=True)


def test_empty_prompt_starts_from_bos_or_says_why(small_tokenizer, tmp_path):
    tok = Tokenizer.from_dir(_without_bos(small_tokenizer, tmp_path / "nobos"))
    model = _random_model(tok.vocab_size)
    assert generate_text(model, tok, "", max_tokens=5, temperature=0) == _greedy_text(model, tok, [tok.bos_id], 5)
    no_bos_token = Tokenizer(tok.backend, {**tok.config, "bos_token": None})
    with pytest.raises(ModelError, match="prompt is empty"):
        generate_text(model, no_bos_token, "", max_tokens=5)
