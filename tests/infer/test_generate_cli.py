"""`lmforge generate --top-k` and `--repetition-penalty` through the real CLI, on planted models whose next-token
logits are the same fixed vector whatever the context (attention and MLP outputs are zero; the embedding is
one-hot and the output head holds the vector). What sampling and the penalty must do is then closed form, and
transformers' own generate on the same directory is a second oracle."""

from __future__ import annotations

import math
import sysconfig
from pathlib import Path

import pytest
import torch

from conftest import require, run_cli

pytestmark = pytest.mark.slow   # each CLI call starts a Python with torch (~2 s)
STDLIB = Path(sysconfig.get_paths()["stdlib"])
A, B, C, D = "q", "x", "z", "k"   # single-byte tokens: each generated character is one token
PROMPT = "x=1"                 # holds B, so the penalty applies to B from the first step


@pytest.fixture(scope="module")
def tokenizer():
    from lmforge.model.tokenizer import Tokenizer

    tok = Tokenizer.train([p.read_text(encoding="utf-8") for p in sorted((STDLIB / "json").glob("*.py"))], 300,
                          show_progress=False)
    ids = tok.encode(PROMPT)
    a, b, c, d = (tok.backend.token_to_id(t) for t in (A, B, C, D))
    assert b in ids and not {a, c, d} & set(ids), "precondition: the prompt holds B and not A, C or D"
    return tok


def planted_model(tokenizer, out: Path, logits: dict[str, float], rest: float = 0.0) -> Path:
    """A model directory whose next-token logits are always `logits` (by token text; `rest` elsewhere,
    special tokens -20)."""
    from lmforge.model.config import ModelConfig
    from lmforge.model.hf import save_pretrained
    from lmforge.model.transformer import Transformer

    v = tokenizer.vocab_size
    cfg = ModelConfig(vocab_size=v, hidden_size=v, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False,
                      bos_token_id=tokenizer.bos_id, eos_token_id=tokenizer.eos_id, pad_token_id=tokenizer.pad_id)
    target = torch.full((v,), rest)                                         # [V]
    for text, value in logits.items():
        target[tokenizer.backend.token_to_id(text)] = value
    for special in (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id):
        target[special] = -20.0
    model = Transformer(cfg)
    with torch.no_grad():
        for block in model.layers:          # blocks add nothing to the residual stream
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
        # embedding sqrt(H) * one-hot: RMSNorm leaves it as is, so logits = lm_head[:, token] * sqrt(H)
        model.embed_tokens.weight.copy_(torch.eye(v) * math.sqrt(v))        # [V, H=V]
        model.norm.weight.fill_(1.0)
        model.lm_head.weight.copy_(target[:, None].expand(v, v) / math.sqrt(v))   # every column is the vector
        ids = torch.tensor([tokenizer.encode("def f(x):\n    return x")])
        got = model(ids)[0]                                                  # [T, V]
    assert torch.allclose(got, target.expand_as(got), atol=1e-3), "precondition: context-free logits"
    return save_pretrained(model, out, tokenizer=tokenizer)


def generate(model: Path, *args) -> str:
    proc = run_cli("generate", model, PROMPT, "--no-heal", *args, check=True)
    assert proc.stdout.startswith(PROMPT) and proc.stdout.endswith("\n"), proc.stdout
    return proc.stdout[len(PROMPT):-1]


# --- repetition penalty ------------------------------------------------------------------------------------

PENALTY_LOGITS = {A: 5.0, B: 4.6, C: 3.5, D: 2.0}


@pytest.fixture(scope="module")
def penalty_model(tokenizer, tmp_path_factory):
    return planted_model(tokenizer, tmp_path_factory.mktemp("gen") / "penalty", PENALTY_LOGITS)


@pytest.fixture(scope="module")
def penalised(penalty_model):
    """The CLI's greedy continuation (8 tokens) for each penalty."""
    return {p: generate(penalty_model, "--temperature", "0", "--max-tokens", "8", "--repetition-penalty", p)
            for p in (1.0, 1.3, 2.0, 4.0)}


def closed_form(penalty: float, steps: int) -> str:
    """Greedy with CTRL's penalty over fixed logits: a seen token's positive logit is divided by `penalty`."""
    seen, out = {B}, ""
    for _ in range(steps):
        scores = {t: (v / penalty if t in seen else v) for t, v in PENALTY_LOGITS.items()}
        token = max(scores, key=scores.get)
        seen.add(token)
        out += token
    return out


def test_repetition_penalty_closed_form(penalised):
    # B is in the prompt. 1.3: A 5 -> A, then A 3.85 beats B 3.54 and C 3.5 for good.
    # 2: A 5 -> A; A 2.5 < C 3.5 -> C; A 2.5 > B 2.3 > D 2 > C 1.75 -> A from then on.
    # 4: A -> C (3.5 > A 1.25) -> D (2 > A 1.25) -> A (1.25 > B 1.15 > C 0.875 > D 0.5).
    expected = {1.0: A * 8, 1.3: A * 8, 2.0: A + C + A * 6, 4.0: A + C + D + A * 5}
    assert {p: closed_form(p, 8) for p in expected} == expected     # the oracle agrees with the hand derivation
    assert penalised == expected


@pytest.mark.interop
def test_repetition_penalty_matches_transformers(penalty_model, penalised, tokenizer):
    transformers = require("transformers")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(penalty_model)
    ids = torch.tensor([tokenizer.encode(PROMPT)])
    for penalty in (2.0, 4.0):
        out = theirs.generate(ids, max_new_tokens=8, do_sample=False, repetition_penalty=penalty,
                              pad_token_id=tokenizer.pad_id)[0, ids.shape[1]:]
        assert penalised[penalty] == tokenizer.decode(out.tolist()), penalty


# --- top-k -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def flat_model(tokenizer, tmp_path_factory):
    # A, B, C barely ahead of every other token: at temperature 5 the full distribution is nearly uniform
    return planted_model(tokenizer, tmp_path_factory.mktemp("gen") / "flat", {A: 1.0, B: 0.9, C: 0.8})


def test_top_k_1_is_greedy_at_any_temperature(flat_model):
    greedy = generate(flat_model, "--temperature", "0", "--max-tokens", "12")
    assert greedy == A * 12
    for seed in (0, 1):
        assert generate(flat_model, "--temperature", "5", "--top-k", "1", "--top-p", "1", "--seed", seed,
                        "--max-tokens", "12") == greedy


def test_top_k_samples_only_among_the_k_likeliest(flat_model):
    got = generate(flat_model, "--temperature", "5", "--top-k", "3", "--top-p", "1", "--seed", "0",
                   "--max-tokens", "60")
    # each of A, B, C has probability ~1/3; missing one in 60 draws has probability ~3 * (2/3)^60 < 1e-10
    assert set(got) == {A, B, C}, got
    # without --top-k the same sampling reaches the other ~290 tokens (all-A/B/C has probability ~(3/300)^60)
    unrestricted = generate(flat_model, "--temperature", "5", "--top-p", "1", "--seed", "0", "--max-tokens", "60")
    assert set(unrestricted) - {A, B, C}, unrestricted
