"""A conversation with a local model: the history, a system prompt, and the trimming that keeps it inside the
context (the oldest turns go first; the system prompt always stays). `lmforge chat` is a REPL over this."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from lmforge.errors import RequestError
from lmforge.io import write_json


class ChatSession:
    def __init__(self, model, *, system: str | None = None, max_tokens: int = 256, **sampling):
        self.model, self.system, self.max_tokens, self.sampling = model, system, max_tokens, sampling
        self.messages: list[dict] = []

    def reset(self) -> None:
        self.messages = []

    def set_system(self, text: str | None) -> None:
        self.system = text or None

    def conversation(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.messages

    def send(self, text: str) -> Iterator[str]:
        """Stream the reply to `text`; the turn joins the history when the reply ends (or is interrupted: what
        was written by then is kept, as a chat window would show it)."""
        self.messages.append({"role": "user", "content": text})
        ids, max_tokens = self._fit()
        reply = ""
        try:
            for piece in self.model.stream_ids(ids, max_tokens=max_tokens, **self.sampling):
                reply += piece
                yield piece
        finally:
            self.messages.append({"role": "assistant", "content": reply})

    def _fit(self) -> tuple[list[int], int]:
        """The prompt ids, after dropping the oldest exchanges until the prompt leaves room for a reply (at
        least a short one); the reply's budget is what remains, up to max_tokens."""
        room = self.model.context_length
        ids = self.model.chat_prompt(self.conversation())
        while len(ids) + min(self.max_tokens, 16) > room and len(self.messages) > 1:
            self.messages = self.messages[2:]  # the oldest user turn and the reply to it
            ids = self.model.chat_prompt(self.conversation())
        if len(ids) >= room:
            self.messages.pop()
            raise RequestError(f"this message needs {len(ids)} tokens; the model's context is {room}",
                               hint="send a shorter message, or a shorter /system prompt")
        return ids, min(self.max_tokens, room - len(ids))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        write_json(path, {"model": str(self.model.path or self.model.name), "system": self.system,
                          "messages": self.messages})
        return path
