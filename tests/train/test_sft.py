"""Instruction tuning end to end: `init_from` a Llama directory transformers saved (with a foreign ChatML
template), chat data whose loss falls on the assistant's tokens only, and the shipped `sft-chat` recipe via the
CLI on the embedded python-stdlib-instruct corpus.

The planted chat data: every user message is random garbage (letters drawn afresh per record, so nothing can
predict them) and every assistant answer is the same short function. A loss taken over user tokens could not
fall much below the garbage's entropy (several nats per token); a loss on assistant tokens only falls towards 0."""

import json
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import require, run_cli, tiny_recipe

from lmforge.data.chat import render_chat
from lmforge.data.dataset import Dataset
from lmforge.data.loader import IGNORE_INDEX
from lmforge.model.hf import load_pretrained, read_lineage
from lmforge.model.tokenizer import Tokenizer
from lmforge.train.recipe import load_recipe, parse_recipe
from lmforge.train.trainer import train

transformers = require("transformers")

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ANSWER = "def answer():\n    return 42\n"
SEQ = 64


def garbage(rng: random.Random) -> str:
    return " ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 7)))
                    for _ in range(rng.randint(4, 10)))


@pytest.fixture(scope="module")
def chat_dataset(tmp_path_factory):
    from lmforge.data.ingest import ingest

    root = tmp_path_factory.mktemp("chat")
    rng = random.Random(0)
    rows = [{"id": f"r{i}", "messages": [{"role": "user", "content": garbage(rng)},
                                         {"role": "assistant", "content": ANSWER}]} for i in range(240)]
    (root / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest([root / "chat.jsonl"], root / "ds", val_fraction=0.2, progress=False)
    return root / "ds"


@pytest.fixture(scope="module")
def init_dir(small_tokenizer, tmp_path_factory):
    """A tiny LlamaForCausalLM and a ChatML tokenizer (the small BPE plus ChatML's tokens), both written by
    transformers' save_pretrained: what a Hub download looks like on disk."""
    from tokenizers import Tokenizer as Backend

    root = tmp_path_factory.mktemp("init")
    raw = root / "raw"
    raw.mkdir()
    backend = Backend.from_file(str(small_tokenizer / "tokenizer.json"))
    backend.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    backend.save(str(raw / "tokenizer.json"))
    (raw / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "chat_template": CHATML, "eos_token": "<|im_end|>",
        "bos_token": "<|bos|>", "pad_token": "<|pad|>"}))
    out = root / "llama"
    hf_tok = transformers.AutoTokenizer.from_pretrained(raw)
    hf_tok.save_pretrained(out)
    config = transformers.LlamaConfig(
        vocab_size=backend.get_vocab_size(), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ, tie_word_embeddings=False,
        bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id, pad_token_id=hf_tok.pad_token_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(out)
    return out


def sft_recipe(dataset, init, **train_kw) -> dict:
    raw = tiny_recipe(dataset, "unused", max_steps=60, lr=1e-2, log_interval=1, eval_interval=100,
                      final_eval_tokens=2048, **train_kw)
    del raw["tokenizer"], raw["model"]
    return {**raw, "init_from": str(init)}


@pytest.fixture(scope="module")
def sft_run(chat_dataset, init_dir, tmp_path_factory):
    recipe = parse_recipe(sft_recipe(chat_dataset, init_dir))
    out = tmp_path_factory.mktemp("runs") / "sft"
    return recipe, out, train(recipe, out, progress=False)


def metrics(out) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_init_from_starts_from_those_weights(sft_run, init_dir):
    """The run's step-0 loss is the loss transformers computes with the saved weights on the same batch."""
    from lmforge.train.prepare import prepare
    from lmforge.train.setup import build_data

    recipe, out, _ = sft_run
    train_data, _ = build_data(recipe, prepare(recipe, progress=False))
    x, y = train_data.batch(recipe.seed, 0, recipe.train.micro_batch_size)
    hf = transformers.LlamaForCausalLM.from_pretrained(init_dir).eval()
    with torch.no_grad():
        theirs = F.cross_entropy(hf(x).logits.flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX).item()
    first = metrics(out)[0]
    assert first["step"] == 1
    assert first["loss"] == pytest.approx(theirs, abs=1e-4)


def test_init_from_trains_exports_and_names_its_origin(sft_run, init_dir):
    recipe, out, result = sft_run
    losses = [r["loss"] for r in metrics(out) if "loss" in r]
    # Only assistant tokens count, and they are always the same answer: the loss falls towards zero although
    # three quarters of the tokens are unpredictable garbage.
    assert losses[0] > 4.0 and min(losses[-5:]) < 0.3, (losses[0], losses[-5:])
    assert result["validation"]["loss"] < 0.3
    model_dir = result["model"]
    theirs = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ours, tok = load_pretrained(model_dir)
    hf_tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    assert hf_tok.chat_template == CHATML  # the init_from directory's template travels with the model
    ids = torch.tensor([hf_tok.apply_chat_template([{"role": "user", "content": "qq zz"}],
                                                   add_generation_prompt=True, tokenize=True, return_dict=True
                                                   )["input_ids"]])
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max().item() <= 1e-4
    # and it learned the answer: greedy decoding after any request writes the planted function
    with torch.no_grad():
        gen = theirs.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=hf_tok.eos_token_id)
    assert hf_tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).startswith(ANSWER.rstrip())
    lineage = read_lineage(model_dir)
    assert lineage["init_from"] == str(init_dir) and lineage["tokenizer"]["path"] == str(init_dir)
    start = transformers.LlamaForCausalLM.from_pretrained(init_dir).state_dict()
    assert not any(torch.equal(p, start[name]) for name, p in theirs.state_dict().items() if p.dim() == 2)


