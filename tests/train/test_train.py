"""Training end to end on a small real corpus: it learns (beats the unigram baseline), writes the run
directory it promises, resumes exactly, and its model loads in transformers."""

import json

import numpy as np
import pytest
import torch
from conftest import require, tiny_recipe

from lmforge.data.loader import TokenWindows
from lmforge.model.hf import load_pretrained
from lmforge.train.recipe import parse_recipe
from lmforge.train.trainer import train


@pytest.fixture(scope="module")
def trained(small_dataset, small_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    recipe = parse_recipe(tiny_recipe(small_dataset, small_tokenizer, max_steps=200, lr=1e-2, micro_batch_size=16))
    return recipe, out, train(recipe, out, progress=False)


def test_learns_far_below_unigram_baseline(trained):
    from lmforge.data.pack import open_mask, open_tokens, pack_split, tokenizer_hash
    from lmforge.train.prepare import resolve_dataset
    from lmforge.train.validation import byte_lengths, unigram_baseline

    recipe, out, result = trained
    model, tok = load_pretrained(result["model"])
    ds = resolve_dataset(recipe.data)
    shard = pack_split(ds, tok, "validation", tokenizer_hash=tokenizer_hash(recipe.tokenizer.path), progress=False)
    windows = TokenWindows(open_tokens(shard), recipe.train.seq_len, open_mask(shard))
    targets = windows.targets(recipe.train.final_eval_tokens)
    assert len(targets) == result["validation"]["tokens"]
    baseline = unigram_baseline(targets, byte_lengths(tok), tok.vocab_size)
    assert result["validation"]["loss"] < baseline["loss"] - 0.5


def test_run_directory_layout(trained):
    recipe, out, result = trained
    assert (out / "recipe.yaml").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in rows) and any("tokens_per_s" in r for r in rows)
    model_dir = out / "model"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "lmforge.json"):
        assert (model_dir / name).is_file(), name
    lineage = json.loads((model_dir / "lmforge.json").read_text())
    assert lineage["dataset"]["content_hash"] == json.loads(
        (recipe_path(recipe) / "dataset.json").read_text())["content_hash"]
    assert lineage["recipe"]["train"]["max_steps"] == 200
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    best = min((r["val_loss"], r["step"]) for r in rows if "val_loss" in r)[1]  # every eval step is a checkpoint
    assert ckpts == sorted({"step-0000190", "step-0000200", f"step-{best:07d}"})  # keep 2 + keep_best


def recipe_path(recipe):
    from pathlib import Path

    return Path(recipe.data.path)


