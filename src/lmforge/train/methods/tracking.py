"""Experiment trackers (train/tracking.py) fed from the events: TensorBoard always, MLflow / W&B when named."""

from lmforge.train.events import Event
from lmforge.train.methods.base import Method


class Tracking(Method):
    events = (Event.FIT_START, Event.STEP_END, Event.EVAL_END, Event.FIT_END)

    def __init__(self, names):
        self.names = list(names)
        self.trackers: list = []

    def apply(self, event, state) -> None:
        if event == Event.FIT_START:
            from lmforge.train.recipe import recipe_data
            from lmforge.train.tracking import make_trackers

            self.trackers = make_trackers(self.names, state.run_dir, recipe_data(state.recipe))
            state.log.listeners.extend(self.trackers)
            return
        if event == Event.STEP_END and state.step % state.spec.log_interval == 0:
            self._log({"train/loss": state.loss, "train/lr": state.lr, "train/grad_norm": state.grad_norm,
                       "train/tokens_per_s": getattr(state, "tokens_per_s", 0.0)}, state.step)
        elif event == Event.EVAL_END:
            self._log({"val/loss": state.last_eval["loss"], "val/bpb": state.last_eval["bpb"]}, state.step)
        elif event == Event.FIT_END:
            if state.final is not None:
                self._log({"val/final_loss": state.final["loss"], "val/final_bpb": state.final["bpb"]}, state.step)
            self.close()

    def _log(self, metrics, step) -> None:
        for t in self.trackers:
            t.log_metrics(metrics, step)

    def close(self) -> None:
        for t in self.trackers:
            t.close()
        self.trackers = []
