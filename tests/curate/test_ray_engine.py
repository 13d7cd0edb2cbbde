"""`--engine ray` gives the local engine's results exactly: a real local Ray instance runs the same chunks."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from conftest import require, run_cli

ray = require("ray")
pytestmark = pytest.mark.slow

STDLIB = Path(sysconfig.get_paths()["stdlib"])


def _texts(n: int) -> list[str]:
    words = " ".join((STDLIB / m).read_text(encoding="utf-8") for m in ["difflib.py", "argparse.py"]).split()
    texts = [" ".join(words[i:i + 80]) for i in range(0, 80 * n, 80)][:n]
    return texts + texts[:5] + [t.replace(" the ", " a ", 1) for t in texts[10:15]]   # exact and near copies


@pytest.fixture(scope="module")
def ray_engine():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    from lmforge.curate.engine import get_engine

    yield get_engine("ray")
    ray.shutdown()


def test_minhash_and_groups_identical(ray_engine, monkeypatch):
    from lmforge.curate import dedup, ray_engine as re_mod
    from lmforge.curate.engine import get_engine

    monkeypatch.setattr(re_mod, "MINHASH_CHUNK", 97)   # many chunks, uneven last one
    texts = _texts(600)
    local = get_engine("local").minhash(texts, num_perm=128, ngram=5, seed=3)
    distributed = ray_engine.minhash(texts, num_perm=128, ngram=5, seed=3)
    assert distributed.dtype == local.dtype and np.array_equal(distributed, local)
    g_local = dedup.near_groups(texts, threshold=0.8, seed=3, signatures=local)
    g_ray = dedup.near_groups(texts, threshold=0.8, seed=3, signatures=distributed)
    assert np.array_equal(g_local, g_ray) and (g_local[600:] != -1).all()


def test_embeddings_identical(ray_engine, monkeypatch):
    from lmforge.curate import ray_engine as re_mod
    from lmforge.curate.engine import get_engine

    monkeypatch.setattr(re_mod, "EMBED_CHUNK", 23)
    texts = _texts(120)
    local = np.asarray(get_engine("local").embed(texts, progress=False))
    distributed = np.asarray(ray_engine.embed(texts, progress=False))
    assert distributed.shape == local.shape and np.array_equal(distributed, local)


def test_map_with_ray_engine_equals_local(ray_engine, tmp_path, monkeypatch):
    from lmforge.curate.mapping import build_map
    from lmforge.data.dataset import DatasetWriter

    ds = tmp_path / "ds"
    ds.mkdir()
    w = DatasetWriter(ds)
    for i, t in enumerate(_texts(300)):
        w.add({"id": f"r{i}", "text": t, "messages": None, "source": "stdlib", "split": "train"})
    w.close()
    local = build_map(ds, tmp_path / "local", engine="local", progress=False)
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))   # the Ray run must not reuse cached embeddings
    distributed = build_map(ds, tmp_path / "ray", engine="ray", progress=False)
    for name in ["points.parquet", "topics.json", "embeddings.npy"]:
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name
    assert local["stats"] == distributed["stats"]
    assert json.loads((tmp_path / "ray" / "map.json").read_text())["params"]["engine"] == "ray"
