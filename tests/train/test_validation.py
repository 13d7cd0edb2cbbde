"""Loss accounting against closed-form values: uniform model -> ln V nats/token; bits per byte from the
true UTF-8 byte count; unigram baseline equals the empirical entropy computed independently."""

import math
from collections import Counter

import numpy as np
import torch

from lmforge.data.loader import TokenWindows
from lmforge.model.config import ModelConfig
from lmforge.model.tokenizer import Tokenizer
from lmforge.model.transformer import Transformer
from lmforge.train.validation import byte_lengths, evaluate_loss, unigram_baseline


def test_uniform_model_loss_and_bits_per_byte(small_tokenizer):
    tok = Tokenizer.from_dir(small_tokenizer)
    text = "def add(a, b):\n    return a + b\n" * 40 + "naïve café ✓\n" * 10
    ids = np.array(tok.encode(text, bos=True), dtype=np.uint16)
    model = Transformer(ModelConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32))
    with torch.no_grad():
        model.lm_head.weight.zero_()  # all logits 0: every token has probability 1/V
    windows = TokenWindows(ids, 32)
    got = evaluate_loss(model, windows, byte_lengths(tok))
    n_windows = (len(ids) - 1) // 32
    targets = ids[1:n_windows * 32 + 1]
    true_bytes = len(tok.decode(targets.tolist()).encode("utf-8"))
    assert got["tokens"] == len(targets) and got["bytes"] == true_bytes
    assert math.isclose(got["loss"], math.log(tok.vocab_size), rel_tol=1e-5)
    assert math.isclose(got["bpb"], len(targets) * math.log2(tok.vocab_size) / true_bytes, rel_tol=1e-5)


def test_unigram_baseline_is_empirical_entropy():
    rng = np.random.default_rng(0)
    tokens = rng.choice(5, size=1000, p=[0.5, 0.2, 0.2, 0.05, 0.05])
    lengths = np.array([1, 2, 3, 4, 0])
    counts = Counter(tokens.tolist())
    entropy = -sum(c / 1000 * math.log(c / 1000) for c in counts.values())
    n_bytes = sum(lengths[t] * c for t, c in counts.items())
    got = unigram_baseline(tokens, lengths, 5)
    assert math.isclose(got["loss"], entropy, rel_tol=1e-9)
    assert math.isclose(got["bpb"], entropy * 1000 / math.log(2) / n_bytes, rel_tol=1e-9)
