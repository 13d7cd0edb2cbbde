"""The tokenizer: exact round trips of arbitrary Unicode, byte accounting that bits-per-byte relies on, and the
BOS rule its own files state."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st
from planting import tokenizer_as_written_before_bos_rule
from tokenizers import Tokenizer as Backend

from lmforge.model.tokenizer import BOS, SPECIAL_TOKENS, Tokenizer

TEXT = "def f(x):\n    return x ** 2\n"


def test_special_tokens_and_files(small_tokenizer):
    tok = Tokenizer.from_dir(small_tokenizer)
    assert tok.vocab_size == 512
    for t in SPECIAL_TOKENS:
        assert tok.backend.token_to_id(t) is not None
    assert (small_tokenizer / "tokenizer_config.json").is_file()


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_roundtrip_arbitrary_unicode(small_tokenizer, text):
    tok = _tok(small_tokenizer)
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_token_bytes_reassemble_the_utf8(small_tokenizer, text):
    """Every token's bytes, concatenated, are exactly the text's UTF-8: bits per byte counts true bytes."""
    tok = _tok(small_tokenizer)
    assert b"".join(tok.token_bytes[i] for i in tok.encode(text, bos=True, eos=True)) == text.encode("utf-8")


def test_files_say_a_bos_starts_every_text(small_tokenizer):
    """The `tokenizers` library alone, reading tokenizer.json, adds BOS (its post-processor), and
    tokenizer_config.json says add_bos_token, so every reader of the files agrees with lmforge's trainer."""
    tok = Tokenizer.from_dir(small_tokenizer)
    peer = Backend.from_file(str(small_tokenizer / "tokenizer.json"))
    assert peer.encode(TEXT).ids == [peer.token_to_id(BOS), *peer.encode(TEXT, add_special_tokens=False).ids]
    assert tok.encode(TEXT, add_special_tokens=True) == peer.encode(TEXT).ids and tok.adds_bos
    config = json.loads((small_tokenizer / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is True and config["add_eos_token"] is False


def test_tokenizer_written_before_the_bos_rule_keeps_its_bos(small_tokenizer, tmp_path):
    """Older lmforge files state no BOS rule, though the trainer prepended BOS: lmforge still adds it, and
    saving such a tokenizer again writes the rule into the files."""
    old = tokenizer_as_written_before_bos_rule(small_tokenizer, tmp_path / "old")
    peer = Backend.from_file(str(old / "tokenizer.json"))
    assert peer.encode(TEXT).ids == peer.encode(TEXT, add_special_tokens=False).ids  # the files add nothing
    tok = Tokenizer.from_dir(old)
    assert tok.adds_bos and tok.encode(TEXT, add_special_tokens=True) == [peer.token_to_id(BOS), *peer.encode(TEXT).ids]
    tok.save(tmp_path / "resaved")
    assert Backend.from_file(str(tmp_path / "resaved" / "tokenizer.json")).encode(TEXT).ids[0] == peer.token_to_id(BOS)
    # without the old writer's explicit add_bos_token: false they are not lmforge's: transformers' default stands
    config = json.loads((old / "tokenizer_config.json").read_text())
    del config["add_bos_token"], config["add_eos_token"]
    (old / "tokenizer_config.json").write_text(json.dumps(config))
    stranger = Tokenizer.from_dir(old)
    assert stranger.bos_id == peer.token_to_id(BOS) and not stranger.adds_bos


_CACHE = {}


def _tok(path):
    if path not in _CACHE:
        _CACHE[path] = Tokenizer.from_dir(path)
    return _CACHE[path]
