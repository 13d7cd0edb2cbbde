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
    with pytest.raises(RecipeError, match="exactly one of tokenizer.path or tokenizer.vocab_size"):
        load_recipe(_write(tmp_path, {**BASE, "tokenizer": {"path": "t", "vocab_size": 8}}))


@pytest.mark.parametrize("recipe,override,expected", [
    # an override of the data source or the tokenizer replaces it; the other keys of the section stay
    ({"data": {"corpus": "python-stdlib"}}, "data.path=ds", {"data": {"path": "ds", "corpus": None}}),
    ({"data": {"path": "ds"}}, "data.corpus=python-stdlib", {"data": {"path": None, "corpus": "python-stdlib"}}),
    ({"tokenizer": {"vocab_size": 512, "min_frequency": 3}}, "tokenizer.path=tok",
     {"tokenizer": {"path": "tok", "vocab_size": None, "min_frequency": 3}}),
    ({"tokenizer": {"path": "tok"}}, "tokenizer.vocab_size=300",
     {"tokenizer": {"path": None, "vocab_size": 300, "min_frequency": 2}}),
])
def test_set_of_one_alternative_replaces_the_other(tmp_path, recipe, override, expected):
    r = load_recipe(_write(tmp_path, {**BASE, **recipe}), [override]).model_dump()
    for section, values in expected.items():
        assert {k: r[section][k] for k in values} == values


def test_set_cannot_clear_the_only_source(tmp_path):
    with pytest.raises(RecipeError, match="exactly one of data.path or data.corpus"):
        load_recipe(_write(tmp_path, BASE), ["data.corpus=null"])


def test_cli_exit_code_and_single_line(tmp_path):
    path = _write(tmp_path, {**BASE, "optimiser": {}})
    proc = run_cli("train", path, "--out", tmp_path / "run")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "unknown key 'optimiser'" in proc.stderr
    valid = proc.stderr.split("valid keys in recipe: ")[1].strip().split(", ")
    assert valid == sorted(valid) and {"data", "init_from", "model", "name", "train"} <= set(valid)
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


def test_shipped_recipe_by_name_is_the_file(tmp_path):
    """Wherever a recipe is asked for, a shipped recipe's name is that file (read from the checkout's
    recipes/ here, independently of the package lookup); anything else is one error listing the names."""
    from pathlib import Path

    from lmforge.curate.recipe import load_curate_recipe

    shipped = Path(__file__).parents[2] / "recipes"
    assert load_recipe("tiny-code-stdlib") == load_recipe(shipped / "tiny-code-stdlib.yaml")
    assert load_curate_recipe("curate") == load_curate_recipe(shipped / "curate.yaml")
    with pytest.raises(RecipeError, match="no such recipe file.*tiny-code-stdlib"):
        load_recipe("tiny-code-stdlb")
    proc = run_cli("train", "no-such-recipe", "--out", tmp_path / "run")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "no-such-recipe: no such recipe file" in proc.stderr and ", ".join(sorted(p.stem for p in shipped.glob("*.yaml"))) in proc.stderr
    assert not (tmp_path / "run").exists()


def test_missing_dataset_stops_before_writing_a_run(tmp_path):
    path = _write(tmp_path, {"data": {"path": str(tmp_path / "nope")}, "tokenizer": {"vocab_size": 512}})
    proc = run_cli("train", path, "--out", tmp_path / "run")
    assert proc.returncode == 2 and "not a dataset directory" in proc.stderr
    assert not (tmp_path / "run").exists()


# --- --resume: the saved run is the source of truth -------------------------------------------------------

def _start(tmp_path, file_data, overrides):
    """What `lmforge train r.yaml --set ...` leaves in the run directory before its first step."""
    from lmforge.train.recipe import resolve_run, save_run_recipe

    path = _write(tmp_path, file_data)
    recipe, run_dir, source = resolve_run(path, overrides, tmp_path / "run", resume=False)
    save_run_recipe(run_dir, recipe, resume=False, source=source)
    return path, run_dir


def _resume(path, run_dir, overrides=()):
    from lmforge.train.recipe import check_resume, resolve_run, save_run_recipe

    recipe, _, _ = resolve_run(path, list(overrides), run_dir, resume=True)
    check_resume(run_dir, recipe)
    save_run_recipe(run_dir, recipe, resume=True)
    return recipe


