"""Distillation: the KL term against closed forms, and a small student trained on a teacher's logits beating
the same student trained on cross-entropy alone (same steps, same data); a teacher with other tokens refused."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_recipe

import lmforge
from lmforge.data.loader import IGNORE_INDEX
from lmforge.train.loss import cross_entropy_sum, distillation_sum


def test_kl_term_against_closed_forms():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 13, generator=g), torch.randn(2, 5, 13, generator=g)
    y = torch.randint(0, 13, (2, 5), generator=g)
    y[0, :2] = IGNORE_INDEX  # masked positions carry no KL either
    keep = y != IGNORE_INDEX
    T = 2.0
    ls, lt = F.log_softmax(s[keep] / T, -1), F.log_softmax(t[keep] / T, -1)
    forward = F.kl_div(ls, lt, log_target=True, reduction="sum") * T * T        # KL(teacher || student)
    reverse = F.kl_div(lt, ls, log_target=True, reduction="sum") * T * T
    assert distillation_sum(s, t, y, temperature=T) == pytest.approx(forward.item(), rel=1e-5)
    assert distillation_sum(s, t, y, temperature=T, kind="reverse") == pytest.approx(reverse.item(), rel=1e-5)
    assert distillation_sum(t, t, y, temperature=T).abs() < 1e-5
    assert forward != pytest.approx(reverse.item())


def student_recipe(data, teacher, **distill):
    raw = tiny_recipe(data, teacher, max_steps=150, lr=1e-2, seq_len=128, micro_batch_size=16, eval_interval=150,
                      checkpoint_interval=150)
    raw["model"] |= {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "max_position_embeddings": 128}
    if distill:
        raw["distill"] = {"teacher": str(teacher), **distill}
    return raw


@pytest.mark.slow
def test_distilled_student_beats_the_cross_entropy_student(trained_model, small_dataset, tmp_path):
    plain = lmforge.train(student_recipe(small_dataset, trained_model), tmp_path / "ce", progress=False)
    distilled = lmforge.train(student_recipe(small_dataset, trained_model, temperature=1.0, weight=0.8),
                              tmp_path / "kd", progress=False)
    assert distilled["steps"] == plain["steps"] and distilled["tokens"] == plain["tokens"]
    assert distilled["validation"]["loss"] < plain["validation"]["loss"] - 0.02, (distilled, plain)
    lineage = lmforge.model.hf.read_lineage(tmp_path / "kd" / "model")
    assert lineage["recipe"]["distill"]["teacher"] == str(trained_model)


def test_weight_zero_is_cross_entropy_exactly(trained_model, small_dataset, tmp_path):
    a = lmforge.train(student_recipe(small_dataset, trained_model) | {"train": {
        **student_recipe(small_dataset, trained_model)["train"], "max_steps": 8}}, tmp_path / "a", progress=False)
    raw = student_recipe(small_dataset, trained_model, weight=0.0)
    raw["train"]["max_steps"] = 8
    b = lmforge.train(raw, tmp_path / "b", progress=False)
    assert a["validation"]["loss"] == b["validation"]["loss"]


def test_a_teacher_with_other_tokens_is_refused(trained_model, small_dataset, small_tokenizer, tmp_path):
    raw = student_recipe(small_dataset, trained_model, weight=0.5)
    raw["tokenizer"] = {"vocab_size": 300}
    with pytest.raises(lmforge.errors.LmforgeError, match="tokenizer is not the teacher's"):
        lmforge.train(copy.deepcopy(raw), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
