"""The loss-spike guard: on a non-finite loss, or one more than `z` standard deviations above the mean of
the last `window` steps (and at least `min_rise` above it, relatively), the update is skipped, the run rolls
back to the newest intact checkpoint, the data cursor moves past every batch drawn since that checkpoint
(the window that led to the spike), and the learning rate is scaled by `lr_factor` for `cooldown_steps`.

Batches derive from (seed, draw index) alone, so skipping data is moving `state.data_position`; a rerun
that reaches the same spike makes the same decision, so training stays deterministic.
"""

from __future__ import annotations

import math

from lmforge.errors import RecipeError
from lmforge.train.checkpoint import latest_intact, load_checkpoint
from lmforge.train.events import Event
from lmforge.train.methods.base import Method


class SpikeGuard(Method):
    events = (Event.BATCH_START, Event.BEFORE_OPTIMIZER_STEP, Event.STEP_END)

    def __init__(self, spec):
        self.spec = spec
        self.history: list[float] = []   # losses of the last `window` accepted steps
        self.rollbacks = 0
        self.skipped: list[list[int]] = []  # [first, last) draw indices passed over
        self.cooldown_until = 0
        self.pending: dict | None = None

    def is_spike(self, loss: float) -> str | None:
        if not math.isfinite(loss):
            return f"non-finite loss ({loss})"
        if len(self.history) < self.spec.min_history:
            return None
        mean = sum(self.history) / len(self.history)
        std = math.sqrt(sum((x - mean) ** 2 for x in self.history) / len(self.history))
        if loss > mean + self.spec.z * std and loss > mean * (1 + self.spec.min_rise):
            return f"loss {loss:.4f} is {(loss - mean) / max(std, 1e-12):.1f} standard deviations above the " \
                   f"mean {mean:.4f} of the last {len(self.history)} steps"
        return None

    def apply(self, event, state) -> None:
        if event == Event.BATCH_START:
            state.lr_scale = self.spec.lr_factor if state.step < self.cooldown_until else 1.0
        elif event == Event.BEFORE_OPTIMIZER_STEP:
            reason = self.is_spike(state.loss)
            if reason is None:
                self.history = (self.history + [state.loss])[-self.spec.window:]
            else:
                state.skip_update = True
                self.pending = {"reason": reason, "step": state.step + 1, "loss": state.loss,
                                "resume_at": state.data_position + state.spec.grad_accum}
        elif self.pending is not None:
            self.roll_back(state, self.pending)
            self.pending = None

    def roll_back(self, state, spike: dict) -> None:
        path = latest_intact(state.run_dir)
        if path is None or self.rollbacks >= self.spec.max_rollbacks:
            raise RecipeError(f"training diverged at step {spike['step']}: {spike['reason']}, after "
                              f"{self.rollbacks} rollbacks", where=str(state.run_dir),
                              hint="lower train.lr or raise train.warmup_steps (or train.spike_guard.max_rollbacks)")
        rollbacks, skipped = self.rollbacks + 1, self.skipped
        load_checkpoint(path, state)  # restores this guard's saved state too; what follows re-applies today's
        skip = [state.data_position, spike["resume_at"]]
        self.rollbacks, self.skipped = rollbacks, skipped + [skip]
        self.cooldown_until = state.step + self.spec.cooldown_steps
        state.data_position = spike["resume_at"]
        state.rolled_back = True
        row = state.log.event("rollback", step=spike["step"], to_step=state.step, skip=skip,
                              reason=spike["reason"], loss=spike["loss"])
        state.say(f"[yellow]rollback[/] at step {row['step']} to step {row['to_step']}: {spike['reason']}; "
                  f"skipping micro-batches {skip[0]}-{skip[1] - 1}")

    def state_dict(self) -> dict:
        return {"history": self.history, "rollbacks": self.rollbacks, "skipped": self.skipped,
                "cooldown_until": self.cooldown_until}

    def load_state_dict(self, sd: dict) -> None:
        self.history = list(sd.get("history", []))
        self.rollbacks = sd.get("rollbacks", 0)
        self.skipped = [list(s) for s in sd.get("skipped", [])]
        self.cooldown_until = sd.get("cooldown_until", 0)
