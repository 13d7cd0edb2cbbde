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
