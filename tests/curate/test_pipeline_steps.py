"""`lmforge curate` steps that need a map or an engine, through the real CLI, against planted truth:
semantic_dedup removes the planted near-copies (in embedding space) and nothing else, remove_tags removes exactly
the tagged ids, topic_cap leaves each topic the closed-form count (brute force over caps), `--set` overrides a
recipe key, and `--engine ray` writes the same dataset as the local engine."""

from __future__ import annotations

import json
import os
import shutil
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import require, run_cli
from fixtures_map import write_map

N = 400
STDLIB = Path(sysconfig.get_paths()["stdlib"])


def ids_of(dataset: Path) -> list[str]:
    info = json.loads((dataset / "dataset.json").read_text())
    return [i for f in info["files"] for i in pq.read_table(dataset / f, columns=["id"]).column("id").to_pylist()]


def curate(root: Path, recipe: dict, name: str, *args) -> tuple[set[str], dict]:
    (root / f"{name}.yaml").write_text(yaml.safe_dump(recipe))
    run_cli("curate", root / "dataset", "--recipe", root / f"{name}.yaml", "-o", root / name, *args, check=True)
    return set(ids_of(root / name)), json.loads((root / name / "report.json").read_text())


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("steps")
    truth = write_map(root, N)
    return root, truth


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_semantic_dedup_removes_planted_near_copies(planted):
    root, truth = planted
    ids = [r["id"] for r in truth.records]
    # Every record its own axis (cosine 0 to all others); then plant copies a little off their original's axis.
    emb = np.eye(N, dtype=np.float32)                                    # [N, N]
    near = {(50, 10): 0.2, (120, 300): 0.2, (7, 8): 0.1, (200, 201): 0.25}   # cosines 0.98, 0.98, 0.995, 0.97
    far = {(30, 31): 0.5, (60, 90): 0.4}                                  # cosines 0.894, 0.928: below 0.95
    for (orig, copy), eps in {**near, **far}.items():
        emb[copy] = _unit(emb[orig] + eps * np.eye(N, dtype=np.float32)[copy])
    map_dir = root / "semantic-map"
    shutil.copytree(truth.path, map_dir)
    np.save(map_dir / "embeddings.npy", emb)
    meta = json.loads((map_dir / "map.json").read_text())
    meta["embedding"]["dim"] = N
    (map_dir / "map.json").write_text(json.dumps(meta))
    cos = emb @ emb.T
    assert all(cos[a, b] > 0.95 for a, b in near) and all(cos[a, b] < 0.95 for a, b in far)

    kept, report = curate(root, {"steps": [{"semantic_dedup": {"threshold": 0.95}}]}, "semantic", "--map", map_dir)
    # dedup keeps the first record of a group in dataset order: row 10 before 50, 120 before 300, ...
    expected_removed = {ids[max(a, b)] for a, b in near}
    assert set(ids) - kept == expected_removed
    assert report["steps"][0]["removed"] == len(near)


def test_remove_tags_removes_exactly_the_tagged(planted):
    from lmforge.curate.mapping import MapArtifact

    root, truth = planted
    ids = [r["id"] for r in truth.records]
    map_dir = root / "tags-map"
    shutil.copytree(truth.path, map_dir)
    rng = np.random.default_rng(5)
    tags = {name: sorted(ids[i] for i in rng.choice(N, k, replace=False))
            for name, k in (("remove", 37), ("spam", 11), ("keep-me", 25))}
    MapArtifact(map_dir).write_tags(tags)
    kept, report = curate(root, {"steps": [{"remove_tags": {"tags": ["remove", "spam"]}}]}, "tags", "--map", map_dir)
    assert set(ids) - kept == set(tags["remove"]) | set(tags["spam"])
    assert report["steps"][0]["removed"] == len(set(tags["remove"]) | set(tags["spam"]))

    # --set overrides a recipe key: the recipe names the first map, --set map= the second, whose tags differ
    other = root / "tags-map-2"
    shutil.copytree(truth.path, other)
    MapArtifact(other).write_tags({"remove": tags["keep-me"], "spam": []})
    recipe = {"map": str(map_dir), "steps": [{"remove_tags": {"tags": ["remove", "spam"]}}]}
    kept, _ = curate(root, recipe, "tags-set", "--set", f"map={other}")
    assert set(ids) - kept == set(tags["keep-me"])
    kept, _ = curate(root, recipe, "tags-noset")
    assert set(ids) - kept == set(tags["remove"]) | set(tags["spam"])


