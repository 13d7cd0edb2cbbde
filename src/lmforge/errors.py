"""One error type for everything a user can get wrong; the CLI turns it into one line and an exit code."""

from __future__ import annotations


class LmforgeError(Exception):
    """A problem with the user's input or environment: says what, where and how to fix it."""

    exit_code = 2

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.format())

    def format(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class DataError(LmforgeError):
    """Bad input data: a malformed row, a missing field, an unreadable file."""


class RecipeError(LmforgeError):
    """A recipe that does not validate: unknown key, wrong type, impossible value."""


class ModelError(LmforgeError):
    """A model directory that cannot be loaded or does not match what is asked of it."""


class RequestError(LmforgeError):
    """A generation request that cannot be served: a sampling value out of range, a prompt longer than the
    model's context. `param` names the offending field (the server reports it in OpenAI's error shape)."""

    def __init__(self, message: str, *, param: str | None = None, **kwargs):
        self.param = param
        super().__init__(message, **kwargs)
