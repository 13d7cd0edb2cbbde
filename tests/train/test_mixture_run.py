"""Mixtures in a real run: a text dataset and a chat dataset weighted 3:1 train together; the rows the run
actually drew follow the weights within binomial error (and come from the source they are said to); a killed
mixture run resumes bit-exactly; a bad mixture is one clear RecipeError; the lineage lists every source."""

import json
import math
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_recipe

import lmforge.train.setup as train_setup
from lmforge.errors import RecipeError
from lmforge.model.hf import load_pretrained, read_lineage
from lmforge.model.tokenizer import Tokenizer
from lmforge.train.recipe import parse_recipe
from lmforge.train.trainer import train

WEIGHTS = {"code": 3.0, "chat": 1.0}


@pytest.fixture(scope="module")
def chat_dataset(tmp_path_factory):
    from lmforge.data.ingest import ingest

    root = tmp_path_factory.mktemp("chat")
    rows = [{"id": f"q{a}-{b}", "messages": [{"role": "user", "content": f"What is {a} + {b}?"},
                                             {"role": "assistant", "content": f"{a} + {b} = {a + b}"}]}
            for a in range(20) for b in range(10)]
    (root / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest([root / "chat.jsonl"], root / "ds", val_fraction=0.1, progress=False)
    return root / "ds"


def mix_recipe(text_ds, chat_ds, tokenizer, **train_kw) -> dict:
    raw = tiny_recipe(text_ds, tokenizer, **train_kw)
    raw["data"] = {"mix": [{"path": str(text_ds), "weight": WEIGHTS["code"], "name": "code"},
                           {"path": str(chat_ds), "weight": WEIGHTS["chat"], "name": "chat"}]}
    return raw


class Recording:
    """The run's training data, noting every draw the loop makes (and what it got)."""

    def __init__(self, inner):
        self.inner, self.draws = inner, []

    def batch(self, seed, draw, batch_size):
        x, y = self.inner.batch(seed, draw, batch_size)
        self.draws.append((seed, draw, batch_size, x))
        return x, y


@pytest.fixture(scope="module")
def mixed_run(small_dataset, small_tokenizer, chat_dataset, tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    seen = []

    def recording_build_data(recipe, prep, _real=train_setup.build_data):
        train_data, val = _real(recipe, prep)
        seen.append(Recording(train_data))
        return seen[-1], val

    monkeypatch.setattr(train_setup, "build_data", recording_build_data)
    try:
        recipe = parse_recipe(mix_recipe(small_dataset, chat_dataset, small_tokenizer, max_steps=30, grad_accum=2,
                                         micro_batch_size=8, lr=1e-2, eval_interval=15,
                                         log_interval=1))
        out = tmp_path_factory.mktemp("runs") / "mix"
        result = train(recipe, out, progress=False)
    finally:
        monkeypatch.undo()
    (recording,) = seen
    return recipe, out, result, recording


def test_mixture_run_trains(mixed_run):
    _, out, result, _ = mixed_run
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert result["steps"] == 30 and losses[0] > 6.0 and max(losses[-3:]) < losses[0] - 1.0, losses
    assert result["validation"]["loss"] < losses[0] - 0.8  # validation is the first source's (code)


def test_realised_proportions_over_the_runs_draws_follow_the_weights(mixed_run, small_tokenizer):
    recipe, _, _, recording = mixed_run
    mix = recording.inner
    assert mix.names == ["code", "chat"] and mix.shares == pytest.approx({"code": 0.75, "chat": 0.25})
    draws = [d for _, d, _, _ in recording.draws]
    # the loop drew each micro-batch 0 .. max_steps * grad_accum - 1 exactly once, in order
    assert draws == list(range(recipe.train.max_steps * recipe.train.grad_accum))
    tok = Tokenizer.from_dir(small_tokenizer)
    roles = {tok.backend.token_to_id(t) for t in ("<|user|>", "<|assistant|>", "<|end|>")}
    counts = np.zeros(2, dtype=np.int64)
    for seed, draw, b, x in recording.draws:
        which = mix.sources_of(seed, draw, b)
        # every row comes from the source the mixture names: chat windows hold role tokens, code never does
        assert [bool(set(row.tolist()) & roles) for row in x] == [bool(w == 1) for w in which]
        counts += np.bincount(which, minlength=2)
    n = int(counts.sum())
    assert n == 60 * recipe.train.micro_batch_size
    realised = mix.realised(recipe.seed, 0, len(draws), recipe.train.micro_batch_size)
    for i, name in enumerate(mix.names):
        p = WEIGHTS[name] / sum(WEIGHTS.values())
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[i] - n * p) <= 4 * sigma, (name, counts[i], n * p, sigma)
        assert realised[name] == counts[i] / n


def test_lineage_lists_every_source(mixed_run, small_dataset, chat_dataset):
    _, _, result, _ = mixed_run
    lineage = read_lineage(result["model"])
    hashes = [json.loads((d / "dataset.json").read_text())["content_hash"] for d in (small_dataset, chat_dataset)]
    assert lineage["sources"] == [
        {"name": "code", "path": str(small_dataset), "content_hash": hashes[0]},
        {"name": "chat", "path": str(chat_dataset), "content_hash": hashes[1]},
    ]
    assert lineage["dataset"]["content_hash"] == hashes[0]  # validation's
    assert [s["weight"] for s in lineage["recipe"]["data"]["mix"]] == [3.0, 1.0]


def test_mixture_resume_is_exact(small_dataset, small_tokenizer, chat_dataset, tmp_path):
    raw = mix_recipe(small_dataset, chat_dataset, small_tokenizer, max_steps=20, checkpoint_interval=10,
                     grad_accum=2, micro_batch_size=4)
    straight = train(parse_recipe(raw), tmp_path / "a", progress=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step-0000020")  # killed after the step-10 checkpoint
    shutil.rmtree(tmp_path / "b" / "model")
    resumed = train(parse_recipe(raw), tmp_path / "b", progress=False)
    assert resumed["resumed_from"] == 10 and resumed["steps"] == 20
    a, _ = load_pretrained(straight["model"])
    b, _ = load_pretrained(resumed["model"])
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert resumed["validation"] == straight["validation"]


def test_bad_mixtures_are_one_clear_recipe_error(small_dataset, small_tokenizer, chat_dataset, tmp_path):
    import yaml

    dup = mix_recipe(small_dataset, chat_dataset, small_tokenizer)
    dup["data"]["mix"][1]["name"] = "code"
    with pytest.raises(RecipeError, match="two sources are named 'code'") as e:
        train(parse_recipe(dup), tmp_path / "dup", progress=False)
    assert e.value.hint and "unique" in e.value.hint
    assert not (tmp_path / "dup").exists()  # refused before the run directory was made
    unnamed = mix_recipe(small_dataset, chat_dataset, small_tokenizer)
    unnamed["data"]["mix"] = [{"path": str(small_dataset)}, {"path": str(small_dataset)}]  # both 'small'
    with pytest.raises(RecipeError, match="two sources are named 'small'"):
        train(parse_recipe(unnamed), tmp_path / "unnamed", progress=False)

    zero = mix_recipe(small_dataset, chat_dataset, small_tokenizer)
    zero["data"]["mix"][1]["weight"] = 0
    with pytest.raises(RecipeError, match=r"data\.mix\.1\.weight") as e:
        parse_recipe(zero)
    assert "greater than 0" in str(e.value)

    # from the command line: one error line each, no traceback, a non-zero exit, no run directory
    for name, raw in (("dup", dup), ("zero", zero)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(raw))
        proc = run_cli("train", path, "--out", tmp_path / f"cli-{name}")
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.count("error:") == 1, proc.stderr
        assert ("named 'code'" if name == "dup" else "weight") in proc.stderr
        assert not (tmp_path / f"cli-{name}").exists()
