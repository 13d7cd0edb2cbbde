"""The model catalog: `lmforge models list | import | info | rm`, catalog names wherever MODEL is taken, and
`train --register`; bad input gets one line and leaves the catalog as it was."""

import json
import shutil

import pytest
from conftest import run_cli, tiny_recipe

from lmforge.infer import catalog
from lmforge.infer.local import load


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LMFORGE_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "models"


def test_import_list_info_use_and_remove(home, trained_model, tmp_path):
    out = run_cli("models", "import", trained_model, "--name", "coder", check=True).stdout
    assert out.strip() == f"coder: {trained_model.resolve()}"
    assert "coder" in run_cli("models", "list", check=True).stdout
    info = json.loads(run_cli("models", "info", "coder", check=True).stdout)
    assert info["format"] == "hf" and info["path"] == str(trained_model.resolve())
    assert info["context_length"] == 256 and info["lineage"]  # the run's lineage travels with the entry
    # a catalog name works wherever MODEL does, and gives what the path gives
    by_name = run_cli("generate", "coder", "def ", "--max-tokens", "8", "--temperature", "0", check=True).stdout
    by_path = run_cli("generate", trained_model, "def ", "--max-tokens", "8", "--temperature", "0", check=True).stdout
    assert by_name == by_path
    assert load("coder").generate("x = ", max_tokens=4, temperature=0) == \
        load(trained_model).generate("x = ", max_tokens=4, temperature=0)
    assert run_cli("models", "rm", "coder", check=True).returncode == 0
    assert trained_model.is_dir()  # a referenced model stays where it is
    assert catalog.entries() == []


def test_copy_survives_the_source_and_rm_deletes_the_copy(home, trained_model, tmp_path):
    source = tmp_path / "run" / "model"
    shutil.copytree(trained_model, source)
    entry = catalog.add(source, copy=True)
    assert entry["name"] == "run"  # RUN/model is named after its run
    shutil.rmtree(source)
    assert load("run").generate("def ", max_tokens=3, temperature=0) is not None
    catalog.remove("run")
    assert not (home / "run").exists()


def test_default_location_is_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("LMFORGE_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert catalog.catalog_dir() == tmp_path / "xdg" / "lmforge" / "models"


def test_bad_input_is_one_line_and_changes_nothing(home, trained_model, tmp_path):
    not_model = tmp_path / "empty"
    not_model.mkdir()
    (tmp_path / "x.gguf").write_bytes(b"nope")
    cases = [
        (("models", "import", trained_model, "--name", "../evil"), "is not a usable model name"),
        (("models", "import", not_model), "no config.json"),
        (("models", "import", tmp_path / "x.gguf"), "not a GGUF file"),
        (("models", "import", tmp_path / "missing"), "no such model"),
        (("models", "info", "ghost"), "the catalog has no model named 'ghost'"),
        (("models", "rm", "ghost"), "the catalog has no model named 'ghost'"),
        (("chat", "ghost"), "no such model"),
    ]
    for args, message in cases:
        proc = run_cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (args, proc.stderr)
    assert catalog.entries() == []
    run_cli("models", "import", trained_model, "--name", "a", check=True)
    proc = run_cli("models", "import", trained_model, "--name", "a")
    assert proc.returncode == 2 and "already has a model named 'a'" in proc.stderr
    shutil.rmtree(tmp_path / "gone", ignore_errors=True)
    moved = tmp_path / "gone"
    shutil.copytree(trained_model, moved)
    catalog.add(moved, name="b")
    shutil.rmtree(moved)
    proc = run_cli("generate", "b", "x")
    assert proc.returncode == 2 and "points at" in proc.stderr and "lmforge models rm b" in proc.stderr
    assert [e["name"] for e in catalog.entries()] == ["a", "b"]


def test_train_register(home, small_dataset, small_tokenizer, tmp_path):
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(small_dataset, small_tokenizer, max_steps=2)))
    proc = run_cli("train", recipe, "--out", tmp_path / "run", "--register", "mine", check=True)
    assert "registered as mine" in proc.stdout
    assert catalog.get("mine")["path"] == str((tmp_path / "run" / "model").resolve())
    taken = run_cli("train", recipe, "--out", tmp_path / "run2", "--register", "mine")
    assert taken.returncode == 2 and "already has a model named 'mine'" in taken.stderr
    assert not (tmp_path / "run2" / "model").exists()  # refused before training
