"""`lmforge data ingest`: every input format, chat records, and bad input with one clear line, exit code 2
and no output left behind. The content hash and the split are recomputed here from their definitions in
docs/data.md, independently of lmforge's code."""

import hashlib
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import STDLIB, run_cli

from lmforge.data.dataset import Dataset


def _records(path):
    return list(Dataset(path).records())


def _rows(path):
    """The dataset's rows in dataset order, read with pyarrow alone (files in dataset.json's order)."""
    info = json.loads((path / "dataset.json").read_text())
    return [row for name in info["files"] for row in pq.read_table(path / name).to_pylist()]


def _content_hash(rows):
    """docs/data.md: SHA-256 over the records in dataset order, each its columns (id, text, messages, source,
    split) as JSON with sorted keys and non-ASCII kept, UTF-8, concatenated with nothing between."""
    h = hashlib.sha256()
    for row in rows:
        obj = {c: row[c] for c in ("id", "text", "messages", "source", "split")}
        h.update(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def _score(key, seed):
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()[:8], "big") / 2**64


def _expected_splits(keys, val_fraction, seed):
    """docs/data.md's split rule: validation when the key's score is below the fraction; then, for two or
    more records and 0 < fraction < 1, an empty split gets the first record at the edge of the other."""
    scores = [_score(k, seed) for k in keys]
    splits = ["validation" if s < val_fraction else "train" for s in scores]
    if len(keys) >= 2 and 0 < val_fraction < 1:
        if "validation" not in splits:
            splits[scores.index(min(scores))] = "validation"
        elif "train" not in splits:
            splits[scores.index(max(scores))] = "train"
    return splits


