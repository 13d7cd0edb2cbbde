"""`train(recipe, out)`: the run directory's life around fit(): refuse what cannot continue, set up, fit,
evaluate, export. The loop itself is fit.py; what happens inside it is methods/ on events.py's events.

Running the same command again on the same run directory resumes it from its newest intact checkpoint; a
finished run says so; a changed recipe is refused unless only the keys in recipe.RESUMABLE changed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lmforge import __version__
from lmforge.errors import RecipeError
from lmforge.train.checkpoint import checkpoint_dirs, latest_intact
from lmforge.train.dist import barrier, shutdown
from lmforge.train.events import Event
from lmforge.train.fit import fit, train_step  # noqa: F401  (train_step: the one-step API tests and benchmarks use)
from lmforge.train.methods import run_event
from lmforge.train.recipe import RUN_RECIPE, Recipe, check_resume, recipe_data, save_run_recipe
from lmforge.train.runlog import NullLog, RunLog
from lmforge.train.setup import build_model  # noqa: F401  (re-exported: the demo builds its model the same way)


def existing_run(run_dir: Path, recipe: Recipe, resume: bool) -> bool:
    """Whether `run_dir` holds a run to continue; refuses a recipe that would change its trajectory."""
    exists = (run_dir / RUN_RECIPE).is_file() or bool(checkpoint_dirs(run_dir))
    if resume and not exists:
        raise RecipeError("nothing to resume: no recipe.yaml or checkpoints", where=str(run_dir),
                          hint="drop --resume to start this run")
    if exists:
        check_resume(run_dir, recipe)
    return exists


def finished_summary(run_dir: Path, recipe: Recipe) -> dict[str, Any] | None:
    """The summary of a run that already reached max_steps and exported its model, or None."""
    from lmforge.model.hf import read_lineage

    path = latest_intact(run_dir, warn=False)
    if path is None or int(path.name.split("-")[1]) < recipe.train.max_steps:
        return None
    lineage = read_lineage(run_dir / "model")
    if lineage.get("steps") != recipe.train.max_steps:
        return None
    return {"model": run_dir / "model", "validation": lineage["validation"], "steps": lineage["steps"],
            "tokens": lineage["tokens"], "finished_already": True, "resumed_from": lineage["steps"],
            "interrupted": False}


def train(recipe: Recipe, out: str | Path, *, resume: bool = False, progress: bool = True,
          on_prepared=None, source: dict | None = None, methods: list | None = None) -> dict[str, Any]:
    """Train `recipe` into run directory `out` (continuing it if it holds this run); returns a summary.
    `source` ({recipe_file, overrides}) is what a fresh run records in overrides.yaml for later resumes.
    `methods`: extra lmforge.train.methods.Method objects, run after the default ones on every event."""
    from lmforge.train.setup import setup

    run_dir = Path(out)
    exists = existing_run(run_dir, recipe, resume)
    if exists and (done := finished_summary(run_dir, recipe)) is not None:
        return done
    base_sha256 = weights_sha256(recipe.init_from) if recipe.lora is not None else None
    state = setup(recipe, run_dir, progress=progress, methods=methods)
    if on_prepared is not None:
        on_prepared(state.prepared, state.model, state.val_data, state.bytes_per_token)
    if state.world.is_main:  # only now: a recipe that fails to prepare leaves nothing behind
        run_dir.mkdir(parents=True, exist_ok=True)
        save_run_recipe(run_dir, recipe, resume=exists, source=source)
    barrier(state.world)
    state.log = RunLog(run_dir) if state.world.is_main else NullLog()
    t0 = time.perf_counter()
    try:
        fit(state)
        if state.stop:
            state.log.event("interrupted", step=state.step, signal=state.stop_signal)
            run_event(Event.FIT_END, state)
            return summary(state, None, time.perf_counter() - t0)
        train_seconds = time.perf_counter() - t0
        from lmforge.train.methods.validation import evaluate

        exported = exported_model(state)
        state.final = evaluate(state, recipe.train.final_eval_tokens, model=exported)
        model_dir = export(state, exported, base_sha256) if state.world.is_main else None
        state.log.event("finished", step=state.step, final_val_loss=state.final["loss"])
        run_event(Event.FIT_END, state)
        return summary(state, model_dir, train_seconds)
    finally:
        for method in state.methods:
            if hasattr(method, "close"):
                method.close()
        state.log.close()
        shutdown(state.world)


def weights_sha256(model_dir: str | Path) -> dict[str, str]:
    """sha256 of every weight file of a model directory: a LoRA run checks its frozen base never changed."""
    from lmforge.io import sha256_file

    return {p.name: sha256_file(p) for p in sorted(Path(model_dir).glob("*.safetensors"))}


def exported_model(state):
    """The model a run exports: the trained one, or for a LoRA run the fp32 init_from base with the adapters
    merged in (over a quantized base the adapters were trained against int8/int4 weights, so the final
    validation is measured on this merged model, not on the one that trained)."""
    from lmforge.model.lora import lora_layers

    if not lora_layers(state.model):
        return state.model
    from lmforge.model.hf import load_model
    from lmforge.model.lora import add_lora, adapter_state_dict, load_adapter_state_dict, merge_lora

    merged = add_lora(load_model(state.recipe.init_from), state.recipe.lora)
    load_adapter_state_dict(merged, adapter_state_dict(state.model), "the trained adapters")
    return merge_lora(merged).to(state.device).eval()


def export(state, model, base_sha256: dict | None = None) -> Path:
    from lmforge.model.hf import save_pretrained

    prep, recipe = state.prepared, state.recipe
    lineage = {
        "lmforge_version": __version__,
        "dataset": {"path": str(prep.dataset.path), "content_hash": prep.dataset.content_hash},
        "sources": [{"name": s.spec.label(), "path": str(s.dataset.path), "content_hash": s.dataset.content_hash}
                    for s in prep.sources],
        "tokenizer": {"path": str(prep.tokenizer_dir)},
        "init_from": recipe.init_from,
        "recipe": recipe_data(recipe),
        "run": str(state.run_dir.resolve()),
        "steps": state.step,
        "tokens": state.tokens,
        "validation": state.final,
    }
    if recipe.lora is not None:
        from lmforge.model.lora import save_adapter

        if weights_sha256(recipe.init_from) != base_sha256:
            raise RecipeError("the base model's weight files changed during the LoRA run", where=recipe.init_from,
                              hint="another process wrote to init_from; retrain from an unchanging copy")
        lineage["lora"] = {"adapter": str((state.run_dir / "adapter").resolve()), "base": recipe.init_from,
                           "base_sha256": base_sha256, "trainable_parameters": state.trainable_parameters,
                           "parameters": state.model.config.num_parameters()}
        save_adapter(state.model, state.run_dir / "adapter", recipe.lora, base=recipe.init_from, lineage=lineage)
    return save_pretrained(model, state.run_dir / "model", tokenizer=prep.tokenizer, lineage=lineage,
                           generation={"do_sample": True, "temperature": 0.8, "top_p": 0.95})


def summary(state, model_dir, train_seconds: float) -> dict[str, Any]:
    import torch

    return {"model": model_dir, "validation": state.final, "steps": state.step, "tokens": state.tokens,
            "train_seconds": train_seconds, "resumed_from": state.resumed_from or 0,
            "precision": state.precision, "compiled": state.compiled, "threads": torch.get_num_threads(),
            "device": str(state.device), "interrupted": state.stop, "finished_already": False}
