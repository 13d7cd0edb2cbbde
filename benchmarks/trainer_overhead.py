"""What the trainer's machinery costs: the full trainer (events and methods, spike guard on, TensorBoard on,
metrics logged every 10 steps, a checkpoint every 100 steps) against the bare loop (the same step functions:
draw, forward, summed loss, backward, clip, optimizer step) on the same recipe, model and data, in one run.

    python benchmarks/trainer_overhead.py [--recipe tiny-code-stdlib] [--steps 200] [--rounds 2] [--precision fp32]

Writes benchmarks/results/trainer_overhead.json. Rounds alternate; each figure is the median round. Setup
(preparing data, torch.compile's first compilation) is outside the timed part of both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # busy-waiting OpenMP threads collapse on shared cores

import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="tiny-code-stdlib")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--precision", default=None, help="override train.precision (auto | bf16 | fp32)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "trainer_overhead.json"))
    args = ap.parse_args()

    from lmforge.io import machine_name
    from lmforge.train.fit import clip_and_step, draw_batch, fit, micro_loss, set_lr
    from lmforge.train.loss import count_targets
    from lmforge.train.recipe import load_recipe
    from lmforge.train.runlog import RunLog
    from lmforge.train.schedule import lr_at
    from lmforge.train.setup import setup

    overrides = [f"train.max_steps={args.steps}", "train.checkpoint_interval=100", "train.log_interval=10",
                 f"train.eval_interval={args.steps + 1}", "train.spike_guard.enabled=true"]
    if args.precision:
        overrides.append(f"train.precision={args.precision}")
    recipe = load_recipe(args.recipe, overrides)
    spec = recipe.train
    tmp = Path(tempfile.mkdtemp(prefix="lmforge-overhead-"))

    def full(round_no: int) -> float:
        run_dir = tmp / f"full-{round_no}"
        run_dir.mkdir()
        state = setup(recipe, run_dir, progress=False)
        state.log = RunLog(run_dir)
        t0 = time.perf_counter()
        fit(state)
        seconds = time.perf_counter() - t0
        for m in state.methods:
            getattr(m, "close", lambda: None)()
        state.log.close()
        assert state.step == args.steps and list((run_dir / "tensorboard").iterdir())
        return seconds

    def bare(round_no: int) -> float:
        state = setup(recipe, tmp / f"bare-{round_no}", progress=False)  # same model, data, compile decision
        t0 = time.perf_counter()
        for step in range(args.steps):
            state.data_position = step * spec.grad_accum
            batch = draw_batch(state)
            n = count_targets(batch)
            set_lr(state.optimizer, lr_at(step, lr=spec.lr, warmup=spec.warmup_steps, total=spec.max_steps,
                                          min_ratio=spec.min_lr_ratio))
            for x, y in batch:
                micro_loss(state.forward, x, y, n, state.precision, state.device).backward()
            clip_and_step(state.model, state.optimizer, spec.grad_clip)
        return time.perf_counter() - t0

    tokens = args.steps * spec.micro_batch_size * spec.seq_len * spec.grad_accum
    rounds = {"bare": [], "full": []}
    for r in range(args.rounds):
        for name, run in (("bare", bare), ("full", full)):
            rounds[name].append(tokens / run(r))
            print(f"round {r + 1} {name}: {rounds[name][-1]:,.0f} tokens/s", flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    figures = {k: statistics.median(v) for k, v in rounds.items()}
    overhead = 1 - figures["full"] / figures["bare"]
    probe = setup(recipe, tmp / "probe", progress=False)
    result = {
        "benchmark": "trainer_overhead", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu": machine_name(), "threads": torch.get_num_threads(), "device": str(probe.device),
                    "cpu_flags_bf16": _bf16_flags(), "python": sys.version.split()[0], "torch": torch.__version__},
        "recipe": args.recipe, "steps": args.steps, "precision": probe.precision, "compiled": probe.compiled,
        "full_trainer": "spike guard, TensorBoard, metrics every 10 steps, checkpoint every 100 steps",
        "tokens_per_s": figures, "rounds": rounds, "overhead": overhead, "goal": "<= 0.05",
    }
    shutil.rmtree(tmp, ignore_errors=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{machine_name()}, {probe.precision}, compiled={probe.compiled}: bare {figures['bare']:,.0f} tokens/s, "
          f"full trainer {figures['full']:,.0f} tokens/s -> overhead {overhead:.1%} (goal <= 5%) -> {args.out}")


def _bf16_flags() -> list[str]:
    from lmforge.io import cpu_flags

    return sorted(cpu_flags() & {"avx512_bf16", "amx_bf16", "avx2"})


if __name__ == "__main__":
    main()