def cap_oracle(sizes: dict[int, int], share: float) -> dict[int, int]:
    """The largest common cap c (brute force) with every topic's min(size, c) at most `share` of the total kept."""
    for c in range(max(sizes.values()), 0, -1):
        kept = {k: min(s, c) for k, s in sizes.items()}
        if max(kept.values()) <= share * sum(kept.values()):
            return kept
    raise AssertionError("no feasible cap")


def test_topic_cap_after_remove_tags_matches_closed_form(planted):
    from lmforge.curate.mapping import MapArtifact

    root, truth = planted
    ids = [r["id"] for r in truth.records]
    topic = dict(zip(ids, truth.clusters[:, 0].tolist()))
    map_dir = root / "cap-map"
    shutil.copytree(truth.path, map_dir)
    # thin two topics so the other two are over the cap (remove_tags runs first; topic_cap sees the rest)
    rng = np.random.default_rng(9)
    thin = [i for i in ids if (topic[i] == 1 and rng.random() < 0.7) or (topic[i] == 2 and rng.random() < 0.4)]
    MapArtifact(map_dir).write_tags({"thin": thin})
    survivors = Counter(topic[i] for i in ids if i not in set(thin))
    share = 0.3
    expected = cap_oracle(dict(survivors), share)
    assert any(expected[k] < survivors[k] for k in survivors), "precondition: the cap binds"

    recipe = {"seed": 0, "steps": [{"remove_tags": {"tags": ["thin"]}},
                                   {"topic_cap": {"max_share": share, "level": 0}}]}
    kept, report = curate(root, recipe, "capped", "--map", map_dir)
    assert not kept & set(thin)
    assert dict(Counter(topic[i] for i in kept)) == expected
    assert [s["removed"] for s in report["steps"]] == [len(thin), sum(survivors.values()) - sum(expected.values())]
    # --set seed= changes which records a capped topic keeps, not how many
    kept2, _ = curate(root, recipe, "capped-seed", "--map", map_dir, "--set", "seed=11")
    assert dict(Counter(topic[i] for i in kept2)) == expected and kept2 != kept


@pytest.mark.slow
def test_ray_engine_writes_the_local_engines_dataset(tmp_path, monkeypatch):
    require("ray")
    words = " ".join((STDLIB / m).read_text(encoding="utf-8") for m in ["difflib.py", "argparse.py"]).split()
    texts = [" ".join(words[i:i + 60]) for i in range(0, 60 * 150, 60)]
    assert len(words) > 60 * 150 and len(set(texts)) == 150
    texts += texts[:4] + [t.replace(" the ", " a ", 1) + " again" for t in texts[20:26]]   # exact and near copies

    def swapped(t: str) -> str:   # adjacent words swapped: no 5-gram survives, the meaning (embedding) does
        w = t.split()
        return " ".join(w[i + 1 - 2 * (i % 2)] if i + 1 - 2 * (i % 2) < len(w) else w[i] for i in range(len(w)))

    texts += [swapped(t) for t in texts[40:45]] + ["x = 1", "pass", "import os"]        # semantic copies, short
    src = tmp_path / "texts.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    run_cli("data", "ingest", src, "-o", tmp_path / "dataset", check=True)
    recipe = {"steps": [{"exact_dedup": None}, {"near_dedup": {"threshold": 0.7}},
                        {"semantic_dedup": {"threshold": 0.9}}, {"length": {"min_chars": 200}}]}
    local, local_report = curate(tmp_path, recipe, "local")
    # the Ray run gets its own cache (its embeddings are computed by Ray workers), sharing only the exported model
    cache = tmp_path / "ray-cache"
    shutil.copytree(Path(os.environ["LMFORGE_CACHE"]) / "embedders", cache / "embedders")
    monkeypatch.setenv("LMFORGE_CACHE", str(cache))
    distributed, ray_report = curate(tmp_path, recipe, "ray", "--engine", "ray")
    assert list((cache / "embeddings").iterdir()), "the Ray run computed (and cached) its own embeddings"
    assert [s["removed"] for s in local_report["steps"]] == [s["removed"] for s in ray_report["steps"]]
    # every step has work to do (the shares are not the point here; equality with the local engine is)
    assert [s["removed"] > 0 for s in local_report["steps"]] == [True] * 4, local_report["steps"]
    info = [json.loads((tmp_path / name / "dataset.json").read_text()) for name in ("local", "ray")]
    assert info[0]["content_hash"] == info[1]["content_hash"] and info[0]["files"] == info[1]["files"]
    for f in info[0]["files"]:
        assert (tmp_path / "local" / f).read_bytes() == (tmp_path / "ray" / f).read_bytes()
    assert local == distributed
