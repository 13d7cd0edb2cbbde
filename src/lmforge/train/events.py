"""The events of training. `fit()` runs them in this order, and every method hooks onto them:

```
INIT                                   # setup() built the state; methods may reshape it
FIT_START                              # resume decided; the first step is state.step
while state.step < max_steps and not state.stop:
    BATCH_START                        # state.batch: this step's micro-batches; lr set
    for inputs, targets in state.batch:
        logits = forward(inputs)
        loss = state.loss_fn(logits, inputs, targets) / state.targets   # summed CE (or CE + KL, distilling)
        AFTER_FORWARD                  # state.micro_loss
        loss.backward()
        AFTER_BACKWARD
    BEFORE_OPTIMIZER_STEP              # state.loss is the step's mean; a method may set state.skip_update
    clip gradients; optimizer.step()   # unless state.skip_update
    state.step += 1
    STEP_END                           # logging, validation, the spike guard, checkpointing
    EVAL_END                           # only when validation ran this step (state.evaluated)
FIT_END                                # final validation, the exported model
```

A method (lmforge.train.methods) is a small object with `match(event, state) -> bool` and
`apply(event, state)`, plus `state_dict()` / `load_state_dict()` when it keeps state across a resume.
Within one event, methods run in the order setup() lists them.
"""

from enum import Enum


class Event(str, Enum):
    INIT = "init"
    FIT_START = "fit_start"
    BATCH_START = "batch_start"
    AFTER_FORWARD = "after_forward"
    AFTER_BACKWARD = "after_backward"
    BEFORE_OPTIMIZER_STEP = "before_optimizer_step"
    STEP_END = "step_end"
    EVAL_END = "eval_end"
    FIT_END = "fit_end"
