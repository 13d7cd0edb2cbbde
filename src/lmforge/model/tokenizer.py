"""Byte-level BPE tokenizer: trained and run by Hugging Face `tokenizers`, saved in the layout
`transformers.AutoTokenizer` loads (tokenizer.json + tokenizer_config.json, chat template included)."""

from __future__ import annotations

import contextvars
import functools
import json
from pathlib import Path
from typing import Iterable, Iterator

from lmforge.errors import ModelError

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLES = ("system", "user", "assistant")
END_OF_TURN = "<|end|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, *(f"<|{r}|>" for r in ROLES), END_OF_TURN]

# One turn per role marker, each closed by <|end|>; a generation prompt opens the assistant's turn. The
# {% generation %} block marks what an assistant is trained to write (its content and the <|end|> that stops
# it), so transformers' `return_assistant_tokens_mask` (and TRL's assistant-only loss) work on lmforge's files.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ '<|assistant|>\n' }}"
    "{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
# The template lmforge wrote before it marked assistant turns; it renders the same text.
CHAT_TEMPLATE_UNMARKED = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


# (rendered blocks so far, spans found) while render_chat_template runs; None otherwise.
_GENERATION_SPANS: contextvars.ContextVar = contextvars.ContextVar("lmforge_generation_spans", default=None)


@functools.lru_cache(maxsize=16)
def compile_chat_template(template: str):
    """A chat template compiled the way transformers compiles it (sandboxed, trim_blocks and lstrip_blocks,
    loop controls, its `tojson`, `raise_exception` and `strftime_now`), so a Hugging Face template renders the
    same text here as there; plus the `{% generation %}` tag, whose spans render_chat_template reports."""
    import datetime

    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_span"), [], [], body).set_lineno(lineno)

        def _span(self, caller):
            text = caller()
            track = _GENERATION_SPANS.get()
            if track is not None:  # the blocks yielded so far are exactly the text before this one
                blocks, spans = track
                start = sum(map(len, blocks))
                spans.append((start, start + len(text)))
            return text

    def raise_exception(message):
        raise ModelError(f"chat template: {message}")

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ModelError(f"chat template does not compile: {e.message} (line {e.lineno})") from None


def render_chat_template(template: str, messages: list[dict], *, add_generation_prompt: bool = False,
                         **variables) -> tuple[str, list[tuple[int, int]]]:
    """The template's text for `messages` and the character spans of its `{% generation %}` blocks."""
    compiled = compile_chat_template(template)
    blocks: list[str] = []
    spans: list[tuple[int, int]] = []
    token = _GENERATION_SPANS.set((blocks, spans))
    try:
        for block in compiled.generate(messages=messages, add_generation_prompt=add_generation_prompt, **variables):
            blocks.append(block)
    finally:
        _GENERATION_SPANS.reset(token)
    return "".join(blocks), spans


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
        template_file = path / "chat_template.jinja"  # where newer transformers save it
        if template_file.is_file() and not config.get("chat_template"):
            config["chat_template"] = template_file.read_text(encoding="utf-8")
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
        """Token ids of lmforge's chat template's rendering, built per message so that message content can
        never inject a role or end-of-turn token."""
        return self.encode_chat_with_mask(messages, add_generation_prompt=add_generation_prompt)[0]

    def encode_chat_with_mask(self, messages: list[dict], *,
                              add_generation_prompt: bool = False) -> tuple[list[int], list[bool]]:
        """encode_chat's ids and, per id, whether an assistant wrote it: the tokens of its content and the
        <|end|> that closes its turn, never a role marker or another role's text. These are the tokens that
        overlap the template's `{% generation %}` block, as transformers' assistant mask counts them: the
        token that carries the newline after <|assistant|> is in only where it also carries content."""
        ids = [self.bos_id] if self.bos_id is not None else []
        mask = [False] * len(ids)
        end = self.backend.token_to_id(END_OF_TURN)
        newline = self.encode("\n")
        for m in messages:
            role = self.backend.token_to_id(f"<|{m['role']}|>")
            if role is None or m["role"] not in ROLES:
                raise ModelError(f"unknown chat role {m['role']!r}", hint=f"roles are {', '.join(ROLES)}")
            body = self.backend.encode("\n" + m["content"], add_special_tokens=False)
            mine = m["role"] == "assistant"
            ids += [role, *body.ids, end, *newline]
            mask += [False, *(mine and stop > 1 for _, stop in body.offsets), mine, *[False] * len(newline)]
        if add_generation_prompt:
            ids += [self.backend.token_to_id("<|assistant|>"), *newline]
            mask += [False] * (1 + len(newline))
        return ids, mask

    def encode_rendered(self, text: str):
        """A rendered chat template's text as transformers tokenizes it: special tokens spelled in the text
        become those tokens, and no post-processor tokens are added. Returns the backend's Encoding (ids and
        offsets)."""
        saved = self.backend.encode_special_tokens
        self.backend.encode_special_tokens = False
        try:
            return self.backend.encode(text, add_special_tokens=False)
        finally:
            self.backend.encode_special_tokens = saved

    def encode_chat_prompt(self, messages: list[dict]) -> list[int]:
        """The ids a model is prompted with to write the next assistant turn: lmforge's chat built by id, any
        other tokenizer's own template rendered with its generation prompt."""
        if self.has_lmforge_chat:
            return self.encode_chat(messages, add_generation_prompt=True)
        if self.chat_template is None:
            raise ModelError("the tokenizer has no chat template", hint="chat needs a tokenizer_config.json with a "
                             "chat_template; use `lmforge generate` to continue plain text")
        return list(self.encode_rendered(self.apply_chat_template(messages, add_generation_prompt=True)).ids)

    @property
    def chat_template(self) -> str | None:
        """The template in tokenizer_config.json (or chat_template.jinja); the "default" one of a named list."""
        template = self.config.get("chat_template")
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default")
        return template or None

    @functools.cached_property
    def has_lmforge_chat(self) -> bool:
        """Whether chats render as lmforge's template, which encode_chat builds by id: lmforge's role and
        end-of-turn tokens, and lmforge's template or none (a tokenizer that merely shares the role tokens'
        spelling, as Phi-3's does, renders with its own template instead)."""
        tokens = [f"<|{r}|>" for r in ROLES] + [END_OF_TURN]
        return (all(self.backend.token_to_id(t) is not None for t in tokens)
                and self.chat_template in (None, CHAT_TEMPLATE, CHAT_TEMPLATE_UNMARKED))

    def template_variables(self) -> dict[str, str]:
        """The special tokens a chat template may name (bos_token, ...), as transformers passes them."""
        out = {}
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            token = self.config.get(key)
            if isinstance(token, dict):
                token = token.get("content")
            if isinstance(token, str):
                out[key] = token
        if "bos_token" not in out and self.bos_id is not None and self.has_lmforge_chat:  # files without a config
            out["bos_token"] = self.id_to_token(self.bos_id)
        return out

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], *, add_generation_prompt: bool = True) -> str:
        text, _ = render_chat_template(self.chat_template or CHAT_TEMPLATE, messages,
                                       add_generation_prompt=add_generation_prompt, **self.template_variables())
        return text

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
