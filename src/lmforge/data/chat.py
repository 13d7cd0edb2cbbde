"""Chat records as training tokens: the tokenizer's chat template rendered, with a per-token mask of what the
assistant wrote (the loss falls there only).

Two paths, one contract (the mask equals transformers' `return_assistant_tokens_mask` for a template whose
`{% generation %}` blocks hold each assistant message's content and the token that closes its turn):

- lmforge's own tokenizers (Tokenizer.has_lmforge_chat): built per message by id (encode_chat_with_mask), so
  message content can never become a role or end-of-turn token.
- any other tokenizer with a `chat_template` (a Llama-family directory transformers saved): the template is
  rendered with jinja2 as transformers renders it and tokenized as transformers tokenizes it (special tokens
  spelled in the text become those tokens, content included). The assistant spans are the template's
  `{% generation %}` blocks when it has them; otherwise each assistant message's span is what rendering the
  conversation up to and including it adds to rendering the conversation before it with the generation
  prompt (so the assistant header is left out), trailing whitespace dropped. A token is in the mask when its
  characters overlap a span.
"""

from __future__ import annotations

from lmforge.errors import DataError, ModelError


def render_chat(tokenizer, messages: list[dict]) -> tuple[list[int], list[bool]]:
    """(token ids, per-token "an assistant wrote this") for one conversation; no EOS is appended."""
    if not messages:
        raise DataError("a chat record needs at least one message")
    if tokenizer.has_lmforge_chat:
        return tokenizer.encode_chat_with_mask(messages)
    template = tokenizer.chat_template
    if template is None:
        raise ModelError("the tokenizer has no chat template and not lmforge's chat tokens",
                         hint="use a tokenizer directory whose tokenizer_config.json has a chat_template")
    return _render_template(tokenizer, template, messages)


def assistant_spans(tokenizer, template: str, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans an assistant wrote, in order."""
    from lmforge.model.tokenizer import render_chat_template

    variables = tokenizer.template_variables()
    text, marked = render_chat_template(template, messages, **variables)
    if marked:  # the template's author said where assistant turns are
        return text, marked
    spans = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before, _ = render_chat_template(template, messages[:k], add_generation_prompt=True, **variables)
        through, _ = render_chat_template(template, messages[: k + 1], **variables)
        if not (through.startswith(before) and text.startswith(through)):
            raise ModelError(f"the chat template does not render message {k} as an extension of the messages "
                             "before it, so its assistant turn cannot be located",
                             hint="mark assistant turns in the template with {% generation %} ... "
                                  "{% endgeneration %}")
        stop = len(through.rstrip())
        if stop > len(before):
            spans.append((len(before), stop))
    return text, spans


def _render_template(tokenizer, template: str, messages: list[dict]) -> tuple[list[int], list[bool]]:
    text, spans = assistant_spans(tokenizer, template, messages)
    enc = tokenizer.encode_rendered(text)
    mask, s = [], 0
    for start, stop in enc.offsets:
        while s < len(spans) and start >= spans[s][1]:
            s += 1
        mask.append(s < len(spans) and stop > spans[s][0] and start < spans[s][1])
    return list(enc.ids), mask
