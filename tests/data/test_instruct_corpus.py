"""python-stdlib-instruct: the standard library's documented public functions as chat records, checked against
the functions themselves (inspect reads their source independently of the corpus's ast walk)."""

import ast
import inspect
import json
import shutil
import textwrap

import pytest

from lmforge.data.chat import render_chat
from lmforge.data.corpora import INSTRUCT_MAX_LINES, build_corpus, cached_corpus
from lmforge.data.dataset import Dataset
from lmforge.data.ingest import ingest
from lmforge.model.tokenizer import Tokenizer

NAME = "python-stdlib-instruct"


@pytest.fixture(scope="module")
def corpus() -> Dataset:
    return Dataset(cached_corpus(NAME, progress=False))


@pytest.fixture(scope="module")
def records(corpus) -> list[dict]:
    return list(corpus.records())


def by_name(records, file: str, name: str) -> dict:
    found = [r for r in records if r["source"] == file and r["id"].endswith(f":{name}")]
    assert len(found) == 1, f"{file} {name}: {len(found)} records"
    return found[0]


def test_count_and_shape(corpus, records):
    assert 1_000 <= len(records) <= 50_000 and corpus.info["counts"]["chat"] == len(records)
    assert corpus.count("train") > 0 and corpus.count("validation") > 0
    assert len({r["id"] for r in records}) == len(records)
    for r in records:
        assert r["text"] is None and [m["role"] for m in r["messages"]] == ["user", "assistant"]
        user, answer = (m["content"] for m in r["messages"])
        assert user.startswith("Write a") and len(answer.splitlines()) <= INSTRUCT_MAX_LINES
        (node,) = ast.parse(answer).body  # the answer is exactly one (dedented) function
        assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_")
        assert f"`{node.name}(" in user and ast.get_docstring(node)
        assert not {"test", "tests", "idle_test"} & set(r["source"].split("/")[:-1])


def test_records_are_ingested_chat_records(tmp_path, records, small_tokenizer):
    """The same shape `data ingest` gives a chat JSONL file, and every record renders with its answer as the
    only assistant tokens."""
    sample = records[::97]
    (tmp_path / "chat.jsonl").write_text("".join(
        json.dumps({"id": r["id"], "messages": r["messages"]}) + "\n" for r in sample))
    ingest([tmp_path / "chat.jsonl"], tmp_path / "ds", val_fraction=0.0, progress=False)
    ingested = list(Dataset(tmp_path / "ds").records())
    assert [{**r, "source": None, "split": None} for r in ingested] == \
        [{**r, "source": None, "split": None} for r in sample]
    tok = Tokenizer.from_dir(small_tokenizer)
    for r in records:
        ids, mask = render_chat(tok, r["messages"])
        written = tok.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=False)
        assert written == r["messages"][1]["content"] + "<|end|>"


@pytest.mark.parametrize("module,qualname", [("textwrap", "dedent"), ("shutil", "which"),
                                             ("textwrap", "TextWrapper.wrap")])
def test_known_function_is_its_real_source(records, module, qualname):
    mod = __import__(module)
    obj = mod
    for part in qualname.split("."):
        obj = getattr(obj, part)
    rec = by_name(records, f"{module}.py", qualname)
    user, answer = (m["content"] for m in rec["messages"])
    assert answer == textwrap.dedent(inspect.getsource(obj)).rstrip() + "\n"
    first = " ".join(inspect.getdoc(obj).split("\n\n")[0].split())  # the docstring's first paragraph
    assert f"`{qualname.split('.')[-1]}(" in user and user.endswith(first)
    assert all(p in user for p in inspect.signature(obj).parameters)


def test_build_is_deterministic(tmp_path, corpus):
    a = build_corpus(NAME, tmp_path / "a", progress=False)
    b = build_corpus(NAME, tmp_path / "b", progress=False)
    assert a["content_hash"] == b["content_hash"] == corpus.content_hash
    shutil.rmtree(tmp_path / "a")
    shutil.rmtree(tmp_path / "b")


def test_splits_do_not_share_a_source_file(records):
    train = {r["source"] for r in records if r["split"] == "train"}
    validation = {r["source"] for r in records if r["split"] == "validation"}
    assert train and validation and not train & validation
