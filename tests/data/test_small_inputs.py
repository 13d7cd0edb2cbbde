"""Small and ordinary inputs work: files that start with a UTF-8 byte-order mark (as editors and spreadsheet
exports write them) and datasets of a handful of files, which still get a validation split to train on."""

import codecs
import json

import pytest
import yaml
from conftest import STDLIB, run_cli

from lmforge.data.dataset import Dataset

BOM = codecs.BOM_UTF8


def _ingest(tmp_path, *sources, **opts):
    args = [a for k, v in opts.items() for a in (f"--{k.replace('_', '-')}", v)]
    run_cli("data", "ingest", *sources, "-o", tmp_path / "ds", *args, check=True)
    return list(Dataset(tmp_path / "ds").records())


@pytest.mark.parametrize("name,body,field", [
    ("a.jsonl", '{"text": "café au lait"}\n{"text": "second"}\n', "text"),
    ("a.csv", "body,label\n\"café au lait\",1\nsecond,2\n", "body"),
    ("a.tsv", "body\tlabel\ncafé au lait\t1\nsecond\t2\n", "body"),
])
def test_tabular_file_with_bom(tmp_path, name, body, field):
    (tmp_path / name).write_bytes(BOM + body.encode("utf-8"))
    recs = _ingest(tmp_path, tmp_path / name, text_field=field)   # the BOM is not part of the first field name
    assert [r["text"] for r in recs] == ["café au lait", "second"]


def test_text_file_and_folder_with_bom(tmp_path):
    (tmp_path / "note.txt").write_bytes(BOM + "first line\nsecond \ufeff line\n".encode("utf-8"))
    assert [r["text"] for r in _ingest(tmp_path, tmp_path / "note.txt")] == ["first line\nsecond \ufeff line\n"]
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_bytes(BOM + b"x = 1\n")
    (tmp_path / "src" / "b.py").write_bytes(b"y = 2\n")
    recs = _ingest(tmp_path / "f", tmp_path / "src")
    assert {r["id"]: r["text"] for r in recs} == {"a.py": "x = 1\n", "b.py": "y = 2\n"}


def test_bom_only_at_the_start_of_a_file(tmp_path):
    """A BOM starting a later JSONL line is not a file's encoding mark: that line stays malformed JSON."""
    (tmp_path / "a.jsonl").write_bytes(BOM + b'{"text": "ok"}\n' + BOM + b'{"text": "x"}\n')
    proc = run_cli("data", "ingest", tmp_path / "a.jsonl", "-o", tmp_path / "ds")
    assert proc.returncode == 2 and "a.jsonl:2" in proc.stderr and "malformed JSON" in proc.stderr


def _files(root, n):
    """n real source files (the json package's modules, then email's), copied into a folder."""
    sources = sorted((STDLIB / "json").glob("*.py")) + sorted((STDLIB / "email").glob("*.py"))
    root.mkdir()
    for src in sources[:n]:
        (root / src.name).write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
    return root


@pytest.mark.parametrize("n", [2, 3, 5])
def test_a_handful_of_files_gets_both_splits(tmp_path, n):
    recs = _ingest(tmp_path, _files(tmp_path / "src", n))           # default --val-fraction 0.02
    splits = [r["split"] for r in recs]
    assert len(recs) == n and splits.count("validation") >= 1 and splits.count("train") >= 1
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert info["counts"]["validation"] == splits.count("validation")
    assert info["counts"]["train"] == splits.count("train")


def test_one_record_and_a_zero_fraction_are_taken_as_given(tmp_path):
    (tmp_path / "one.txt").write_text("only\n")
    assert [r["split"] for r in _ingest(tmp_path / "a", tmp_path / "one.txt")] == ["train"]
    recs = _ingest(tmp_path / "b", _files(tmp_path / "src", 3), val_fraction="0")
    assert [r["split"] for r in recs] == ["train"] * 3


def test_train_on_three_files(tmp_path):
    _ingest(tmp_path, _files(tmp_path / "src", 3))
    recipe = {"data": {"path": str(tmp_path / "ds")}, "tokenizer": {"vocab_size": 300},
              "model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                        "num_attention_heads": 2, "max_position_embeddings": 32},
              "train": {"seq_len": 32, "micro_batch_size": 4, "max_steps": 3, "warmup_steps": 1, "compile": False,
                        "precision": "fp32", "eval_tokens": 256, "final_eval_tokens": 1024}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    proc = run_cli("train", tmp_path / "r.yaml", "--out", tmp_path / "run", check=True)
    assert "3 steps" in proc.stdout and "bits/byte" in proc.stdout
    lineage = json.loads((tmp_path / "run" / "model" / "lmforge.json").read_text())
    assert lineage["steps"] == 3 and lineage["validation"]["tokens"] > 0