def test_targets_are_masked_exactly_where_render_chat_says(sft_run):
    """The trainer's batches (setup's data) take loss on exactly the tokens render_chat marks as the assistant's,
    and render_chat's mask is transformers' assistant mask."""
    from lmforge.train.prepare import prepare
    from lmforge.train.setup import build_data

    recipe, _, _ = sft_run
    prep = prepare(recipe, progress=False)
    tok = prep.tokenizer
    assert not tok.has_lmforge_chat  # the ChatML template of init_from, not lmforge's
    ids, mask = [], []
    for rec in Dataset(recipe.data.path).records("train"):
        i, m = render_chat(tok, rec["messages"])
        ids += [*i, tok.eos_id]
        mask += [*m, False]
    assert list(prep.train_tokens) == ids and [bool(v) for v in prep.sources[0].train_mask] == mask
    hf_tok = transformers.AutoTokenizer.from_pretrained(recipe.init_from)
    for rec in list(Dataset(recipe.data.path).records("train"))[:5]:
        out = hf_tok.apply_chat_template(rec["messages"], tokenize=True, return_dict=True,
                                         return_assistant_tokens_mask=True)
        assert render_chat(tok, rec["messages"]) == (list(out["input_ids"]), [bool(v) for v in out["assistant_masks"]])
        written = tok.decode([t for t, m in zip(*render_chat(tok, rec["messages"])) if m], skip_special_tokens=False)
        assert written == ANSWER + "<|im_end|>"

    train_data, _ = build_data(recipe, prep)
    b = recipe.train.micro_batch_size
    kept = 0
    for draw in range(5):
        x, y = train_data.batch(recipe.seed, draw, b)
        for row, s in enumerate(train_data.starts(recipe.seed, draw, b)):
            assert x[row].tolist() == ids[s: s + SEQ]
            want = [t if m else IGNORE_INDEX for t, m in zip(ids[s + 1: s + SEQ + 1], mask[s + 1: s + SEQ + 1])]
            assert y[row].tolist() == want
            kept += sum(mask[s + 1: s + SEQ + 1])
    share = kept / (5 * b * SEQ)
    assert 0.05 < share < 0.5, share  # some targets, and far from all of them


def test_shipped_sft_chat_recipe_runs_on_the_instruct_corpus(tmp_path):
    recipe = load_recipe("sft-chat")
    assert recipe.data.corpus == "python-stdlib-instruct" and recipe.init_from is None
    assert recipe.train.seq_len <= recipe.model.max_position_embeddings
    tiny = ["model.hidden_size=32", "model.intermediate_size=64", "model.num_hidden_layers=1",
            "model.num_attention_heads=2", "model.num_key_value_heads=1", "model.max_position_embeddings=64",
            "train.seq_len=64", "train.micro_batch_size=2", "train.grad_accum=1", "train.warmup_steps=1",
            "train.compile=false", "train.precision=fp32", "train.eval_tokens=512",
            "train.final_eval_tokens=1024", "train.log_interval=1", "tokenizer.vocab_size=1024"]
    proc = run_cli("train", "sft-chat", "--max-steps", "3", "--out", tmp_path / "run",
                   *[a for kv in tiny for a in ("--set", kv)], check=True)
    assert "done" in proc.stdout and "3 steps" in proc.stdout
    rows = metrics(tmp_path / "run")
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    lineage = read_lineage(tmp_path / "run" / "model")
    assert [s["name"] for s in lineage["sources"]] == ["python-stdlib-instruct"]
    assert lineage["recipe"]["train"]["max_steps"] == 3 and lineage["recipe"]["train"]["optimizer"] == "muon"
    tok = Tokenizer.from_dir(tmp_path / "run" / "model")
    assert tok.has_lmforge_chat  # a from-scratch chat model speaks lmforge's template
    assert "python-stdlib-instruct" in run_cli("data", "ingest", "--help", check=True).stdout
