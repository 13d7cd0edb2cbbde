"""Byte-level BPE tokenizer: trained and run by Hugging Face `tokenizers`, saved in the layout
`transformers.AutoTokenizer` loads (tokenizer.json + tokenizer_config.json, chat template included)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Iterable, Iterator

from lmforge.errors import ModelError

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLES = ("system", "user", "assistant")
END_OF_TURN = "<|end|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, *(f"<|{r}|>" for r in ROLES), END_OF_TURN]

# One turn per role marker, each closed by <|end|>; a generation prompt opens the assistant's turn.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@functools.lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-in character for each byte, inverted: char -> byte value."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _written_before_bos_rule(backend, config: dict) -> bool:
    """The files of an lmforge tokenizer saved before it wrote its BOS rule (lmforge up to 88917f8): no
    post-processor and `add_bos_token: false`, although the trainer started every document with BOS."""
    return (backend.post_processor is None and config.get("add_bos_token") is False
            and config.get("tokenizer_class") == "PreTrainedTokenizerFast" and config.get("bos_token") == BOS
            and [backend.id_to_token(i) for i in range(len(SPECIAL_TOKENS))] == SPECIAL_TOKENS)


def _bos_template(backend, bos: str):
    """A post-processor that starts every text (and each of a pair) with `bos`, in tokenizer.json, where both
    `tokenizers` and transformers' tokenizers read it."""
    from tokenizers import processors

    return processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                         special_tokens=[(bos, backend.token_to_id(bos))])


class Tokenizer:
    """A thin surface over `tokenizers.Tokenizer` with the special tokens lmforge relies on."""

    def __init__(self, backend, config: dict | None = None):
        self.backend = backend
        # Text that merely contains "<|eos|>" is text, not a control token: special tokens enter a sequence
        # only by id (encode(bos=..., add_special_tokens=...), encode_chat). Not saved to tokenizer.json, so
        # transformers is unaffected.
        self.backend.encode_special_tokens = True
        self.config = config or {}
        self.bos_id = self._special_id("bos_token", BOS)
        self.eos_id = self._special_id("eos_token", EOS)
        self.pad_id = self._special_id("pad_token", PAD)
        # What encode(add_special_tokens=True) adds is tokenizer.json's post-processor, as in transformers (which
        # ignores tokenizer_config.json's add_bos_token when tokenizer.json exists). Older lmforge files keep the
        # BOS their models were trained with.
        if _written_before_bos_rule(backend, self.config):
            self.backend.post_processor = _bos_template(backend, BOS)

    def _special_id(self, key: str, default: str) -> int | None:
        token = self.config.get(key, default)
        if isinstance(token, dict):  # older transformers write {"content": ..., ...}
            token = token.get("content")
        return self.backend.token_to_id(token) if token else None

    # --- training and files -------------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2, length: int | None = None,
              show_progress: bool = True) -> "Tokenizer":
        from tokenizers import Tokenizer as Backend
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size < 256 + len(SPECIAL_TOKENS) + 1:
            raise ModelError(f"vocab_size {vocab_size} is too small",
                             hint=f"a byte-level BPE needs at least {256 + len(SPECIAL_TOKENS) + 1}")
        backend = Backend(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress,
        )
        backend.train_from_iterator(texts, trainer, length=length)
        backend.post_processor = _bos_template(backend, BOS)  # documents start with BOS, so prompts do too
        return cls(backend, {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD})

    @classmethod
    def from_dir(cls, path: str | Path) -> "Tokenizer":
        from tokenizers import Tokenizer as Backend

        path = Path(path)
        file = path / "tokenizer.json"
        if not file.is_file():
            raise ModelError("no tokenizer.json", where=str(path),
                             hint="train one with `lmforge tokenizer train` or copy it into the model directory")
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        return cls(Backend.from_file(str(file)), config)

    def save(self, path: str | Path, *, model_max_length: int | None = None) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(path / "tokenizer.json"))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.id_to_token(self.bos_id),
            "eos_token": self.id_to_token(self.eos_id),
            "pad_token": self.id_to_token(self.pad_id),
            # what tokenizer.json's post-processor does (all transformers reads), said again for older readers
            "add_bos_token": self.adds_bos,
            "add_eos_token": self.adds_eos,
            "clean_up_tokenization_spaces": False,
            "chat_template": self.config.get("chat_template", CHAT_TEMPLATE),
        }
        if model_max_length:
            config["model_max_length"] = model_max_length
        (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    # --- encoding -----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def id_to_token(self, i: int | None) -> str | None:
        return None if i is None else self.backend.id_to_token(i)

    def encode(self, text: str, *, add_special_tokens: bool = False, bos: bool = False,
               eos: bool = False) -> list[int]:
        """Token ids of `text`. add_special_tokens applies the tokenizer's own rule (its post-processor, e.g.
        BOS first), as transformers' `tokenizer(text)` does; bos/eos add those tokens by hand."""
        ids = self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    @functools.cached_property
    def adds_bos(self) -> bool:
        """Whether the tokenizer's own rule starts every text with BOS (the trainer packs documents so)."""
        return self.bos_id is not None and self._added()[:1] == [self.bos_id]

    @functools.cached_property
    def adds_eos(self) -> bool:
        return self.eos_id is not None and self._added()[int(self.adds_bos):][-1:] == [self.eos_id]

    def _added(self) -> list[int]:
        """The special tokens the post-processor puts around any text (those of the empty text)."""
        return self.backend.encode("", add_special_tokens=True).ids

    def encode_batch(self, texts: list[str]) -> Iterator[list[int]]:
        for enc in self.backend.encode_batch(texts, add_special_tokens=False):
            yield enc.ids

    def encode_chat(self, messages: list[dict], *, add_generation_prompt: bool = False) -> list[int]:
        """Token ids of the chat template's rendering, built per message so that message content can never
        inject a role or end-of-turn token."""
        ids = [self.bos_id] if self.bos_id is not None else []
        end = self.backend.token_to_id(END_OF_TURN)
        for m in messages:
            role = self.backend.token_to_id(f"<|{m['role']}|>")
            if role is None:
                raise ModelError(f"unknown chat role {m['role']!r}", hint=f"roles are {', '.join(ROLES)}")
            ids += [role, *self.encode("\n" + m["content"]), end, *self.encode("\n")]
        if add_generation_prompt:
            ids += [self.backend.token_to_id("<|assistant|>"), *self.encode("\n")]
        return ids

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = True) -> str:
        import jinja2

        template = jinja2.Environment().from_string(self.config.get("chat_template", CHAT_TEMPLATE))
        return template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                               bos_token=self.id_to_token(self.bos_id) or "")

    @functools.cached_property
    def token_bytes(self) -> list[bytes]:
        """The UTF-8 bytes each token stands for (b"" for special tokens).

        Used to report loss in bits per byte and to heal a prompt's last token.
        """
        special = {t.content for t in self.backend.get_added_tokens_decoder().values() if t.special}
        alphabet = _byte_level_alphabet()
        out = []
        for i in range(self.vocab_size):
            tok = self.backend.id_to_token(i)
            if tok is None or tok in special:
                out.append(b"")
            elif all(c in alphabet for c in tok):
                out.append(bytes(alphabet[c] for c in tok))
            else:  # not a byte-level vocabulary (e.g. SentencePiece): fall back to decoding
                out.append(self.backend.decode([i], skip_special_tokens=False).encode("utf-8"))
        return out
