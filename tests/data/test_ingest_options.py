"""`lmforge data ingest` options through the real CLI, as docs/data.md documents them: --text-field, the
.tsv / .ndjson / .json readers, Parquet chat records (`messages`), --seed and --overwrite. The oracle is always
the planted input: what the files say, read back from the written Parquet with pyarrow."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli


def rows(dataset) -> list[dict]:
    info = json.loads((dataset / "dataset.json").read_text())
    return [r for f in info["files"] for r in pq.read_table(dataset / f).to_pylist()]


def texts(dataset) -> dict[str, str]:
    return {r["id"]: r["text"] for r in rows(dataset)}


def jsonl(path, objs) -> None:
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")


PLANTED = [{"id": f"t{i}", "body": f"ticket {i}: the printer on floor {i % 4} is jammed, again", "text": f"x{i}"}
           for i in range(6)]


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".json"])
def test_json_lines_suffixes_and_text_field(tmp_path, suffix):
    src = tmp_path / f"tickets{suffix}"
    jsonl(src, PLANTED)
    run_cli("data", "ingest", src, "-o", tmp_path / "body", "--text-field", "body", check=True)
    assert texts(tmp_path / "body") == {o["id"]: o["body"] for o in PLANTED}
    run_cli("data", "ingest", src, "-o", tmp_path / "default", check=True)   # the default field is `text`
    assert texts(tmp_path / "default") == {o["id"]: o["text"] for o in PLANTED}


def test_gzipped_json_lines(tmp_path):
    import gzip

    src = tmp_path / "tickets.jsonl.gz"
    src.write_bytes(gzip.compress("".join(json.dumps(o) + "\n" for o in PLANTED).encode()))
    run_cli("data", "ingest", src, "-o", tmp_path / "gz", "--text-field", "body", check=True)
    assert texts(tmp_path / "gz") == {o["id"]: o["body"] for o in PLANTED}


def test_text_field_missing_is_one_clear_error(tmp_path):
    src = tmp_path / "tickets.jsonl"
    jsonl(src, [{"id": "a", "body": "hello"}])
    proc = run_cli("data", "ingest", src, "-o", tmp_path / "out", "--text-field", "content")
    assert proc.returncode == 2
    assert f"{src}:1: no 'content' field (fields: body, id)" in proc.stderr and "--text-field" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_tsv_is_tab_separated(tmp_path):
    # cells with commas and quotes: read as CSV these would split; as TSV each row has two columns
    planted = {"tickets.tsv:2": 'a, b, and "c"', "tickets.tsv:3": "one,two,three", "tickets.tsv:4": "plain"}
    src = tmp_path / "tickets.tsv"
    src.write_text("note\tbody\n" + "".join(f"n{i}\t{t}\n" for i, t in enumerate(planted.values())),
                   encoding="utf-8")
    run_cli("data", "ingest", src, "-o", tmp_path / "out", "--text-field", "body", check=True)
    assert texts(tmp_path / "out") == planted


def test_parquet_messages_stay_structured(tmp_path):
    chats = [[{"role": "user", "content": f"question {i}?"}, {"role": "assistant", "content": f"answer {i}."}]
             for i in range(5)]
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    table = pa.table({"id": [f"c{i}" for i in range(5)], "messages": pa.array(chats, pa.list_(message))})
    pq.write_table(table, tmp_path / "chats.parquet")
    run_cli("data", "ingest", tmp_path / "chats.parquet", "-o", tmp_path / "out", check=True)
    got = rows(tmp_path / "out")
    assert {r["id"]: r["messages"] for r in got} == {f"c{i}": chats[i] for i in range(5)}
    assert all(r["text"] is None for r in got)
    counts = json.loads((tmp_path / "out" / "dataset.json").read_text())["counts"]
    assert counts["chat"] == 5 and counts["text"] == 0


N_ROWS, VAL = 400, 0.3


def _split(dataset) -> dict[str, str]:
    return {r["id"]: r["split"] for r in rows(dataset)}


def test_seed_same_bytes_and_different_split(tmp_path):
    src = tmp_path / "rows.jsonl"
    jsonl(src, [{"id": f"r{i}", "text": f"row number {i}"} for i in range(N_ROWS)])

    def ingest(name, seed):
        run_cli("data", "ingest", src, "-o", tmp_path / name, "--val-fraction", VAL, "--seed", seed, check=True)
        return tmp_path / name

    a, b, c = ingest("a", 1), ingest("b", 1), ingest("c", 2)
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:   # same seed, same bytes
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    split_a, split_c = _split(a), _split(c)
    assert split_a.keys() == split_c.keys() == {f"r{i}" for i in range(N_ROWS)}
    val_a = {i for i, s in split_a.items() if s == "validation"}
    val_c = {i for i, s in split_c.items() if s == "validation"}
    # each split is a Bernoulli(VAL) draw per row: within 4 standard deviations of VAL * N
    sd = math.sqrt(N_ROWS * VAL * (1 - VAL))
    for val in (val_a, val_c):
        assert abs(len(val) - VAL * N_ROWS) < 4 * sd
    # independent draws overlap in about VAL^2 * N rows; the same draw would overlap in all of them
    assert len(val_a & val_c) < VAL * N_ROWS - 4 * sd


def test_overwrite_refused_without_and_replaces_with(tmp_path):
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    jsonl(old, [{"id": "o", "text": "the old record"}])
    jsonl(new, [{"id": "n1", "text": "a new record"}, {"id": "n2", "text": "another new record"}])
    out = tmp_path / "out"
    run_cli("data", "ingest", old, "-o", out, check=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    proc = run_cli("data", "ingest", new, "-o", out)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before      # untouched

    run_cli("data", "ingest", new, "-o", out, "--overwrite", check=True)
    assert texts(out) == {"n1": "a new record", "n2": "another new record"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []   # no temporary left