def test_resume_with_the_file_keeps_the_runs_overrides(tmp_path):
    path, run = _start(tmp_path, BASE, ["train.lr=2e-3", "train.max_steps=400", "data.path=ds"])
    for recipe_arg in (path, None):                 # with the recipe file, or with the run directory alone
        r = _resume(recipe_arg, run)
        assert (r.train.lr, r.train.max_steps, r.data.path, r.data.corpus) == (2e-3, 400, "ds", None)
    r = _resume(path, run, ["train.max_steps=800", "train.eval_interval=7"])
    assert (r.train.lr, r.train.max_steps, r.train.eval_interval) == (2e-3, 800, 7)
    r = _resume(path, run)                          # a later resume with the file alone keeps 800
    assert (r.train.lr, r.train.max_steps, r.train.eval_interval) == (2e-3, 800, 7)


# The keys that cannot change the trajectory already run (docs/training.md); everything else is refused.
RESUMABLE = {"name": "other", "train.max_steps": 9, "train.eval_interval": 3, "train.eval_tokens": 64,
             "train.final_eval_tokens": 128, "train.checkpoint_interval": 2, "train.keep_checkpoints": 5,
             "train.log_interval": 1, "train.threads": 1}
FIXED = {"seed": 1, "train.lr": 0.5, "train.seq_len": 8, "train.optimizer": "muon", "train.precision": "bf16",
         "train.compile": False, "model.hidden_size": 96, "tokenizer.vocab_size": 300, "data.path": "other"}


@pytest.mark.parametrize("key,value", list(RESUMABLE.items()))
def test_resume_may_change_what_cannot_change_the_trajectory(tmp_path, key, value):
    path, run = _start(tmp_path, BASE, ["train.lr=2e-3"])
    r = _resume(None, run, [f"{key}={value}"])
    node = r.model_dump()
    for part in key.split("."):
        node = node[part]
    assert node == value and r.train.lr == 2e-3


@pytest.mark.parametrize("key,value", list(FIXED.items()))
def test_resume_refuses_a_change_to_the_trajectory(tmp_path, key, value):
    path, run = _start(tmp_path, BASE, [])
    before = (run / "recipe.yaml").read_text()
    with pytest.raises(RecipeError, match=rf"the recipe differs.*{key} is .* in this run, {value!r} now"):
        _resume(path, run, [f"{key}={value}"])
    assert (run / "recipe.yaml").read_text() == before


def test_resume_sees_edits_of_the_recipe_file(tmp_path):
    path, run = _start(tmp_path, BASE, ["train.lr=2e-3"])
    path.write_text(yaml.safe_dump({**BASE, "train": {"max_steps": 50}}))      # more steps: accepted
    assert _resume(path, run).train.max_steps == 50
    path.write_text(yaml.safe_dump({**BASE, "seed": 3}))                       # another seed: refused
    with pytest.raises(RecipeError, match="seed is 1337 in this run, 3 now"):
        _resume(path, run)


def test_resume_without_recipe_needs_a_run(tmp_path):
    from lmforge.train.recipe import resolve_run

    with pytest.raises(RecipeError, match="needs the run directory"):
        resolve_run(None, [], None, resume=True)
    with pytest.raises(RecipeError, match="nothing to resume"):
        resolve_run(None, [], tmp_path / "empty", resume=True)
    with pytest.raises(RecipeError, match="no RECIPE"):
        resolve_run(None, [], tmp_path / "empty", resume=False)


def test_cli_resume_without_the_recipe(tmp_path, small_dataset, small_tokenizer):
    import json

    from conftest import tiny_recipe

    path = _write(tmp_path, tiny_recipe(small_dataset, small_tokenizer, max_steps=3, checkpoint_interval=3))
    run = tmp_path / "run"
    run_cli("train", path, "--out", run, "--set", "train.lr=0.002", check=True)
    path.unlink()                                   # the run directory alone is enough to continue
    proc = run_cli("train", "--out", run, "--resume", "--max-steps", 5, check=True)
    assert "done 5 steps" in proc.stdout
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["step"]) for e in events] == [("start", 0), ("finished", 3), ("resume", 3), ("finished", 5)]
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert (saved["train"]["lr"], saved["train"]["max_steps"]) == (0.002, 5)
    assert yaml.safe_load((run / "overrides.yaml").read_text())["overrides"] == ["train.lr=0.002",
                                                                                "train.max_steps=5"]
    proc = run_cli("train", "--out", run, "--resume", "--set", "train.lr=0.01")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "train.lr is 0.002 in this run, 0.01 now" in proc.stderr
