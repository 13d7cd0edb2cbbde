"""Where the lottery ticket's gap to the dense model comes from, at a given training budget: the dense run, the
same run rewound to step K and retrained with a fresh optimizer and no mask (the cost of rewinding alone), and
the level-1 ticket (80% density: the cost of pruning on top). One seed per budget; results merge into
benchmarks/results/lottery_budget.json.

    python benchmarks/lottery_budget.py [--model runs/demo/model] [--steps 200,600] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "lottery_budget.json"
sys.path.insert(0, str(ROOT / "benchmarks"))
from compress import lottery_recipe, machine, rewind_step  # noqa: E402  (the compress benchmark's lottery)


def budget(model: Path, steps: int, batch: int, work: Path) -> dict:
    from safetensors.torch import load_file

    from lmforge.compress.lottery import lottery
    from lmforge.train.checkpoint import seed_checkpoint, step_dir
    from lmforge.train.recipe import parse_recipe
    from lmforge.train.trainer import train

    raw = lottery_recipe(model, steps, batch) | {"seed": 3000, "name": f"lottery-budget-{steps}"}
    recipe, k = parse_recipe(raw), rewind_step(steps)
    report = lottery(recipe, work, levels=1, rewind_step=k, controls=False, progress=False)
    rewind = step_dir(work / "rewind", k)
    seed_checkpoint(rewind, work / "rewound-dense", weights=load_file(str(rewind / "model.safetensors")))
    rewound = train(recipe, work / "rewound-dense", progress=False)["validation"]
    loss = {r["kind"]: r["val_loss"] for r in report["runs"]}
    return {"steps": steps, "rewind_step": k, "micro_batch_size": batch, "dense": loss["dense"],
            "rewound_dense": rewound["loss"], "ticket_80": loss["ticket"],
            "rewind_cost": rewound["loss"] - loss["dense"], "pruning_cost": loss["ticket"] - rewound["loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "runs" / "demo" / "model"), help="its lineage gives the recipe")
    ap.add_argument("--steps", default="200,600")
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    model = Path(args.model)
    if not (model / "lmforge.json").is_file():
        sys.exit(f"no model at {model}: run `make demo` first (or pass --model)")
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for steps in map(int, args.steps.split(",")):
        t0 = time.perf_counter()
        row = budget(model, steps, args.batch, Path(tempfile.mkdtemp(prefix="lottery-budget-")))
        results[str(steps)] = {**row, "seconds": time.perf_counter() - t0, "machine": machine(),
                               "date": time.strftime("%Y-%m-%d")}
        OUT.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
