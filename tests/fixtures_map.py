"""A synthetic map artifact with planted ground truth, written exactly to the map contract (docs/curate.md).

Points sit in planted 2-D blobs: 4 coarse topics, each split in 2, each split in 2 again (3 nested levels, 16
leaves). Cluster ids are deliberately not 0..k-1 (level 1 uses 10.., level 2 uses 100..) so that nothing can
assume dense ids. Records are real dataset records written with lmforge's DatasetWriter, in an order unrelated
to the clusters; some are chat records, some contain the word "zanzibar" (for search), some are exact or near
copies of the record before them (for the duplicate signals). Everything is a pure function of the row, so
tests can recompute any record as their oracle.

Two options plant what a newcomer's map looks like (both off by default; nothing else changes with them):
`outliers=K` moves the last K rows into a tiny far island (their own topic at every level, labelled like
empty files, "(no words)"), as UMAP does with records unlike all others; `shared_leads=True` labels each
level-1 pair of siblings with the same leading keyword ("astronomy, stars" / "astronomy, planets").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TOPICS = ["astronomy", "baking", "cycling", "databases"]
SUBTOPICS = [["stars", "planets"], ["bread", "cakes"], ["mountains", "racing"], ["indexes", "queries"]]
SIDES = ["north", "south"]
CENTERS = np.array([[-9.0, 6.0], [8.0, 8.0], [-7.0, -8.0], [10.0, -5.0]])  # level-0 blob centres
L1_OFFSET = np.array([[-2.0, 0.0], [2.0, 0.0]])                             # level 1 splits left/right
L2_OFFSET = np.array([[0.0, 0.8], [0.0, -0.8]])                             # level 2 splits up/down
SIGMA = 0.22
SEARCH_WORD = "zanzibar"
OUTLIER_AT = np.array([-80.0, 0.0])  # the outlier island: far left of the blobs (x in [-12, 13]), > 3 IQR out
OUTLIER_IDS = (4, 18, 116)           # its cluster ids at levels 0, 1, 2
NO_WORDS = "(no words)"
DTYPES = {"float32": "<f4", "int32": "<i4", "uint8": "u1", "uint16": "<u2"}  # the API's X-Dtype -> numpy
FILLER = ("the of and to in is it that for on with as was by at this from or an be are which one all "
          "data model point text word sample value table index query light bread wheel orbit").split()


def leaf_ids(leaf: int) -> tuple[int, int, int]:
    """Cluster ids (level 0, 1, 2) of leaf 0..15."""
    a, b, c = leaf // 4, (leaf // 2) % 2, leaf % 2
    return a, 10 + 2 * a + b, 100 + 4 * a + 2 * b + c


def label_of(level: int, cid: int) -> tuple[str, list[str]]:
    if level == 0:
        kws = [TOPICS[cid], "overview"]
    elif level == 1:
        a, b = divmod(cid - 10, 2)
        kws = [SUBTOPICS[a][b], TOPICS[a]]
    else:
        a, rest = divmod(cid - 100, 4)
        b, c = divmod(rest, 2)
        kws = [f"{SUBTOPICS[a][b]}-{SIDES[c]}", SUBTOPICS[a][b]]
    return ", ".join(kws), kws


def planned_leaf(n: int, seed: int) -> np.ndarray:
    leaf = np.random.default_rng(seed).integers(0, 16, n)
    for r in range(1, n):  # copies sit with their original
        if _copy_of(r) is not None:
            leaf[r] = leaf[r - 1] if r % 97 == 96 else leaf[r - 2]
    return leaf


def _copy_of(r: int) -> int | None:
    """Planted duplicates: row r ≡ 96 (mod 97) repeats row r-1 exactly; r ≡ 88 (mod 89) repeats row r-2 with a
    word appended (a near duplicate). Originals and copies are text records."""
    if r % 97 == 96:
        return r - 1
    if r % 89 == 88 and r >= 2 and (r - 2) % 97 != 96:
        return r - 2
    return None


def is_chat(r: int) -> bool:
    return r % 5 == 3 and r % 97 not in (95, 96) and r % 89 not in (86, 88)


def make_record(r: int, leaf: int) -> dict:
    a, b, c = leaf // 4, (leaf // 2) % 2, leaf % 2
    sub = SUBTOPICS[a][b]
    h = (r * 2654435761) & 0xFFFFFFFF  # cheap deterministic "random" filler words
    filler = " ".join(FILLER[(h >> (k % 24) ^ k * 7) % len(FILLER)] for k in range(3 + r % 40))
    base = f"{TOPICS[a]} {sub} {sub}-{SIDES[c]} note {r}: {filler}"
    hit = r % 41 == 7
    split = "validation" if r % 10 == 0 else "train"
    if is_chat(r):
        answer = "ok" if r % 10 == 8 else f"here is a longer answer about {sub} and {filler}"
        if hit:
            answer += f" {SEARCH_WORD}"
        return {"id": f"rec-{r:07d}", "text": None, "source": "chat", "split": split,
                "messages": [{"role": "user", "content": f"question about {sub} {r}"},
                             {"role": "assistant", "content": answer}]}
    text = base + (" Zanzibar" if hit else "")
    return {"id": f"rec-{r:07d}", "text": text, "messages": None, "source": ["docs", "web"][r % 2], "split": split}


def make_records(n: int, leaf: np.ndarray):
    """All records, with the planted copies applied (a copy keeps its own id, source and split)."""
    records = []
    for r in range(n):
        rec = make_record(r, int(leaf[r]))
        src = _copy_of(r)
        if src is not None:
            orig = records[src]
            rec["text"] = orig["text"] if r % 97 == 96 else orig["text"] + " again"
        records.append(rec)
    return records


def text_of(rec: dict) -> str:
    if rec.get("messages") is not None:
        return "\n".join(m["content"] for m in rec["messages"])
    return rec["text"]


@dataclass
class PlantedMap:
    path: Path
    dataset: Path
    n: int
    xy: np.ndarray
    clusters: np.ndarray        # int32 [n, 3]
    exact: np.ndarray           # int64 [n] representative row or -1
    near: np.ndarray
    records: list = field(repr=False, default_factory=list)
    topics: list = field(repr=False, default_factory=list)
    outliers: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=np.int64))  # their rows
    labels: dict = field(repr=False, default_factory=dict)  # (level, cluster) -> label, when not label_of's

    def rows_of(self, level: int, cid: int) -> np.ndarray:
        return np.flatnonzero(self.clusters[:, level] == cid)

    def label(self, level: int, cid: int) -> str:
        return self.labels.get((level, cid)) or label_of(level, cid)[0]


def _groups(n: int, pairs) -> np.ndarray:
    group = np.full(n, -1, dtype=np.int64)
    for orig, copy in pairs:
        rep = group[orig] if group[orig] >= 0 else orig
        group[orig] = rep
        group[copy] = rep
    return group


def write_map(root: Path, n: int = 2000, *, seed: int = 0, rows_per_file: int | None = None,
              buffer_rows: int = 2048, embedding_dim: int = 16, keep_records: bool = True,
              offset: tuple[float, float] = (0.0, 0.0), outliers: int = 0, shared_leads: bool = False) -> PlantedMap:
    """Write ROOT/dataset (a real lmforge dataset) and ROOT/map (the map artifact); return the planted truth."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    import lmforge.data.dataset as dsmod

    root = Path(root)
    ds_dir, map_dir = root / "dataset", root / "map"
    ds_dir.mkdir(parents=True)
    map_dir.mkdir(parents=True)

    leaf = planned_leaf(n, seed)
    records = make_records(n, leaf)
    saved = dsmod.ROWS_PER_FILE
    dsmod.ROWS_PER_FILE = rows_per_file or saved  # small files exercise the row -> file lookup
    try:
        writer = dsmod.DatasetWriter(ds_dir, buffer_rows=buffer_rows)
        for rec in records:
            writer.add(rec)
        info = writer.close(name="synthetic")
    finally:
        dsmod.ROWS_PER_FILE = saved

    rng = np.random.default_rng(seed + 1)
    ids = np.array([leaf_ids(int(k)) for k in range(16)], dtype=np.int32)
    clusters = ids[leaf]
    a, b, c = leaf // 4, (leaf // 2) % 2, leaf % 2
    # `offset` moves the whole map: UMAP coordinates come at any scale and position
    xy = (np.asarray(offset) + CENTERS[a] + L1_OFFSET[b] + L2_OFFSET[c] + rng.normal(0, SIGMA, (n, 2))).astype(np.float32)
    out_rows = np.arange(n - outliers, n) if outliers else np.zeros(0, dtype=np.int64)
    if outliers:  # a tiny far island (its own draws: the other rows keep their positions)
        island = np.random.default_rng(seed + 2).normal(0, 0.05, (outliers, 2))
        xy[out_rows] = (np.asarray(offset) + OUTLIER_AT + island).astype(np.float32)
        clusters = clusters.copy()
        clusters[out_rows] = OUTLIER_IDS

    texts = [text_of(r) for r in records]
    pairs_exact = [(r - 1, r) for r in range(n) if _copy_of(r) is not None and r % 97 == 96]
    pairs_near = [(_copy_of(r), r) for r in range(n) if _copy_of(r) is not None]
    exact, near = _groups(n, pairs_exact), _groups(n, pairs_near)
    words = [t.split() for t in texts]
    short = np.array([r.get("messages") is not None and len(r["messages"][-1]["content"].split()) < 5
                      for r in records])
    table = pa.table({
        "row": pa.array(np.arange(n, dtype=np.int64)),
        "id": pa.array([r["id"] for r in records], pa.string()),
        "source": pa.array([r["source"] for r in records], pa.string()),
        "split": pa.array([r["split"] for r in records], pa.string()),
        "x": pa.array(xy[:, 0]), "y": pa.array(xy[:, 1]),
        **{f"cluster_{k}": pa.array(clusters[:, k]) for k in range(3)},
        "length": pa.array(np.array([len(t) for t in texts], dtype=np.int32)),
        "words": pa.array(np.array([len(w) for w in words], dtype=np.int32)),
        "short_answer": pa.array(short),
        "repetition": pa.array(np.array([1 - len(set(w)) / max(1, len(w)) for w in words], dtype=np.float32)),
        "exact_dup": pa.array(exact), "near_dup": pa.array(near), "semantic_dup": pa.array(near),
    })
    pq.write_table(table, map_dir / "points.parquet")

    topics, labels = [], {}
    for level in range(3):
        for cid in np.unique(clusters[:, level]):
            members = clusters[:, level] == cid
            if int(cid) == OUTLIER_IDS[level] and outliers:
                label, kws = NO_WORDS, []
            elif level == 1 and shared_leads:  # siblings share their first keyword: the topic
                kws = label_of(level, int(cid))[1][::-1]
                label = ", ".join(kws)
            else:
                label, kws = label_of(level, int(cid))
            if (int(cid) == OUTLIER_IDS[level] and outliers) or (level == 1 and shared_leads):
                labels[level, int(cid)] = label
            parent = None if level == 0 else int(clusters[members][0, level - 1])
            cx, cy = xy[members].mean(axis=0)
            topics.append({"level": level, "cluster": int(cid), "parent": parent, "label": label, "keywords": kws,
                           "size": int(members.sum()), "x": float(cx), "y": float(cy)})
    (map_dir / "topics.json").write_text(json.dumps({"levels": 3, "topics": topics}))
    emb = rng.normal(size=(n, embedding_dim)).astype(np.float32)
    np.save(map_dir / "embeddings.npy", emb / np.linalg.norm(emb, axis=1, keepdims=True))
    (map_dir / "map.json").write_text(json.dumps({
        "format": "lmforge.map", "version": 1, "dataset": str(ds_dir.resolve()), "dataset_hash": info["content_hash"],
        "records": n, "embedding": {"model": "synthetic", "dim": embedding_dim, "max_seq_length": 256}, "levels": 3,
        "signals": ["length", "words", "short_answer", "repetition", "exact_dup", "near_dup", "semantic_dup"],
        "params": {"synthetic": True, "seed": seed}}))
    return PlantedMap(map_dir, ds_dir, n, xy, clusters, exact, near,
                      records if keep_records else [], topics if keep_records else [], out_rows, labels)
