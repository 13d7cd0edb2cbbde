"""The studio's JSON API over a synthetic map with planted truth: every answer is checked against the planted
records, clusters and groups, or against a brute-force scan of the records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import require
from fixtures_map import DTYPES, SEARCH_WORD, is_chat, text_of, write_map

require("fastapi")
require("duckdb")

N = 1500


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    # small files and row groups, so that rows cross file and row-group boundaries
    return write_map(tmp_path_factory.mktemp("studio"), N, rows_per_file=200, buffer_rows=48, offset=(100.0, 40.0))


@pytest.fixture()
def client(planted):
    from fastapi.testclient import TestClient

    from lmforge.serve.studio import create_app

    (planted.path / "tags.json").unlink(missing_ok=True)
    return TestClient(create_app(planted.path, static_dir=None))


def column(client, name):
    r = client.get(f"/api/column/{name}")
    assert r.status_code == 200
    return np.frombuffer(r.content, dtype=DTYPES[r.headers["x-dtype"]])


def test_meta_and_columns_match_the_planted_points(client, planted):
    meta = client.get("/api/meta").json()
    assert meta["records"] == N and meta["levels"] == 3
    cols = {c["name"]: c for c in meta["columns"]}
    assert np.array_equal(column(client, "x"), planted.xy[:, 0])
    assert np.array_equal(column(client, "y"), planted.xy[:, 1])
    for k, name in enumerate("xy"):  # the page fits the map into view from these
        assert (cols[name]["min"], cols[name]["max"]) == (planted.xy[:, k].min(), planted.xy[:, k].max())
    for level in range(3):
        desc = cols[f"cluster_{level}"]
        ids = np.asarray(desc["categories"])[column(client, f"cluster_{level}")]
        assert np.array_equal(ids, planted.clusters[:, level])
    sources = np.asarray(cols["source"]["categories"])[column(client, "source")]
    assert sources.tolist() == [r["source"] for r in planted.records]
    assert np.array_equal(column(client, "length"), [len(text_of(r)) for r in planted.records])
    # short answers: the chats the fixture plants with the one-word answer "ok" (rows r % 10 == 8)
    planted_short = [r for r in range(N) if is_chat(r) and r % 10 == 8]
    assert all(planted.records[r]["messages"][-1]["content"].split()[0] == "ok" for r in planted_short)
    assert np.flatnonzero(column(client, "short_answer")).tolist() == planted_short
    assert cols["short_answer"]["true"] == len(planted_short) > 0
    # group status: 2 = redundant iff the record is in a group and is not its representative
    for name, group in (("exact_dup", planted.exact), ("near_dup", planted.near)):
        status = column(client, name)
        rows = np.arange(N)
        assert np.array_equal(status == 2, (group >= 0) & (group != rows))
        assert np.array_equal(status == 1, group == rows)
        assert cols[name]["redundant"] == int(((group >= 0) & (group != rows)).sum()) > 0
    # an exact copy's text really equals its representative's (the fixture's groups are honest)
    copy = int(np.flatnonzero(column(client, "exact_dup") == 2)[0])
    assert text_of(planted.records[copy]) == text_of(planted.records[int(planted.exact[copy])])
    assert client.get("/api/column/nope").status_code == 404


def test_topics_are_served_as_written(client, planted):
    topics = client.get("/api/topics").json()
    assert topics["levels"] == 3
    assert {(t["level"], t["cluster"]): t["label"] for t in topics["topics"]} == \
        {(lv, int(c)): planted.label(lv, int(c)) for lv in range(3) for c in np.unique(planted.clusters[:, lv])}


@pytest.mark.parametrize("row", [0, 1, 199, 200, 201, 777, 1003, N - 1])
def test_record_by_row_across_files_and_row_groups(client, planted, row):
    got = client.get(f"/api/record/{row}").json()
    want = {k: v for k, v in planted.records[row].items() if v is not None}
    assert got["record"] == want
    assert got["text"] == text_of(planted.records[row])
    assert got["point"]["cluster_2"] == planted.clusters[row, 2]


def test_record_out_of_range(client):
    assert client.get(f"/api/record/{N}").status_code == 404
    assert client.get("/api/record/-1").status_code == 404


@pytest.mark.parametrize("query", [SEARCH_WORD, SEARCH_WORD.upper(), "stars note", "here is a longer", "ok"])
def test_search_matches_a_brute_force_scan(client, planted, query):
    terms = query.lower().split()
    want = [r for r, rec in enumerate(planted.records) if all(t in text_of(rec).lower() for t in terms)]
    got = client.get("/api/search", params={"q": query}).json()
    assert got["count"] == len(want) > 0
    assert got["rows"] == want and not got["truncated"]


def test_search_finds_words_inside_chat_messages_and_caps_rows(client, planted):
    chat_hits = [r for r, rec in enumerate(planted.records)
                 if rec["messages"] is not None and SEARCH_WORD in text_of(rec)]
    assert chat_hits
    got = client.get("/api/search", params={"q": SEARCH_WORD, "limit": 3}).json()
    assert got["truncated"] and len(got["rows"]) == 3 and got["count"] > 3
    assert set(chat_hits) <= set(client.get("/api/search", params={"q": SEARCH_WORD}).json()["rows"])
    assert client.get("/api/search", params={"q": "no-such-word-anywhere"}).json() == \
        {"query": "no-such-word-anywhere", "count": 0, "truncated": False, "rows": []}
    assert client.get("/api/search", params={"q": "   "}).status_code == 400


def read_tags(planted):
    return json.loads((planted.path / "tags.json").read_text())["tags"]


def test_tags_are_saved_by_record_id(client, planted):
    ids = [r["id"] for r in planted.records]
    r = client.post("/api/tags/keep me", json={"rows": [5, 3, 3, 900]})
    assert r.status_code == 200 and r.json()["count"] == 3
    assert read_tags(planted) == {"keep me": [ids[3], ids[5], ids[900]]}
    client.post("/api/tags/keep me", json={"rows": [7], "mode": "add"})
    client.post("/api/tags/other", json={"rows": [1, 2]})
    assert sorted(read_tags(planted)["keep me"]) == sorted([ids[3], ids[5], ids[900], ids[7]])
    client.post("/api/tags/keep me", json={"rows": [5, 900], "mode": "remove"})
    assert client.get("/api/tags/keep me").json() == {"name": "keep me", "rows": [3, 7]}
    client.post("/api/tags/other", json={"rows": [10], "mode": "replace"})
    assert read_tags(planted)["other"] == [ids[10]]
    listing = {t["name"]: t["count"] for t in client.get("/api/tags").json()["tags"]}
    assert listing == {"keep me": 2, "other": 1}
    assert client.delete("/api/tags/other").status_code == 200
    assert list(read_tags(planted)) == ["keep me"]
    assert client.delete("/api/tags/other").status_code == 404
    assert client.get("/api/tags/other").status_code == 404


def test_tag_ids_the_map_does_not_hold_are_kept(client, planted):
    (planted.path / "tags.json").write_text(json.dumps({"tags": {"old": ["from-another-map", "rec-0000004"]}}))
    assert client.get("/api/tags/old").json()["rows"] == [4]
    client.post("/api/tags/old", json={"rows": [6]})
    assert read_tags(planted)["old"] == ["from-another-map", "rec-0000004", "rec-0000006"]


@pytest.mark.parametrize("body", [{"rows": [N]}, {"rows": [-3]}, {"rows": [1], "mode": "merge"}])
def test_bad_tag_requests_are_refused_and_nothing_is_written(client, planted, body):
    assert client.post("/api/tags/t", json=body).status_code == 400
    assert not (planted.path / "tags.json").exists()
    assert client.post("/api/tags/%20padded%20", json={"rows": [1]}).status_code == 400


def parse_jsonl(text):
    return [json.loads(line) for line in text.splitlines() if line]


def test_export_rows_and_tags_as_dataset_records(client, planted):
    rows = [1400, 3, 201, 3, 0]
    r = client.post("/api/export", json={"rows": rows, "name": "my pick"})
    assert r.status_code == 200 and 'filename="my_pick.jsonl"' in r.headers["content-disposition"]
    want = [{k: v for k, v in planted.records[i].items() if v is not None} for i in sorted(set(rows))]
    assert parse_jsonl(r.text) == want
    client.post("/api/tags/pick", json={"rows": rows})
    assert parse_jsonl(client.get("/api/export", params={"tag": "pick"}).text) == want
    assert client.get("/api/export", params={"tag": "missing"}).status_code == 404
    assert client.post("/api/export", json={"rows": [N + 5]}).status_code == 400


def test_export_is_readable_by_lmforge_ingest(client, planted, tmp_path):
    from lmforge.data.dataset import Dataset
    from lmforge.data.ingest import ingest

    rows = list(range(0, N, 7))
    out = tmp_path / "export.jsonl"
    out.write_text(client.post("/api/export", json={"rows": rows}).text)
    ingest([out], tmp_path / "ds", val_fraction=0.0, progress=False)
    got = [text_of(r) for r in Dataset(tmp_path / "ds").records()]
    assert sorted(got) == sorted(text_of(planted.records[i]) for i in rows)


def test_unusable_maps_are_one_line_errors(planted, tmp_path):
    from lmforge.errors import DataError
    from lmforge.serve.studio import create_app

    with pytest.raises(DataError, match="no map.json"):
        create_app(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("points.parquet", "topics.json"):
        (bad / name).write_bytes((planted.path / name).read_bytes())
    info = json.loads((planted.path / "map.json").read_text())
    (bad / "map.json").write_text(json.dumps({**info, "dataset": str(tmp_path / "gone")}))
    with pytest.raises(DataError, match="dataset .* is missing"):
        create_app(bad)
    (bad / "map.json").write_text(json.dumps({**info, "dataset_hash": "0" * 64}))
    with pytest.raises(DataError, match="dataset changed"):
        create_app(bad)


def test_studio_cli_reports_a_bad_map_in_one_line(tmp_path):
    from conftest import run_cli

    proc = run_cli("studio", tmp_path, "--no-open", "--port", "0")
    assert proc.returncode == 2
    assert "no map.json" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
