"""LoRA adapters interchange with PEFT, checked against peft itself on transformers' Llama."""

import pytest
import torch
from conftest import require

pytestmark = pytest.mark.interop
transformers = require("transformers")
peft = require("peft")

from lmforge.model.config import ModelConfig  # noqa: E402
from lmforge.model.hf import load_model, save_pretrained  # noqa: E402
from lmforge.model.lora import (LoRAConfig, add_lora, apply_adapter, lora_layers, merge_lora,  # noqa: E402
                                save_adapter)
from lmforge.model.transformer import Transformer  # noqa: E402

CFG = dict(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
           num_key_value_heads=2, max_position_embeddings=128)


def _base(tmp_path, tie: bool):
    model = Transformer(ModelConfig(**CFG, tie_word_embeddings=tie))
    model.reset_parameters(seed=3)
    save_pretrained(model, tmp_path / "base")
    return tmp_path / "base"


def _ids():
    return torch.randint(0, CFG["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(0))


def _trained_looking(model, seed=5):
    """Non-zero B matrices, so the adapter changes the logits (a fresh one would be an identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g) * 0.05)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("targets", ["all-linear", ["q_proj", "v_proj"]], ids=["all-linear", "qv"])
def test_adapter_we_write_loads_in_peft(tmp_path, tie, targets):
    base = _base(tmp_path, tie)
    config = LoRAConfig(r=4, alpha=8, dropout=0.0, target_modules=targets)
    ours = add_lora(load_model(base), config, seed=1).eval()
    _trained_looking(ours)
    save_adapter(ours, tmp_path / "adapter", config, base=str(base))

    hf = transformers.AutoModelForCausalLM.from_pretrained(base, attn_implementation="eager")
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    x = _ids()
    with torch.no_grad():
        unmerged, peft_logits = ours(x), theirs(x).logits
        plain = load_model(base)(x)
        merged = merge_lora(ours)(x)
    assert (unmerged - plain).abs().max() > 1e-2  # the adapter does something
    assert (unmerged - peft_logits).abs().max() <= 1e-5
    assert (merged - unmerged).abs().max() <= 1e-5
    assert (merged - peft_logits).abs().max() <= 1e-5
    assert not lora_layers(ours)


def test_adapter_peft_writes_loads_here(tmp_path):
    base = _base(tmp_path, tie=True)
    hf = transformers.AutoModelForCausalLM.from_pretrained(base, attn_implementation="eager")
    lora = peft.LoraConfig(r=4, lora_alpha=12, target_modules=["q_proj", "down_proj", "up_proj"],
                           rank_pattern={"down_proj": 2}, task_type="CAUSAL_LM", init_lora_weights=False)
    theirs = peft.get_peft_model(hf, lora).eval()
    theirs.save_pretrained(tmp_path / "peft")

    ours = apply_adapter(load_model(base), tmp_path / "peft").eval()
    assert sorted({n.rsplit(".", 1)[1] for n in lora_layers(ours)}) == ["down_proj", "q_proj", "up_proj"]
    assert lora_layers(ours)["layers.0.mlp.down_proj"].lora_A.weight.shape[0] == 2
    x = _ids()
    with torch.no_grad():
        peft_logits = theirs(x).logits
        assert (ours(x) - peft_logits).abs().max() <= 1e-5
        merged_peft = theirs.merge_and_unload()(x).logits
        assert (merge_lora(ours)(x) - merged_peft).abs().max() <= 1e-5
