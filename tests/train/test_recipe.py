"""Recipes: unknown or mistyped keys stop with a message that names them and lists the valid keys."""

import pytest
import yaml
from conftest import run_cli

from lmforge.errors import RecipeError
from lmforge.train.recipe import Recipe, load_recipe

BASE = {"data": {"corpus": "python-stdlib"}, "tokenizer": {"vocab_size": 512}}


def _write(tmp_path, data):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_key_lists_valid_keys(tmp_path):
    path = _write(tmp_path, {**BASE, "train": {"lrr": 0.1}})
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert "unknown key 'train.lrr'" in msg
    for key in ("lr", "max_steps", "micro_batch_size", "warmup_steps"):
        assert key in msg


def test_unknown_model_key_lists_hf_names(tmp_path):
    with pytest.raises(RecipeError, match=r"unknown key 'model.n_layer'.*num_hidden_layers"):
        load_recipe(_write(tmp_path, {**BASE, "model": {"n_layer": 2}}))


def test_mistyped_value_names_key(tmp_path):
    with pytest.raises(RecipeError, match=r"'train.max_steps'.*got 'many'"):
        load_recipe(_write(tmp_path, {**BASE, "train": {"max_steps": "many"}}))


def test_set_overrides_and_their_errors(tmp_path):
    path = _write(tmp_path, BASE)
    r = load_recipe(path, ["train.lr=1e-3", "model.num_hidden_layers=3", "train.betas=[0.8, 0.9]"])
    assert r.train.lr == 1e-3 and r.model.num_hidden_layers == 3 and r.train.betas == (0.8, 0.9)
    assert r.name == "r"
    with pytest.raises(RecipeError, match="unknown key 'train.nope'"):
        load_recipe(path, ["train.nope=1"])
    with pytest.raises(RecipeError, match="not KEY=VALUE"):
        load_recipe(path, ["train.lr"])


def test_data_needs_exactly_one_source(tmp_path):
    with pytest.raises(RecipeError, match="exactly one of data.path or data.corpus"):
        load_recipe(_write(tmp_path, {**BASE, "data": {}}))


def test_cli_exit_code_and_single_line(tmp_path):
    path = _write(tmp_path, {**BASE, "optimiser": {}})
    proc = run_cli("train", path, "--out", tmp_path / "run")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "unknown key 'optimiser'" in proc.stderr and "valid keys in recipe: data, model, name" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_shipped_recipes_validate():
    from pathlib import Path

    from lmforge.curate.recipe import CurateRecipe, load_curate_recipe

    paths = sorted((Path(__file__).parents[2] / "recipes").glob("*.yaml"))
    assert paths
    for path in paths:
        if path.stem.startswith("curate"):          # curation recipes: recipes/curate*.yaml
            assert isinstance(load_curate_recipe(path), CurateRecipe)
        else:
            assert isinstance(load_recipe(path), Recipe)


def test_missing_dataset_stops_before_writing_a_run(tmp_path):
    path = _write(tmp_path, {"data": {"path": str(tmp_path / "nope")}, "tokenizer": {"vocab_size": 512}})
    proc = run_cli("train", path, "--out", tmp_path / "run")
    assert proc.returncode == 2 and "not a dataset directory" in proc.stderr
    assert not (tmp_path / "run").exists()
