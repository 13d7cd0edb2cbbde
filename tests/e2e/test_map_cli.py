"""`lmforge map` as a user runs it: a JSONL of real standard-library source with planted duplicates, ingested
and mapped by the real CLI in subprocesses; the artifact checked against the contract and the planted truths;
user errors end in one line, exit code 2 and nothing written."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

STDLIB = Path(sysconfig.get_paths()["stdlib"])
PACKAGES = ["json", "email", "logging", "http", "xml/dom", "asyncio", "concurrent/futures", "urllib"]


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    root = tmp_path_factory.mktemp("mapcli")
    texts = []
    for pkg in PACKAGES:
        for path in sorted((STDLIB / pkg).glob("*.py")):
            words = path.read_text(encoding="utf-8").split()
            texts += [" ".join(words[i:i + 80]) for i in range(0, min(len(words), 800), 80)]
    texts = texts[:280]
    texts.append(texts[17])            # planted exact duplicate of row 17 (row 280)
    words = texts[60].split()
    words[40] = "planted_change"
    texts.append(" ".join(words))      # planted near duplicate of row 60 (row 281)
    with open(root / "recs.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": f"r{i}", "text": t}) + "\n")
    run_cli("data", "ingest", root / "recs.jsonl", "-o", root / "ds", "--val-fraction", "0", check=True)
    proc = run_cli("map", root / "ds", "-o", root / "map", "--fit-sample", "200", check=True)
    return root, texts, proc


def test_summary_printed(mapped):
    _, texts, proc = mapped
    out = proc.stdout
    assert "wrote" in out and f"{len(texts):,}" in out and "duplicates" in out and "top topics" in out


def test_artifact_contract_and_planted_truths(mapped):
    import pyarrow.parquet as pq

    root, texts, _ = mapped
    info = json.loads((root / "map" / "map.json").read_text())
    ds_info = json.loads((root / "ds" / "dataset.json").read_text())
    assert info["format"] == "lmforge.map" and info["records"] == len(texts) == ds_info["counts"]["records"]
    assert info["dataset_hash"] == ds_info["content_hash"] and info["levels"] == 3
    pts = pq.read_table(root / "map" / "points.parquet").to_pydict()
    assert pts["row"] == list(range(len(texts))) and pts["id"] == [f"r{i}" for i in range(len(texts))]
    # the planted duplicates: the copy points at the original; nothing else is a near/exact copy of them
    assert pts["exact_dup"][280] == pts["exact_dup"][17] == 17
    assert pts["near_dup"][281] == 60
    redundant = [i for i, g in enumerate(pts["exact_dup"]) if g not in (-1, i)]
    assert 280 in redundant
    # nesting: each finer cluster inside exactly one coarser cluster
    h = np.stack([pts[f"cluster_{k}"] for k in range(3)], axis=1)
    for k in (1, 2):
        parents = {}
        for fine, coarse in zip(h[:, k], h[:, k - 1]):
            assert parents.setdefault(fine, coarse) == coarse
    counts = [len(set(h[:, k])) for k in range(3)]
    assert counts == sorted(counts) and counts[0] >= 2 and counts[2] > counts[0]
    # topics: one per (level, cluster), nothing missing, nothing extra
    topics = json.loads((root / "map" / "topics.json").read_text())["topics"]
    assert {(t["level"], t["cluster"]) for t in topics} == {(k, int(c)) for k in range(3) for c in set(h[:, k])}
    assert all(t["keywords"] for t in topics)


def test_embeddings_are_the_embed_modules(mapped):
    from lmforge.curate.embed import Embedder

    root, texts, _ = mapped
    emb = np.load(root / "map" / "embeddings.npy", mmap_mode="r")
    assert emb.shape == (len(texts), 384) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    rows = [0, 133, 281]
    ours = Embedder(max_seq_length=256).encode([texts[r] for r in rows])
    assert np.allclose(emb[rows], ours, atol=1e-5)


def test_user_errors_one_line_exit_2_nothing_written(mapped, tmp_path):
    root, _, _ = mapped
    before = (root / "map" / "map.json").read_bytes()
    for args, words in [
        (("map", root / "ds", "-o", root / "map"), "already exists"),
        (("map", tmp_path / "missing", "-o", tmp_path / "m"), "not a dataset"),
        (("map", root / "ds", "-o", tmp_path / "m", "--levels", "2"), "levels"),
        (("map", root / "ds", "-o", tmp_path / "m", "--model", tmp_path / "no-model"), "no-model"),
    ]:
        proc = run_cli(*args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], proc.stderr
    assert (root / "map" / "map.json").read_bytes() == before
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.tmp-*"))
