"""Methods: small objects that act on training events (lmforge.train.events), one file each.

`default_methods(recipe)` is the list setup() installs, in the order they run within an event."""

from lmforge.train.methods.base import Method, run_event


def default_methods(state) -> list[Method]:
    from lmforge.train.methods.checkpointing import Checkpointing
    from lmforge.train.methods.metrics import Metrics
    from lmforge.train.methods.progress import ProgressBar
    from lmforge.train.methods.spike_guard import SpikeGuard
    from lmforge.train.methods.tracking import Tracking
    from lmforge.train.methods.validation import Validation

    spec = state.spec
    methods: list[Method] = [Metrics()]
    if state.recipe.mask is not None:  # first after metrics: what validation and checkpoints see is masked
        from lmforge.train.methods.pruning_mask import PruningMask

        methods.append(PruningMask(state.recipe.mask))
    if state.world.is_main:
        methods.append(Tracking(spec.trackers))
    if spec.spike_guard.enabled:
        methods.append(SpikeGuard(spec.spike_guard))
    methods += [Validation(), Checkpointing(), ProgressBar(state.show_progress and state.world.is_main)]
    return methods


__all__ = ["Method", "run_event", "default_methods"]
