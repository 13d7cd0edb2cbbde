"""metrics.jsonl rows: training every `log_interval` steps (and the last), validation at each EVAL_END."""

import time

from lmforge.train.events import Event
from lmforge.train.methods.base import Method


class Metrics(Method):
    events = (Event.FIT_START, Event.STEP_END, Event.EVAL_END, Event.FIT_END)

    def apply(self, event, state) -> None:
        now = time.perf_counter()
        if event == Event.FIT_START:
            self.t0, self.c0, self.window_t, self.window_tokens = now, time.process_time(), now, 0
            return
        if event == Event.FIT_END:
            if state.final is not None:
                f = state.final
                state.log.metric(step=state.step, final_val_loss=f["loss"], final_val_bpb=f["bpb"],
                                 val_tokens=f["tokens"])
            return
        if event == Event.EVAL_END:
            v = state.last_eval
            state.log.metric(step=state.step, val_loss=v["loss"], val_bpb=v["bpb"], val_tokens=v["tokens"])
            return
        self.window_tokens += state.tokens_per_step
        state.tokens_per_s = self.window_tokens / max(now - self.window_t, 1e-9)
        if state.step % state.spec.log_interval == 0 or state.step == state.spec.max_steps:
            state.log.metric(step=state.step, loss=state.loss, lr=state.lr, grad_norm=state.grad_norm,
                             tokens=state.tokens, tokens_per_s=state.tokens_per_s, elapsed_s=now - self.t0,
                             cpu_s=time.process_time() - self.c0)
            self.window_t, self.window_tokens = now, 0
