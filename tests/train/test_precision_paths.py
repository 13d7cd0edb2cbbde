"""The shipped recipe's defaults, `compile: true` and `precision: auto`: both precision paths forced through a
compiled tiny run (each learns past the unigram baseline), and `auto` resolved as the CPU's own flags say."""

import json
import warnings

import pytest
import torch
from conftest import tiny_recipe

from lmforge.recipes import recipe_path
from lmforge.train.precision import autocast, resolve_precision
from lmforge.train.recipe import load_recipe, parse_recipe
from lmforge.train.trainer import train


def cpu_flags() -> set[str]:
    """Every flag on the `flags` lines of /proc/cpuinfo (read here, not through lmforge)."""
    flags = set()
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "flags":
                flags |= set(value.split())
    return flags


def native_bf16() -> bool:
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def test_shipped_recipe_defaults_are_compile_and_auto():
    spec = load_recipe(recipe_path("tiny-code-stdlib")).train
    assert spec.compile is True and spec.precision == "auto"


def test_auto_resolves_to_what_the_cpu_supports():
    want = "bf16" if native_bf16() else "fp32"
    assert resolve_precision("auto") == want
    peer = getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None)
    if all(peer):  # torch's own cpuinfo probe agrees with the flags
        assert (peer[0]() or peer[1]()) == (want == "bf16")
    assert resolve_precision("bf16") == "bf16" and resolve_precision("fp32") == "fp32"  # forced: as given


def test_auto_is_what_a_run_uses(small_dataset, small_tokenizer, tmp_path):
    raw = tiny_recipe(small_dataset, small_tokenizer, max_steps=1, precision="auto", final_eval_tokens=1024)
    result = train(parse_recipe(raw), tmp_path / "auto", progress=False)
    assert result["precision"] == ("bf16" if native_bf16() else "fp32")


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_autocast_sets_the_models_compute_dtype(precision, dtype):
    from lmforge.model.config import ModelConfig
    from lmforge.model.transformer import Transformer

    model = Transformer(ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                    num_attention_heads=2, max_position_embeddings=16))
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))  # (B, T)
    from lmforge.train.loss import cross_entropy_sum

    with autocast(precision):
        logits = model(ids)  # (B, T, V)
        loss = cross_entropy_sum(logits, ids)
    assert logits.dtype == dtype and loss.dtype == torch.float32  # the loss is always taken in fp32


FINAL_EVAL_TOKENS = 8192


@pytest.fixture(scope="module")
def baseline(small_dataset, small_tokenizer):
    """Nats per token of the best context-free guess (unigram frequencies) on the validation tokens."""
    from lmforge.data.loader import TokenWindows
    from lmforge.data.pack import open_tokens, pack_split, tokenizer_hash
    from lmforge.model.tokenizer import Tokenizer
    from lmforge.train.prepare import resolve_dataset
    from lmforge.train.validation import byte_lengths, unigram_baseline

    recipe = parse_recipe(tiny_recipe(small_dataset, small_tokenizer))
    tok = Tokenizer.from_dir(small_tokenizer)
    val = open_tokens(pack_split(resolve_dataset(recipe.data), tok, "validation",
                                 tokenizer_hash=tokenizer_hash(recipe.tokenizer.path), progress=False))
    targets = TokenWindows(val, recipe.train.seq_len).targets(FINAL_EVAL_TOKENS)
    return unigram_baseline(targets, byte_lengths(tok), tok.vocab_size)["loss"]


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_compiled_run_learns(precision, small_dataset, small_tokenizer, tmp_path, baseline):
    """As the shipped recipe trains (compiled, Muon), with the precision forced. A cold compile makes each
    30-70 s on 2 busy cores (measured); a warm inductor cache, ~10 s."""
    raw = tiny_recipe(small_dataset, small_tokenizer, precision=precision, compile=True, optimizer="muon",
                      max_steps=40, lr=1e-2, warmup_steps=5, log_interval=1, eval_interval=10_000,
                      checkpoint_interval=10_000, final_eval_tokens=FINAL_EVAL_TOKENS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(parse_recipe(raw), tmp_path / precision, progress=False)
    fallbacks = [str(w.message) for w in caught if "eager mode" in str(w.message)]
    assert not fallbacks and result["compiled"], fallbacks  # the compiled model trained, not an eager fallback
    assert result["precision"] == precision
    start = json.loads((tmp_path / precision / "events.jsonl").read_text().splitlines()[0])
    assert start["precision"] == precision and start["compile"] is True
    rows = [json.loads(line) for line in (tmp_path / precision / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    # from chance (ln 512 = 6.24 nats) to well below the best context-free guess (5.2 here) in 40 steps
    assert losses[0] > baseline > result["validation"]["loss"] + 0.3, (losses[0], baseline, result["validation"])
