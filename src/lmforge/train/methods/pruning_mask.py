"""Hold a pruning mask fixed while training (a recipe's `mask:`, a file `lmforge prune` or the lottery loop
wrote): pruned weights are zeroed at the start, their gradients are zeroed before every optimizer step (so
clipping and Adam's moments never see them), and they are zeroed again after it (an optimizer such as Muon
spreads an update across a whole matrix). As open_lth does, the mask multiplies the weights on every step;
nothing else in the model changes, so the trained model is a plain one with exact zeros.

The mask file's sha256 is part of this method's checkpointed state: a resume with a different mask is refused.
"""

from __future__ import annotations

import torch

from lmforge.errors import RecipeError
from lmforge.train.events import Event
from lmforge.train.methods.base import Method


class PruningMask(Method):
    events = (Event.INIT, Event.BEFORE_OPTIMIZER_STEP, Event.STEP_END)

    def __init__(self, path: str):
        from lmforge.compress.prune import load_masks
        from lmforge.io import sha256_file

        self.masks = load_masks(path)  # refuses a missing file, by name
        self.path, self.sha256 = path, sha256_file(path)
        self.weights: dict[str, torch.Tensor] = {}

    def apply(self, event: Event, state) -> None:
        if event == Event.INIT:
            from lmforge.compress.prune import linear_weights

            self.weights = linear_weights(state.model)
            missing = sorted(set(self.masks) - set(self.weights))
            if missing:
                raise RecipeError(f"the mask names weights this model lacks: {missing[:3]}", where=self.path,
                                  hint="a mask belongs to a model of the same shape (the one it was pruned from)")
            self.masks = {k: m.to(self.weights[k].device) for k, m in self.masks.items()}
            self.zero_weights()
        elif event == Event.BEFORE_OPTIMIZER_STEP:
            for name, mask in self.masks.items():
                grad = self.weights[name].grad
                if grad is not None:
                    grad.mul_(mask)
        else:
            self.zero_weights()

    @torch.no_grad()
    def zero_weights(self) -> None:
        for name, mask in self.masks.items():
            self.weights[name].mul_(mask)

    def state_dict(self) -> dict:
        return {"sha256": self.sha256}

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("sha256") not in (None, self.sha256):
            raise RecipeError("the mask file changed since this run's checkpoint", where=self.path,
                              hint="restore the mask the run started with, or train a new run")