def test_jsonl_csv_parquet_and_chat(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "hello"}\n\n{"text": "wörld", "id": "w"}\n', encoding="utf-8")
    (tmp_path / "b.csv").write_text('text,label\n"multi\nline",1\nplain,2\n', encoding="utf-8")
    pq.write_table(pa.table({"text": ["from parquet"]}), tmp_path / "c.parquet")
    chat = {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
    (tmp_path / "d.jsonl").write_text(json.dumps(chat) + "\n", encoding="utf-8")
    out = tmp_path / "ds"
    run_cli("data", "ingest", tmp_path / "a.jsonl", tmp_path / "b.csv", tmp_path / "c.parquet",
            tmp_path / "d.jsonl", "-o", out, check=True)
    recs = _records(out)
    assert [r["text"] for r in recs if r["text"] is not None] == ["hello", "wörld", "multi\nline", "plain",
                                                                   "from parquet"]
    chats = [r for r in recs if r["messages"] is not None]
    assert chats[0]["messages"] == chat["messages"] and chats[0]["text"] is None
    info = json.loads((out / "dataset.json").read_text())
    assert info["counts"]["records"] == 6 and info["counts"]["chat"] == 1
    assert info["content_hash"] == _content_hash(_rows(out))
    # one changed byte in one input changes the hash (and the hash still follows the definition)
    (tmp_path / "b.csv").write_text('text,label\n"multi\nline",1\nplaim,2\n', encoding="utf-8")
    run_cli("data", "ingest", tmp_path / "a.jsonl", tmp_path / "b.csv", tmp_path / "c.parquet",
            tmp_path / "d.jsonl", "-o", tmp_path / "ds2", check=True)
    changed = json.loads((tmp_path / "ds2" / "dataset.json").read_text())["content_hash"]
    assert changed != info["content_hash"] and changed == _content_hash(_rows(tmp_path / "ds2"))


def _plant_sources(root, n_rows=150, n_files=40):
    """A JSONL file (rows with and without their own id) and a folder of text files."""
    lines = [json.dumps({"text": f"row {i}", **({"id": f"t{i}"} if i % 3 else {})}) for i in range(n_rows)]
    (root / "rows.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for i in range(n_files):
        (root / "notes" / f"sub{i % 4}").mkdir(parents=True, exist_ok=True)
        (root / "notes" / f"sub{i % 4}" / f"n{i}.txt").write_text(f"note {i}\n", encoding="utf-8")
    # split keys as docs/data.md defines them: "{file name}#{id}" for rows, the relative path for folder files
    row_ids = [f"t{i}" if i % 3 else f"rows.jsonl:{i + 1}" for i in range(n_rows)]    # own id, else name:line
    row_keys = {rid: f"rows.jsonl#{rid}" for rid in row_ids}
    file_keys = {f"sub{i % 4}/n{i}.txt": f"sub{i % 4}/n{i}.txt" for i in range(n_files)}
    return row_keys, file_keys


def test_split_follows_the_documented_rule(tmp_path):
    row_keys, file_keys = _plant_sources(tmp_path)
    run_cli("data", "ingest", tmp_path / "rows.jsonl", tmp_path / "notes", "-o", tmp_path / "ds",
            "--val-fraction", "0.1", "--seed", "3", check=True)
    got = {r["id"]: r["split"] for r in _rows(tmp_path / "ds")}
    keys = {**row_keys, **file_keys}
    assert set(got) == set(keys)
    expected = dict(zip(keys, _expected_splits(list(keys.values()), 0.1, 3)))
    assert got == expected
    assert 10 < sum(s == "validation" for s in got.values()) < 30      # the rule did split, at ~10%


@pytest.mark.parametrize("val_fraction,empty", [(0.02, "validation"), (0.97, "train")])
def test_split_rule_fills_an_empty_split(tmp_path, val_fraction, empty):
    """With few records, the hash alone can leave a split empty: the documented fallback then moves one."""
    names = [f"f{i}.txt" for i in range(200)]
    by_score = [n for n in names if (_score(n, 0) < val_fraction) == (empty == "train")][:4]
    assert len(by_score) == 4                               # four files that all hash into the other split
    (tmp_path / "src").mkdir()
    for n in by_score:
        (tmp_path / "src" / n).write_text(f"text of {n}\n")
    run_cli("data", "ingest", tmp_path / "src", "-o", tmp_path / "ds", "--val-fraction", str(val_fraction),
            check=True)
    rows = _rows(tmp_path / "ds")
    keys = sorted(by_score)                                 # folder files are read in sorted order
    assert [r["id"] for r in rows] == keys
    assert [r["split"] for r in rows] == _expected_splits(keys, val_fraction, 0)
    assert sum(r["split"] == empty for r in rows) == 1
    assert json.loads((tmp_path / "ds" / "dataset.json").read_text())["content_hash"] == _content_hash(rows)


def test_hash_and_split_do_not_depend_on_how_a_path_is_spelled(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    _plant_sources(data, n_rows=30, n_files=12)
    (tmp_path / "link").symlink_to(data, target_is_directory=True)
    spellings = [("data/rows.jsonl", "data/notes"), ("./data/rows.jsonl", "./data/notes/"),
                 (str(data / "rows.jsonl"), str(data / "notes")), ("link/rows.jsonl", "link/notes"),
                 (os.path.join("data", "..", "link", "rows.jsonl"), str(tmp_path / "link" / "notes"))]
    results = []
    for i, (rows_path, notes_path) in enumerate(spellings):
        run_cli("data", "ingest", rows_path, notes_path, "-o", f"out{i}", "--val-fraction", "0.3", check=True,
                cwd=tmp_path)
        rows = _rows(tmp_path / f"out{i}")
        results.append((json.loads((tmp_path / f"out{i}" / "dataset.json").read_text())["content_hash"],
                        [(r["id"], r["source"], r["split"]) for r in rows]))
    assert all(r == results[0] for r in results[1:])
    sources = {src for _, src, _ in results[0][1]}
    assert "rows.jsonl" in sources and "sub0/n0.txt" in sources    # relative to the given file or folder


def test_folder_with_globs_and_stable_hash(tmp_path):
    src = tmp_path / "src"
    (src / "pkg" / "__pycache__").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("x = 1\n")
    (src / "pkg" / "b.txt").write_text("notes\n")
    (src / "pkg" / "__pycache__" / "a.cpython.pyc").write_bytes(b"\0\1")
    (src / "skip.py").write_text("y = 2\n")
    run_cli("data", "ingest", src, "--include", "*.py", "--exclude", "skip.py", "-o", tmp_path / "d1", check=True)
    run_cli("data", "ingest", src, "--include", "*.py", "--exclude", "skip.py", "-o", tmp_path / "d2", check=True)
    assert [r["id"] for r in _records(tmp_path / "d1")] == ["pkg/a.py"]
    h1 = json.loads((tmp_path / "d1" / "dataset.json").read_text())["content_hash"]
    h2 = json.loads((tmp_path / "d2" / "dataset.json").read_text())["content_hash"]
    assert h1 == h2


@pytest.mark.parametrize("name,content,where,reason", [
    ("bad.jsonl", b'{"text": "ok"}\n{"text": "broken\n', "bad.jsonl:2", "malformed JSON"),
    ("nofield.jsonl", b'{"text": "ok"}\n{"body": "x"}\n', "nofield.jsonl:2", "no 'text' field (fields: body)"),
    ("latin1.txt", "caf\xe9\nna\xefve".encode("latin-1"), "latin1.txt", "not valid UTF-8"),
    ("bad.csv", b"text\nok\n\xff\xfe\n", "bad.csv", "not valid UTF-8 (byte 0xff at line 3"),
    ("notobj.jsonl", b'["a"]\n', "notobj.jsonl:1", "expected a JSON object"),
    ("badchat.jsonl", b'{"messages": [{"role": "user"}]}\n', "badchat.jsonl:1", "messages[0] needs"),
])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, name, content, where, reason):
    (tmp_path / name).write_bytes(content)
    out = tmp_path / "out"
    proc = run_cli("data", "ingest", tmp_path / name, "-o", out)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert where in lines[0] and reason in lines[0]
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary directory left either


def test_non_utf8_file_in_folder_is_named(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "good.py").write_text("ok = True\n")
    (tmp_path / "src" / "bad.py").write_bytes("# caf\xe9\n".encode("latin-1"))
    proc = run_cli("data", "ingest", tmp_path / "src", "-o", tmp_path / "out")
    assert proc.returncode == 2 and "bad.py" in proc.stderr and "line 1" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_missing_source_and_existing_output(tmp_path):
    proc = run_cli("data", "ingest", tmp_path / "nope.jsonl", "-o", tmp_path / "out")
    assert proc.returncode == 2 and "nope.jsonl: no such file or directory" in proc.stderr
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "out").mkdir()
    proc = run_cli("data", "ingest", tmp_path / "a.jsonl", "-o", tmp_path / "out")
    assert proc.returncode == 2 and "already exists" in proc.stderr


@pytest.mark.slow
def test_python_stdlib_corpus_split_by_file(tmp_path):
    run_cli("data", "ingest", "--corpus", "python-stdlib", "-o", tmp_path / "a", check=True)
    ds = Dataset(tmp_path / "a")
    files = {p.relative_to(STDLIB).as_posix() for p in STDLIB.rglob("*.py") if "site-packages" not in p.parts}
    split = {r["source"]: r["split"] for r in ds.records()}
    assert set(split) <= files and len(split) >= 0.99 * len(files) - 10  # only non-UTF-8 files are left out
    val = sum(1 for s in split.values() if s == "validation")
    assert 0.005 < val / len(split) < 0.05
    # deterministic: a second build is byte-for-byte the same content
    run_cli("data", "ingest", "--corpus", "python-stdlib", "-o", tmp_path / "b", check=True)
    assert Dataset(tmp_path / "b").content_hash == ds.content_hash


def test_moving_a_record_between_splits_spans_parquet_files(tmp_path, monkeypatch):
    """The fallback rewrites the written files: the moved record may sit in any of them."""
    import lmforge.data.dataset as dsmod

    monkeypatch.setattr(dsmod, "ROWS_PER_FILE", 3)
    writer = dsmod.DatasetWriter(tmp_path, buffer_rows=2)
    for i in range(10):
        writer.add({"id": f"r{i}", "text": f"text {i}", "messages": None, "source": "x.jsonl", "split": "train"})
    info = writer.close(resplit={7: "validation"})
    rows = _rows(tmp_path)
    assert len(info["files"]) > 2
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(10)]
    assert [r["split"] for r in rows] == ["train"] * 7 + ["validation"] + ["train"] * 2
    assert (info["counts"]["train"], info["counts"]["validation"]) == (9, 1)
    assert info["content_hash"] == _content_hash(rows)
