"""`lmforge data ingest`: every input format, chat records, and bad input with one clear line, exit code 2
and no output left behind."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import STDLIB, run_cli

from lmforge.data.dataset import Dataset


def _records(path):
    return list(Dataset(path).records())


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
    assert info["counts"]["train"] + info["counts"]["validation"] == 6
    assert len(info["content_hash"]) == 64


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
