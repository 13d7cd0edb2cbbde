"""Shared fixtures: a small real corpus (a slice of the standard library), a tokenizer trained on it,
and a tiny-model recipe. Everything is built locally; nothing is downloaded."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def require(module: str, *, env: str = "LMFORGE_REQUIRE_ALL"):
    """Import and return `module` (where pytest.importorskip was used). When it is not installed the test skips,
    unless `env` or LMFORGE_REQUIRE_ALL (which `make test` sets) is 1: then it fails, naming the module, so a
    green `make test` ran everything. A module that is installed but broken is an error either way."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
            raise  # a dependency of an installed module is missing: a broken install, not an optional peer
    reason = f"{module} is not installed; install the test extra: pip install -e '.[test]'"
    if "1" in (os.environ.get(env), os.environ.get("LMFORGE_REQUIRE_ALL")):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason, allow_module_level=True)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tests never touch the user's cache or model catalog."""
    os.environ["LMFORGE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["LMFORGE_HOME"] = str(tmp_path_factory.mktemp("home"))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def run_cli(*args, check: bool = False, cwd=None) -> subprocess.CompletedProcess:
    """Run `lmforge ARGS` in a subprocess, as a user would (real exit codes, real stderr)."""
    proc = subprocess.run([sys.executable, "-m", "lmforge.cli.main", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "200"}, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"lmforge {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def code_folder() -> Path:
    """A real code corpus: the json, email and collections packages of the running interpreter."""
    return STDLIB


CODE_INCLUDE = ["json/*.py", "email/*.py", "collections/*.py", "logging/*.py", "importlib/*.py"]


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    from lmforge.data.ingest import ingest

    out = tmp_path_factory.mktemp("data") / "small"
    ingest([STDLIB], out, include=CODE_INCLUDE, val_fraction=0.15, progress=False)
    return out


@pytest.fixture(scope="session")
def small_tokenizer(small_dataset, tmp_path_factory) -> Path:
    from lmforge.data.dataset import Dataset
    from lmforge.train.prepare import train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "bpe512"
    train_tokenizer(Dataset(small_dataset), out, 512, progress=False)
    return out


def tiny_recipe(dataset: Path, tokenizer: Path, **train) -> dict:
    return {
        "name": "tiny",
        "seed": 7,
        "data": {"path": str(dataset)},
        "tokenizer": {"path": str(tokenizer)},
        "model": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "max_position_embeddings": 64},
        "train": {"seq_len": 64, "micro_batch_size": 8, "max_steps": 40, "lr": 3e-3, "warmup_steps": 5,
                  "eval_interval": 20, "eval_tokens": 4096, "final_eval_tokens": 16384, "checkpoint_interval": 10,
                  "precision": "fp32", "compile": False, **train},
    }


def neighbour_recall(a, b, k: int = 10) -> float:
    """Mean share of each row's k nearest neighbours (cosine, rows unit-norm) under `a` that are also among
    them under `b`: how much two embeddings of the same records agree on who is close to whom."""
    import numpy as np

    sa, sb = a @ a.T, b @ b.T
    np.fill_diagonal(sa, -np.inf)
    np.fill_diagonal(sb, -np.inf)
    na, nb = np.argsort(-sa, 1)[:, :k], np.argsort(-sb, 1)[:, :k]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb)]))


@pytest.fixture(scope="session")
def trained_model(small_dataset, small_tokenizer, tmp_path_factory) -> Path:
    """A small model trained on the standard-library slice (lmforge's tokenizer, so its chat template and
    tokens too): logits far from uniform, so greedy decoding has few near-ties, for the local-run tests
    (engine, chat, server, GGUF). Returns its model directory."""
    import lmforge

    recipe = tiny_recipe(small_dataset, small_tokenizer, max_steps=150, lr=1e-2, micro_batch_size=16,
                         seq_len=128, eval_interval=150, checkpoint_interval=150)
    recipe["model"]["max_position_embeddings"] = 256
    result = lmforge.train(recipe, tmp_path_factory.mktemp("runs") / "trained", progress=False)
    return Path(result["model"])
