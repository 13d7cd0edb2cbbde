"""Checkpoints as events: restore the newest intact one at FIT_START (auto-resume), save every
`checkpoint_interval` steps, at the last step, and when a signal asked the run to stop (after EVAL_END when
validation ran at that step)."""

from lmforge.train.checkpoint import checkpoint_dirs, latest_intact, load_checkpoint, save_checkpoint
from lmforge.train.dist import barrier
from lmforge.train.events import Event
from lmforge.train.methods.base import Method


class Checkpointing(Method):
    events = (Event.FIT_START, Event.STEP_END, Event.EVAL_END)

    def match(self, event, state) -> bool:
        return event in self.events and not state.rolled_back

    def apply(self, event, state) -> None:
        spec = state.spec
        if event == Event.FIT_START:
            self.resume(state)
            return
        if event == Event.STEP_END and state.evaluated:
            return  # save after EVAL_END, so a kill cannot lose a validation row the checkpoint has passed
        if state.step % spec.checkpoint_interval == 0 or state.step == spec.max_steps or state.stop:
            self.save(state)

    def save(self, state) -> None:
        if state.world.is_main:
            val = state.last_eval["loss"] if state.evaluated else None
            save_checkpoint(state, keep=state.spec.keep_checkpoints, keep_best=state.spec.keep_best, val_loss=val)
        barrier(state.world)

    def resume(self, state) -> None:
        path = latest_intact(state.run_dir, warn=state.world.is_main)
        initial = state.needs_initial_checkpoint and not checkpoint_dirs(state.run_dir)
        barrier(state.world)  # every rank decided on the same directory before rank 0 writes into it
        if path is not None:
            load_checkpoint(path, state)
            state.resumed_from = state.step
            state.log.truncate_metrics_after(state.step)
            state.log.event("resume", step=state.step, checkpoint=path.name, **state.run_facts())
            return
        state.log.event("start", step=0, **state.run_facts())
        if initial:
            self.save(state)  # the spike guard's rollback target before the first interval
