"""Packing: records become [bos] tokens [eos]; chat records keep role markers as ids, and text that merely
contains a special token's spelling stays text."""

import json

import numpy as np

from lmforge.data.dataset import Dataset
from lmforge.data.ingest import ingest
from lmforge.data.pack import open_tokens, pack_split, tokenizer_hash
from lmforge.model.tokenizer import Tokenizer


def test_pack_text_and_chat(tmp_path, small_tokenizer):
    tok = Tokenizer.from_dir(small_tokenizer)
    rows = [{"text": "x = 1  # not a <|end|> token"},
            {"messages": [{"role": "user", "content": "hi <|assistant|>"}, {"role": "assistant", "content": "yo"}]}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest([tmp_path / "in.jsonl"], tmp_path / "ds", val_fraction=0.0, progress=False)
    packed = open_tokens(pack_split(Dataset(tmp_path / "ds"), tok, "train",
                                    tokenizer_hash=tokenizer_hash(small_tokenizer), progress=False))
    end, asst, user = (tok.backend.token_to_id(t) for t in ("<|end|>", "<|assistant|>", "<|user|>"))
    first = [tok.bos_id, *tok.encode(rows[0]["text"]), tok.eos_id]
    assert packed[: len(first)].tolist() == first and end not in first
    chat = packed[len(first):].tolist()
    assert chat[0] == tok.bos_id and chat[1] == user and chat[-1] == tok.eos_id
    assert chat.count(asst) == 1 and chat.count(end) == 2  # the "<|assistant|>" inside content is text
    assert tok.decode(chat, skip_special_tokens=False).startswith("<|bos|><|user|>\nhi <|assistant|><|end|>")
    assert np.asarray(packed).dtype == np.uint16


def test_pack_writes_loss_mask(tmp_path, small_tokenizer):
    """The mask beside the tokens: text tokens are targets except BOS; in a chat only what the assistant wrote
    (content and its <|end|>) is, not role markers, user text, or the EOS after the conversation."""
    from lmforge.data.pack import mask_path, open_mask

    tok = Tokenizer.from_dir(small_tokenizer)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi <|assistant|>"},
            {"role": "assistant", "content": "yo <|end|> there"}, {"role": "user", "content": "more"},
            {"role": "assistant", "content": "def f():\n    return 1"}]
    rows = [{"text": "x = 1\n"}, {"messages": chat}, {"text": "y = 2\n"}]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ingest([tmp_path / "in.jsonl"], tmp_path / "ds", val_fraction=0.0, progress=False)
    path = pack_split(Dataset(tmp_path / "ds"), tok, "train", tokenizer_hash=tokenizer_hash(small_tokenizer),
                      progress=False)
    tokens, mask = open_tokens(path).tolist(), open_mask(path)
    assert mask_path(path).is_file() and mask.dtype == np.uint8 and len(mask) == len(tokens)
    mask = mask.astype(bool).tolist()
    n_text = len(tok.encode("x = 1\n")) + 2
    assert mask[:n_text] == [False] + [True] * (n_text - 1)  # BOS is no target; the text and its EOS are
    assert mask[-n_text:] == [False] + [True] * (n_text - 1)
    chat_ids, chat_mask = tokens[n_text:-n_text], mask[n_text:-n_text]
    assert chat_ids[0] == tok.bos_id and chat_ids[-1] == tok.eos_id and not chat_mask[0] and not chat_mask[-1]
    written = tok.decode([i for i, m in zip(chat_ids, chat_mask) if m], skip_special_tokens=False)
    assert written == "yo <|end|> there<|end|>def f():\n    return 1<|end|>"
    roles = {tok.backend.token_to_id(f"<|{r}|>") for r in ("system", "user", "assistant")}
    assert not any(m for i, m in zip(chat_ids, chat_mask) if i in roles)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["targets"] == sum(mask) and meta["tokens"] == len(tokens) and meta["chat"] == 1


def test_open_mask_of_a_shard_without_one(tmp_path):
    from lmforge.data.pack import open_mask

    assert open_mask(tmp_path / "old-train.bin") is None
