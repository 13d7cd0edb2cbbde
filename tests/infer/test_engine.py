"""Generation: sampling against closed-form expectations, seeds, and token healing."""

import torch

from lmforge.infer.engine import generate_ids, generate_text, heal_prompt, sample
from lmforge.model.config import ModelConfig
from lmforge.model.tokenizer import Tokenizer
from lmforge.model.transformer import Transformer


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
    first = next(generate_ids(model, ids, max_tokens=1, temperature=0, first_token_mask=mask))
    assert tok.token_bytes[first].startswith(b"\n")
    assert generate_text(model, tok, prompt, max_tokens=1, temperature=0) == tok.token_bytes[first][1:].decode()
    # special tokens are never healed
    assert heal_prompt(tok, full + [tok.eos_id])[1] == b""
