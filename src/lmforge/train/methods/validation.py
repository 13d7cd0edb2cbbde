"""Validation every `eval_interval` steps (not at the last step: FIT_END runs the full final evaluation)."""

from lmforge.train.events import Event
from lmforge.train.methods.base import Method
from lmforge.train.validation import evaluate_loss


class Validation(Method):
    events = (Event.STEP_END,)

    def match(self, event, state) -> bool:
        return event == Event.STEP_END and state.step % state.spec.eval_interval == 0 \
            and state.step < state.spec.max_steps and not state.rolled_back

    def apply(self, event, state) -> None:
        state.last_eval = evaluate(state, state.spec.eval_tokens)
        state.evaluated = True


def evaluate(state, max_tokens: int, model=None) -> dict:
    """Validation on the model itself (never the compiled wrapper: eval shapes differ from training's), or on
    `model` (the exported form of it: a LoRA run's merged model)."""
    return evaluate_loss(model or state.model, state.val_data, state.bytes_per_token, max_tokens=max_tokens,
                         precision=state.precision, device=state.device)
