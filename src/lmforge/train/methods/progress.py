"""The rich progress bar: step, loss, last validation loss, throughput; rollbacks are printed above it."""

from lmforge.train.events import Event
from lmforge.train.methods.base import Method


class ProgressBar(Method):
    events = (Event.FIT_START, Event.STEP_END, Event.FIT_END)

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def match(self, event, state) -> bool:
        return self.enabled and event in self.events

    def apply(self, event, state) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        if event == Event.FIT_START:
            self.bar = Progress(
                TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("val {task.fields[val]}"),
                TextColumn("{task.fields[tps]:,.0f} tok/s"), TimeRemainingColumn())
            self.bar.start()
            self.task = self.bar.add_task("train", total=state.spec.max_steps, completed=state.step,
                                          loss=float("nan"), val="-", tps=0.0)
        elif event == Event.STEP_END:
            val = f"{state.last_eval['loss']:.3f}" if state.last_eval else "-"
            self.bar.update(self.task, completed=state.step, loss=state.loss, val=val,
                            tps=getattr(state, "tokens_per_s", 0.0))
        else:
            self.close()

    def say(self, text: str) -> None:
        if self.bar is not None:
            self.bar.console.print(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
