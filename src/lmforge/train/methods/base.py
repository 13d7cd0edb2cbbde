"""What every method is: it picks the events it acts on and keeps its state where checkpoints see it."""

from __future__ import annotations

from typing import Any

from lmforge.train.events import Event


class Method:
    """Subclasses set `events` (or override `match`) and implement `apply`. State that must survive a
    resume goes through `state_dict` / `load_state_dict`; `name` keys it in the checkpoint."""

    events: tuple[Event, ...] = ()

    @property
    def name(self) -> str:
        return type(self).__name__

    def match(self, event: Event, state) -> bool:
        return event in self.events

    def apply(self, event: Event, state) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        pass


def run_event(event: Event, state) -> None:
    for method in state.methods:
        if method.match(event, state):
            method.apply(event, state)
