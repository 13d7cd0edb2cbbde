"""Training throughput: lmforge's training step against a plain PyTorch loop over transformers'
LlamaForCausalLM with the identical config, data, batch, optimizer and precision, in the same process.

    python benchmarks/train_throughput.py [--recipe recipes/tiny-code-stdlib.yaml] [--steps 8] [--rounds 3]

Prints tokens/s for each and the ratio; writes benchmarks/results/train_throughput.json. Rounds alternate
between the contenders so that noise from a shared machine falls on both; each figure is the median round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # busy-waiting OpenMP threads collapse on shared cores

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "tiny-code-stdlib.yaml"))
    ap.add_argument("--steps", type=int, default=8, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--precision", default=None, help="override train.precision (auto | bf16 | fp32)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_throughput.json"))
    args = ap.parse_args()

    import transformers

    from lmforge.io import machine_name as cpu_name
    from lmforge.train.precision import autocast, resolve_precision
    from lmforge.train.recipe import load_recipe
    from lmforge.train.optim import make_optimizer
    from lmforge.train.fit import train_step

    recipe = load_recipe(args.recipe, [f"train.precision={args.precision}"] if args.precision else [])
    spec = recipe.train
    torch.set_num_threads(spec.threads or len(os.sched_getaffinity(0)))
    precision = resolve_precision(spec.precision)
    config = recipe.model.model_copy(update={"vocab_size": recipe.tokenizer.vocab_size or 4096})
    B, T = spec.micro_batch_size, spec.seq_len
    gen = torch.Generator().manual_seed(0)
    data = torch.randint(0, config.vocab_size, (args.steps, B, T + 1), generator=gen)

    # --- lmforge: the trainer's own model, optimizer and step function --------------------------
    # Headline: AdamW, the same optimizer as the peer's loop. The recipe's own optimizer (Muon in the demo
    # recipe) is timed too, since that is what `lmforge train` runs.
    from lmforge.model.transformer import Transformer

    def lmforge_step(optimizer_name: str, compiled: bool):
        model = Transformer(config)
        model.reset_parameters(seed=0)
        opt = make_optimizer(model, spec.model_copy(update={"optimizer": optimizer_name}))
        forward = torch.compile(model) if compiled else model

        def step(i):
            x = data[i]
            train_step(forward, opt, [(x[:, :-1], x[:, 1:])], precision=precision, grad_clip=spec.grad_clip)

        return step

    # --- the peer: a plain loop as the transformers docs write it --------------------------------
    hf_cfg = transformers.LlamaConfig(**{k: v for k, v in config.to_hf().items()
                                         if k not in ("architectures", "model_type", "torch_dtype")})
    theirs = transformers.LlamaForCausalLM(hf_cfg)
    theirs.config._attn_implementation = "sdpa"
    theirs.train()
    theirs_opt = torch.optim.AdamW(theirs.parameters(), lr=spec.lr, betas=tuple(spec.betas),
                                   weight_decay=spec.weight_decay, fused=True)

    def theirs_step(i):
        x = data[i]
        with autocast(precision):
            loss = theirs(input_ids=x[:, :-1], labels=x[:, :-1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), spec.grad_clip)
        theirs_opt.step()
        theirs_opt.zero_grad(set_to_none=True)

    contenders = {
        "lmforge": lmforge_step("adamw", spec.compile),
        "lmforge_eager": lmforge_step("adamw", False),
        f"lmforge_{spec.optimizer}": lmforge_step(spec.optimizer, spec.compile),
        "transformers": theirs_step,
    }
    warmup = {}
    for name, step in contenders.items():  # first steps include torch.compile's one-off compilation
        t0 = time.perf_counter()
        step(0)
        step(1)
        warmup[name] = time.perf_counter() - t0

    rounds = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, step in contenders.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(args.steps):
                step(i)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            rounds[name].append({"tokens_per_s": args.steps * B * T / wall, "wall_s": wall, "cpu_s": cpu})

    figures = {name: {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in rs),
                      "tokens_per_cpu_s": statistics.median(args.steps * B * T / r["cpu_s"] for r in rs),
                      "warmup_s": warmup[name], "rounds": rs} for name, rs in rounds.items()}
    ratio = figures["lmforge"]["tokens_per_s"] / figures["transformers"]["tokens_per_s"]
    eager_ratio = figures["lmforge_eager"]["tokens_per_s"] / figures["transformers"]["tokens_per_s"]
    result = {
        "benchmark": "train_throughput",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu": cpu_name(), "threads": torch.get_num_threads(), "device": "cpu",
                    "python": sys.version.split()[0], "torch": torch.__version__,
                    "transformers": transformers.__version__},
        "config": config.model_dump(), "batch": [B, T], "precision": precision, "compile": spec.compile,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "figures": figures,
        "ratio_lmforge_vs_transformers": ratio,
        "ratio_lmforge_eager_vs_transformers": eager_ratio,
        "goal": ">= 1.0",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, {precision}, batch {B}x{T}")
    for name, f in figures.items():
        print(f"  {name:14s} {f['tokens_per_s']:9,.0f} tokens/s  ({f['tokens_per_cpu_s']:,.0f} per CPU-second; "
              f"warm-up {f['warmup_s']:.1f} s)")
    print(f"  ratio lmforge / transformers: {ratio:.2f}x  (eager lmforge: {eager_ratio:.2f}x)  -> {args.out}")


if __name__ == "__main__":
    main()
