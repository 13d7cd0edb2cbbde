"""The tokenizer: exact round trips of arbitrary Unicode, and byte accounting that bits-per-byte relies on."""

from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.model.tokenizer import SPECIAL_TOKENS, Tokenizer


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


_CACHE = {}


def _tok(path):
    if path not in _CACHE:
        _CACHE[path] = Tokenizer.from_dir(path)
    return _CACHE[path]
