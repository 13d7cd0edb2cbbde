"""Evaluation throughput: `lmforge eval` against lm-eval's Hugging Face backend (`--model hf`, transformers'
LlamaForCausalLM) on the same model directory and the same task files, in one run.

    python benchmarks/eval_throughput.py [--sizes demo,small] [--limit 200] [--rounds 2]

Tasks: the shipped stdlib_next_line (4-way multiple choice, as an lm-eval YAML) and a rolling-perplexity task over
held-out standard-library text. Models have random weights (speed does not depend on what they learned). Each
contender runs the same tasks at batch size 16 in fp32, alternating, `rounds` times; the median wall time counts
(model loading included for both). Scores are checked to agree. Writes benchmarks/results/eval_throughput.json.
Goal (issue 11): lmforge >= 1.0x lm-eval's HF backend.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import decode_speed  # noqa: E402  (the same random models the decode benchmark builds)
from decode_speed import build  # noqa: E402

decode_speed.SIZES["small"] = (384, 1024, 6, 6, 2)


def rolling_task(folder: Path) -> Path:
    from lmforge.evaluate.builtin import held_out_files

    texts = [p.read_text(encoding="utf-8", errors="replace")[:4000] for p in held_out_files()[:24]]
    (folder / "roll.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    (folder / "stdlib_rolling.yaml").write_text(
        f"task: stdlib_rolling\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {folder / 'roll.jsonl'}\n"
        "test_split: test\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\ndoc_to_target: text\n")
    return folder / "stdlib_rolling.yaml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="demo,small")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_throughput.json"))
    args = ap.parse_args()

    import sysconfig

    import lm_eval
    import torch
    from lm_eval.tasks import TaskManager

    from lmforge.evaluate.builtin import task_file
    from lmforge.evaluate.run import evaluate
    from lmforge.io import cpu_flags, machine_name
    from lmforge.model.tokenizer import Tokenizer

    root = Path(tempfile.mkdtemp(prefix="lmforge-evalbench-"))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))[:150]]
    tok = Tokenizer.train(texts, 4096, show_progress=False)
    mc = task_file("stdlib_next_line")
    roll = rolling_task(root)
    names = ["stdlib_next_line", "stdlib_rolling"]
    results = {}
    for size in args.sizes.split(","):
        model_dir = build(size, tok, root)
        times = {"lmforge": [], "lm-eval hf": []}
        scores = {}
        for _ in range(args.rounds):
            t = time.perf_counter()
            ours = evaluate(str(model_dir), f"{mc},{roll}", limit=args.limit, batch_size=16, contamination=False)
            times["lmforge"].append(time.perf_counter() - t)
            t = time.perf_counter()
            theirs = lm_eval.simple_evaluate(
                model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=names, device="cpu",
                batch_size=16, limit=args.limit, bootstrap_iters=0, log_samples=False,
                task_manager=TaskManager(include_path=[str(mc.parent), str(root)]))
            times["lm-eval hf"].append(time.perf_counter() - t)
            scores = {"lmforge": {n: ours["results"][n] for n in names},
                      "lm-eval hf": {n: {k: v for k, v in theirs["results"][n].items() if "," in k and "stderr" not in k}
                                     for n in names}}
        requests = ours["n-samples"]["stdlib_next_line"]["effective"] * 4 + ours["n-samples"]["stdlib_rolling"]["effective"]
        med = {k: statistics.median(v) for k, v in times.items()}
        results[size] = {"params": sum(p.numel() for p in __import__("lmforge.model.hf", fromlist=["x"]).load_model(
                             model_dir).parameters()),
                         "wall_s": med, "all_wall_s": times, "ratio_vs_lm_eval_hf": med["lm-eval hf"] / med["lmforge"],
                         "documents": {n: ours["n-samples"][n]["effective"] for n in names}, "requests": requests,
                         "acc_equal": scores["lmforge"]["stdlib_next_line"]["acc,none"]
                         == float(scores["lm-eval hf"]["stdlib_next_line"]["acc,none"]),
                         "scores": scores}
        print(size, json.dumps(results[size]["wall_s"]), f"ratio {results[size]['ratio_vs_lm_eval_hf']:.2f}x",
              flush=True)
    out = {"machine": machine_name(), "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}),
           "torch": torch.__version__, "lm_eval": lm_eval.__version__, "threads": torch.get_num_threads(),
           "limit": args.limit, "rounds": args.rounds, "batch_size": 16, "precision": "fp32", "results": results}
    Path(args.out).write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
