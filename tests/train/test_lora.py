"""A LoRA run: adapters trained on a frozen init_from base (fp32 or quantized), the base's bytes unchanged, the
adapter in PEFT's layout (checked with peft itself), the merged model beside it, exact resumption."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import STDLIB, require, run_cli, tiny_recipe

import lmforge
from lmforge.model.hf import load_model
from lmforge.model.lora import apply_adapter, lora_layers
from lmforge.train.events import Event
from lmforge.train.methods import Method
from lmforge.train.trainer import weights_sha256


@pytest.fixture(scope="module")
def new_domain(tmp_path_factory):
    """Files the base never saw, so adapting to them has something to learn."""
    from lmforge.data.ingest import ingest

    out = tmp_path_factory.mktemp("data") / "asyncio"
    ingest([STDLIB], out, include=["asyncio/*.py", "unittest/*.py"], val_fraction=0.15, progress=False)
    return out


def lora_recipe(base_dir, data, **lora):
    raw = tiny_recipe(data, base_dir, max_steps=30, lr=3e-3, seq_len=128, eval_interval=30, checkpoint_interval=10)
    del raw["tokenizer"], raw["model"]
    raw["init_from"] = str(base_dir)
    raw["lora"] = {"r": 4, "alpha": 8, "dropout": 0.0, **lora}
    return raw


class StopAt(Method):
    """Asks the run to stop after step `step`, once, as Ctrl-C would."""
    events = (Event.STEP_END,)

    def __init__(self, step: int):
        self.step = step

    def apply(self, event, state):
        if state.step == self.step:
            state.stop = True


def test_lora_run_trains_adapters_only_and_writes_peft_layout(trained_model, new_domain, tmp_path):
    before = weights_sha256(trained_model)
    raw = lora_recipe(trained_model, new_domain)
    result = lmforge.train(copy.deepcopy(raw), tmp_path / "run", progress=False)
    assert weights_sha256(trained_model) == before
    run = tmp_path / "run"
    assert {p.name for p in (run / "adapter").iterdir()} >= {"adapter_config.json", "adapter_model.safetensors"}
    lineage = lmforge.model.hf.read_lineage(run / "model")
    assert lineage["lora"]["base_sha256"] == before
    assert 0 < lineage["lora"]["trainable_parameters"] < 0.2 * lineage["lora"]["parameters"]
    # the frozen base learned nothing; the adapted model did: lower loss on the new domain than the base
    assert result["validation"]["loss"] < base_loss(raw, tmp_path) - 0.05

    transformers, peft = require("transformers"), require("peft")
    x = torch.randint(0, 512, (2, 48), generator=torch.Generator().manual_seed(1))
    hf = transformers.AutoModelForCausalLM.from_pretrained(trained_model, attn_implementation="eager")
    theirs = peft.PeftModel.from_pretrained(hf, run / "adapter").eval()
    ours = apply_adapter(load_model(trained_model), run / "adapter").eval()
    merged = load_model(run / "model").eval()
    with torch.no_grad():
        a, b, c = ours(x), theirs(x).logits, merged(x)
    assert (a - b).abs().max() <= 1e-5 and (c - a).abs().max() <= 1e-5 and (c - b).abs().max() <= 1e-5
    assert (a - load_model(trained_model)(x)).abs().max() > 1e-3


def base_loss(raw, tmp_path) -> float:
    """The final-validation loss of the recipe's model before any step: the base (B is zero at the start)."""
    from lmforge.train.methods.validation import evaluate
    from lmforge.train.recipe import parse_recipe
    from lmforge.train.setup import setup

    state = setup(parse_recipe(copy.deepcopy(raw)), tmp_path / "unused", progress=False)
    return evaluate(state, state.recipe.train.final_eval_tokens)["loss"]


def test_lora_resumes_exactly(trained_model, new_domain, tmp_path):
    raw = lora_recipe(trained_model, new_domain, dropout=0.1)  # dropout: the RNG streams must resume too
    straight = lmforge.train(copy.deepcopy(raw), tmp_path / "straight", progress=False)
    stopped = lmforge.train(copy.deepcopy(raw), tmp_path / "stopped", progress=False, methods=[StopAt(13)])
    assert stopped["interrupted"]
    resumed = lmforge.train(copy.deepcopy(raw), tmp_path / "stopped", progress=False)
    assert 0 < resumed["resumed_from"] < straight["steps"] and resumed["steps"] == straight["steps"]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "stopped" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("base", ["int8", "int4"])
def test_lora_over_quantized_base(trained_model, new_domain, tmp_path, base):
    require("torchao")
    raw = lora_recipe(trained_model, new_domain, base=base, group_size=32)
    result = lmforge.train(copy.deepcopy(raw), tmp_path / "run", progress=False)
    assert result["validation"]["loss"] < base_loss(raw, tmp_path) - 0.05
    merged = load_model(tmp_path / "run" / "model")  # merged into the fp32 base: a plain model
    assert not lora_layers(merged)


def test_lora_needs_a_base(small_dataset, small_tokenizer, tmp_path):
    raw = tiny_recipe(small_dataset, small_tokenizer)
    raw["lora"] = {"r": 4}
    import yaml

    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("train", tmp_path / "r.yaml", "--out", tmp_path / "run")
    assert proc.returncode != 0 and "init_from" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_merge_cli_merges_a_peft_adapter(trained_model, tmp_path):
    transformers, peft = require("transformers"), require("peft")
    hf = transformers.AutoModelForCausalLM.from_pretrained(trained_model, attn_implementation="eager")
    theirs = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                     init_lora_weights=False, task_type="CAUSAL_LM")).eval()
    theirs.save_pretrained(tmp_path / "peft")
    proc = run_cli("merge", trained_model, tmp_path / "peft", "-o", tmp_path / "merged")
    assert proc.returncode == 0, proc.stderr
    x = torch.randint(0, 512, (1, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = theirs.merge_and_unload()(x).logits
        assert (load_model(tmp_path / "merged")(x) - expected).abs().max() <= 1e-5
    assert (tmp_path / "merged" / "tokenizer.json").is_file()
    bad = run_cli("merge", trained_model, tmp_path / "nothing", "-o", tmp_path / "m2")
    assert bad.returncode != 0 and "adapter_config.json" in bad.stderr and not (tmp_path / "m2").exists()