@pytest.mark.interop
def test_trained_model_matches_transformers(trained):
    transformers = require("transformers")
    _, out, result = trained
    ours, tok = load_pretrained(result["model"])
    theirs = transformers.AutoModelForCausalLM.from_pretrained(result["model"])
    ids = torch.tensor([tok.encode("def main():\n    return 0\n", bos=True)])
    with torch.no_grad():
        assert (ours(ids) - theirs(ids).logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_is_exact(small_dataset, small_tokenizer, tmp_path, optimizer):
    """A run that dies after its step-10 checkpoint and is resumed ends bit-identical to one that never
    stopped (same schedule, same batches, same optimizer state)."""
    import shutil

    raw = tiny_recipe(small_dataset, small_tokenizer, max_steps=20, checkpoint_interval=10, optimizer=optimizer)
    straight = train(parse_recipe(raw), tmp_path / "a", progress=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-0000020")  # the crash: nothing after step 10 survived
    shutil.rmtree(tmp_path / "b" / "model")
    resumed = train(parse_recipe(raw), tmp_path / "b", resume=True, progress=False)
    assert resumed["resumed_from"] == 10
    a, _ = load_pretrained(straight["model"])
    b, _ = load_pretrained(resumed["model"])
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    events = [json.loads(x)["kind"] for x in (tmp_path / "b" / "events.jsonl").read_text().splitlines()]
    assert events == ["start", "finished", "resume", "finished"]  # b began as a copy of a's whole directory


def test_same_command_resumes_finished_run_says_so_changed_recipe_refused(small_dataset, small_tokenizer, tmp_path):
    from lmforge.errors import RecipeError

    raw = tiny_recipe(small_dataset, small_tokenizer, max_steps=10)
    first = train(parse_recipe(raw), tmp_path / "r", progress=False)
    again = train(parse_recipe(raw), tmp_path / "r", progress=False)
    assert again["finished_already"] and again["steps"] == 10
    assert again["validation"] == first["validation"]
    changed = {**raw, "train": {**raw["train"], "lr": 1e-4, "seq_len": 32}}
    with pytest.raises(RecipeError, match="differs") as e:
        train(parse_recipe(changed), tmp_path / "r", progress=False)
    assert "train.lr" in str(e.value) and "train.seq_len" in str(e.value)
    longer = train(parse_recipe({**raw, "train": {**raw["train"], "max_steps": 12}}), tmp_path / "r", progress=False)
    assert longer["resumed_from"] == 10 and longer["steps"] == 12


def test_corrupt_checkpoint_is_skipped(small_dataset, small_tokenizer, tmp_path):
    from lmforge.train.checkpoint import checkpoint_dirs, is_intact

    raw = tiny_recipe(small_dataset, small_tokenizer, max_steps=20, checkpoint_interval=10)
    train(parse_recipe(raw), tmp_path / "r", progress=False)
    newest = checkpoint_dirs(tmp_path / "r")[-1]
    with open(newest / "model.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\xff\xff\xff\xff")
    assert not is_intact(newest) and is_intact(checkpoint_dirs(tmp_path / "r")[0])
    resumed = train(parse_recipe(raw), tmp_path / "r", resume=True, progress=False)
    assert resumed["resumed_from"] == 10


def test_muon_steps_hidden_matrices_and_adamw_the_rest():
    from lmforge.model.config import ModelConfig
    from lmforge.model.transformer import Transformer
    from lmforge.train.optim import Muon, make_optimizer
    from lmforge.train.recipe import TrainSpec

    model = Transformer(ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                    num_attention_heads=2, max_position_embeddings=16))
    muon, adamw = make_optimizer(model, TrainSpec(optimizer="muon")).optimizers
    assert isinstance(muon, Muon) and isinstance(adamw, torch.optim.AdamW)
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    assert id(model.embed_tokens.weight) in in_adamw and id(model.norm.weight) in in_adamw
    assert id(model.layers[0].mlp.down_proj.weight) in in_muon
    assert in_muon.isdisjoint(in_adamw) and len(in_muon | in_adamw) == len(list(model.parameters()))


def test_newton_schulz_approximates_polar_factor():
    """Against the closed form U V^T from an SVD: Muon's quintic iteration lands every singular value in
    roughly [0.7, 1.2] (it trades exactness for speed), and keeps the singular vectors."""
    from lmforge.train.optim import orthogonalize

    g = torch.randn(48, 80, generator=torch.Generator().manual_seed(0))
    o = orthogonalize(g)
    s = torch.linalg.svdvals(o)
    assert s.min() > 0.6 and s.max() < 1.25
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    cos = torch.nn.functional.cosine_similarity((u @ vh).flatten(), o.flatten(), dim=0)
    assert cos > 0.95
    assert orthogonalize(g.T).shape == (80, 48)


def test_runs_show_reads_a_real_run(trained):
    """`lmforge runs show` on a run the trainer wrote: status, step, best validation, throughput, precision."""
    from typer.testing import CliRunner

    from lmforge.cli.main import app
    from lmforge.train.runs import summarize

    recipe, out, result = trained
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    s = summarize(out)
    assert (s.status, s.step, s.max_steps, s.resumes, s.rollbacks) == ("finished", 200, 200, 0, 0)
    assert s.best_val_loss == min(r.get("val_loss", r.get("final_val_loss", float("inf"))) for r in rows)
    assert s.final_val_loss == result["validation"]["loss"] and s.precision == "fp32"
    assert s.tokens == result["tokens"] and s.tokens_per_s > 0
    shown = CliRunner().invoke(app, ["runs", "show", str(out), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["status"] == "finished"
    assert list((out / "tensorboard").iterdir())  # TensorBoard event files, always
