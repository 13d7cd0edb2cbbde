"""What compression costs, on the model `make demo` trains (runs/demo/model), each figure against the goals of
issue 12. Sections (`--only`, comma-separated; each merges its results into benchmarks/results/compress.json):

    quantize   torch weight-only int8 and int4 (group 32, 64) exports: perplexity ratio, KL, top-1 agreement,
               linear-weight bytes against fp32
    prune      one-shot magnitude and Wanda at 50% (unstructured and 2:4), then a short retrain of the 50% Wanda
               model with its mask held
    lora       LoRA r=8 against full fine-tuning on python-stdlib-instruct (same steps and data, --seeds seeds),
               and LoRA over an int8 / int4 torchao base: peak memory and tokens/s against the fp32 base
    distill    a student of about 1/3-1/2 the teacher's parameters, trained on the teacher's logits and on
               cross-entropy alone, same steps and data, --seeds seeds
    lottery    the lottery ticket with its two controls on a shortened demo recipe, --seeds seeds

    python benchmarks/compress.py [--model runs/demo/model] [--only quantize,prune] [--seeds 2]

Every training here runs in its own process (peak RSS is per run). Nothing else may run on the machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "compress.json"


def machine() -> dict:
    import platform

    import torch

    from lmforge.io import cpu_flags
    from lmforge.train.precision import resolve_precision

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    flags = sorted(f for f in cpu_flags() if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni"))
    return {"cpu": model, "flags": flags, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "auto_precision": resolve_precision("auto", "cpu")}


def _child(fn, args, queue):
    result = fn(*args)
    queue.put({**result, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def isolated(fn, *args) -> dict:
    """fn(*args) in a fresh process; its dict result plus that process's peak RSS."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def train_run(raw: dict, out: str) -> dict:
    import lmforge

    r = lmforge.train(raw, out, progress=False)
    return {"val_loss": r["validation"]["loss"], "val_bpb": r["validation"]["bpb"], "steps": r["steps"],
            "tokens": r["tokens"], "train_seconds": r["train_seconds"], "compiled": r["compiled"],
            "tokens_per_s": r["tokens"] / max(r["train_seconds"], 1e-9), "model": str(r["model"])}


def base_loss(raw: dict) -> dict:
    """The validation of `raw`'s init_from model on `raw`'s data, before any step."""
    from lmforge.train.methods.validation import evaluate
    from lmforge.train.recipe import parse_recipe
    from lmforge.train.setup import setup

    state = setup(parse_recipe(raw), Path(tempfile.mkdtemp()), progress=False)
    return evaluate(state, state.recipe.train.final_eval_tokens)


# --- sections --------------------------------------------------------------------------------------------------


def quantize(model: Path, work: Path) -> dict:
    from lmforge.compress import costs
    from lmforge.infer.quantize import export_quantized
    from lmforge.io import read_json

    out = {}
    for name, method, group in (("int8", "int8", 32), ("int4-g32", "int4", 32), ("int4-g64", "int4", 64)):
        d = export_quantized(model, work / name, method, group_size=group)
        c = costs.measure(model, d, method=method, group_size=group)
        spec = read_json(d / "config.json")["quantization_config"]
        out[name] = {**{k: c[k] for k in ("ppl_ratio", "kl", "top1_agreement", "bytes", "bytes_reference", "tokens",
                                          "measured_on")}, "skipped": spec["skipped"],
                     "linear_bytes_ratio": linear_bytes(model) / linear_bytes(d)}
    out["goals"] = {"int8": "ppl ratio <= 1.01, top-1 >= 98%, linear weights >= 3.5x smaller",
                    "int4": "ppl ratio <= 1.15"}
    return out


def linear_bytes(model_dir: Path) -> int:
    """Bytes of the block linears' stored tensors (weights, or quantized weights with their scales)."""
    from safetensors import safe_open

    total = 0
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        for key in f.keys():
            if ".self_attn." in key or ".mlp." in key:
                t = f.get_tensor(key)
                total += t.numel() * t.element_size()
    return total


def prune(model: Path, work: Path, retrain_steps: int) -> dict:
    from lmforge.compress import costs
    from lmforge.compress.oneshot import prune_model
    from lmforge.io import read_json

    out = {}
    for method in ("magnitude", "wanda"):
        for pattern in ("unstructured", "2:4"):
            c = prune_model(model, work / f"{method}-{pattern}", method=method, sparsity=0.5, pattern=pattern)
            out[f"{method}-{pattern}"] = {k: c[k] for k in ("ppl_ratio", "kl", "top1_agreement", "density", "scope")}
    lineage = read_json(model / "lmforge.json")
    raw = {**lineage["recipe"], "name": "wanda-retrain", "init_from": str(work / "wanda-unstructured"),
           "mask": str(work / "wanda-unstructured" / "mask.safetensors")}
    raw.pop("model", None), raw.pop("tokenizer", None)
    raw["train"] = {**raw["train"], "max_steps": retrain_steps, "lr": 1e-3, "warmup_steps": 10,
                    "eval_interval": retrain_steps, "checkpoint_interval": retrain_steps}
    run = isolated(train_run, raw, str(work / "wanda-retrained"))
    c = costs.measure(model, run["model"], method="wanda+retrain", sparsity=0.5)
    out["wanda-unstructured-retrained"] = {"steps": retrain_steps, **{k: c[k] for k in ("ppl_ratio", "kl",
                                                                                          "top1_agreement",
                                                                                          "linear_density")}}
    out["goals"] = "wanda 50%: ppl ratio <= 1.5 one-shot, <= 1.05 after a short retrain"
    return out


def frozen_base_bytes(model_dir: Path, base: str) -> int:
    """Bytes the frozen block linears take in memory with `lora.base: base` (torchao tensors: their parts)."""
    import torch

    from lmforge.model.hf import load_model
    from lmforge.model.lora import LoRAConfig, add_lora, lora_layers, quantize_base

    config = LoRAConfig(base=base)
    m = add_lora(load_model(model_dir), config)
    quantize_base(m, config)

    def size(t):
        if hasattr(t, "__tensor_flatten__") and type(t) not in (torch.Tensor, torch.nn.Parameter):
            names, _ = t.__tensor_flatten__()
            return sum(size(getattr(t, n)) for n in names)
        return t.numel() * t.element_size()
    return sum(size(layer.base_layer.weight) for layer in lora_layers(m).values())


LORA_KINDS = ("full", "lora-fp32", "lora-int8", "lora-int4", "lora-attn", "lora-dropout")
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def lora(model: Path, work: Path, seeds: int, steps: int, lr: float | None, kinds: list[str]) -> dict:
    """lora-attn: r=8 on the attention projections only (the original LoRA paper's targets), the variant whose
    trainable share fits 5% at this width (all-linear r=8 is 2r/d of a d x d matrix: 6% at d=128).
    lora-dropout: dropout 0.05, what the adapters' dropout (a random mask on every adapted input) costs in speed
    (results/compress_lora_dropout.json measured it when the recipe had 0.05: its lora-nodrop is dropout 0)."""
    from lmforge.train.recipe import load_recipe, recipe_data

    base = recipe_data(load_recipe(ROOT / "recipes" / "lora.yaml"))
    base["init_from"] = str(model)
    base["train"] = {**base["train"], "max_steps": steps, "eval_interval": steps, "checkpoint_interval": steps}
    if lr:
        base["train"]["lr"] = lr
    before = base_loss({**base, "lora": {**base["lora"], "base": "fp32"}})
    rows = []
    for seed in range(seeds):
        for kind in kinds:
            raw = json.loads(json.dumps(base))
            raw["seed"] = 1000 + seed
            if kind == "full":
                raw.pop("lora")
                raw["train"] |= {"lr": 1e-3, "weight_decay": 0.0}
            elif kind == "lora-attn":
                raw["lora"]["target_modules"] = ATTENTION
            elif kind == "lora-dropout":               # the recipe's adapters with dropout (it has none)
                raw["lora"]["dropout"] = 0.05
            else:
                raw["lora"]["base"] = kind.split("-")[1]
            r = isolated(train_run, raw, str(work / f"{kind}-{seed}"))
            rows.append({"kind": kind, "seed": raw["seed"], **r})
            print(f"  {kind} seed {raw['seed']}: loss {r['val_loss']:.4f}, {r['tokens_per_s']:.0f} tok/s, "
                  f"peak {r['peak_rss_mib']:.0f} MiB", flush=True)
    import math

    def mean(kind, key):
        return statistics.mean(r[key] for r in rows if r["kind"] == kind)

    ppl0 = math.exp(before["loss"])
    gain = {k: ppl0 - math.exp(mean(k, "val_loss")) for k in kinds}
    from lmforge.model.hf import read_lineage

    def share(kind):
        lin = read_lineage(work / f"{kind}-0" / "model")["lora"]
        return lin["trainable_parameters"] / lin["parameters"]
    out = {"steps": steps, "lr": base["train"]["lr"], "base_ppl": ppl0, "runs": rows,
           "trainable_share": {k: share(k) for k in kinds if k != "full"},
           "peak_rss_mib": {k: mean(k, "peak_rss_mib") for k in kinds},
           "goal": "r=8: <= 5% of parameters trained, >= 80% of full fine-tuning's perplexity gain"}
    if "full" in kinds:
        out["gain_share_of_full"] = {k: gain[k] / gain["full"] for k in kinds if k != "full"}
    if "lora-fp32" in kinds:
        out["tokens_per_s_vs_fp32_base"] = {k: mean(k, "tokens_per_s") / mean("lora-fp32", "tokens_per_s")
                                            for k in kinds if k.startswith("lora-int")}
        out["frozen_base_bytes"] = {b: frozen_base_bytes(model, b) for b in ("fp32", "int8", "int4")}
    return out


def distill(model: Path, work: Path, seeds: int, steps: int) -> dict:
    import math

    from lmforge.io import read_json

    lineage = read_json(model / "lmforge.json")
    teacher_params = read_json(model / "config.json")
    raw = json.loads(json.dumps(lineage["recipe"]))
    raw["tokenizer"] = {"path": str(model)}
    raw["model"] |= {"hidden_size": 96, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 3,
                     "num_key_value_heads": 1}
    raw["model"].pop("vocab_size", None)
    raw["train"] |= {"max_steps": steps, "eval_interval": steps, "checkpoint_interval": steps}
    rows = []
    for seed in range(seeds):
        for kind in ("ce", "distill"):
            r_ = json.loads(json.dumps(raw)) | {"seed": 2000 + seed, "name": f"student-{kind}"}
            if kind == "distill":
                r_["distill"] = {"teacher": str(model), "temperature": 1.0, "weight": 0.8}
            r = isolated(train_run, r_, str(work / f"{kind}-{seed}"))
            rows.append({"kind": kind, "seed": r_["seed"], **r})
            print(f"  student {kind} seed {r_['seed']}: loss {r['val_loss']:.4f}", flush=True)
    from lmforge.model.hf import load_model

    student = load_model(rows[0]["model"]).config.num_parameters()
    teacher = load_model(model).config.num_parameters()
    teacher_loss = lineage["validation"]["loss"]
    mean = {k: statistics.mean(r["val_loss"] for r in rows if r["kind"] == k) for k in ("ce", "distill")}
    return {"steps": steps, "teacher_steps": lineage["steps"], "runs": rows, "size_ratio": student / teacher,
            "teacher_parameters": teacher, "student_parameters": student, "teacher_hidden": teacher_params["hidden_size"],
            "ppl_vs_teacher": {k: math.exp(v - teacher_loss) for k, v in mean.items()},
            "goal": "student 1/3-1/2 of the teacher, ppl <= 1.3x the teacher's and below the CE-only student"}


def lottery_recipe(model: Path, steps: int, batch: int) -> dict:
    """The recipe that trained `model` (the demo's) shortened to `steps` at micro-batch `batch` and run eager:
    a lottery is 1 + 3L trainings, each too short for torch.compile's 20-45 s warm-up to pay back."""
    from lmforge.io import read_json

    raw = json.loads(json.dumps(read_json(model / "lmforge.json")["recipe"]))
    raw["train"] |= {"max_steps": steps, "eval_interval": steps, "checkpoint_interval": max(50, steps // 4),
                     "micro_batch_size": batch, "compile": False,
                     "warmup_steps": min(raw["train"]["warmup_steps"], steps // 10)}
    return raw


def rewind_step(steps: int) -> int:
    """The lottery's rewind point: 2% of the training."""
    return max(1, steps // 50)


def lottery(model: Path, work: Path, seeds: int, steps: int, levels: int, batch: int) -> dict:
    from lmforge.compress.lottery import lottery as run_lottery
    from lmforge.train.recipe import parse_recipe

    raw = lottery_recipe(model, steps, batch)
    out = []
    for seed in range(seeds):
        r = parse_recipe(raw | {"seed": 3000 + seed, "name": f"lottery-{seed}"})
        report = run_lottery(r, work / f"lottery-{seed}", levels=levels, rewind_step=rewind_step(steps),
                             progress=False)
        out.append(report)
    by = {}
    for report in out:
        for row in report["runs"]:
            by.setdefault((row["kind"], row["level"]), []).append(row)

    def stats(rows, key):
        v = [r[key] for r in rows]
        return statistics.mean(v), statistics.stdev(v) if len(v) > 1 else None
    table = []
    for (kind, level), rows in sorted(by.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        (loss, loss_sd), (bpb, bpb_sd) = stats(rows, "val_loss"), stats(rows, "val_bpb")
        table.append({"kind": kind, "level": level, "density": rows[0]["density"], "loss_mean": loss,
                      "loss_std": loss_sd, "bpb_mean": bpb, "bpb_std": bpb_sd})
    return {"steps": steps, "micro_batch_size": batch, "levels": levels, "rewind_step": rewind_step(steps),
            "table": table, "goal": "ticket matches dense within one std down to <= 51% density, better than "
            "both controls there"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "runs" / "demo" / "model"))
    ap.add_argument("--only", default="quantize,prune,lora,distill,lottery")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--retrain-steps", type=int, default=100)
    ap.add_argument("--lora-steps", type=int, default=150)
    ap.add_argument("--lora-lr", type=float, help="the adapters' learning rate (default: recipes/lora.yaml's)")
    ap.add_argument("--lora-kinds", default=",".join(LORA_KINDS), help="which of the trainings to run")
    ap.add_argument("--distill-steps", type=int, default=400)
    ap.add_argument("--lottery-steps", type=int, default=200)
    ap.add_argument("--lottery-batch", type=int, default=8, help="the lottery's micro-batch (the demo's: 16)")
    ap.add_argument("--levels", type=int, default=4, help="lottery levels: density 0.8^L (4: 41%%)")
    ap.add_argument("--out", default=str(OUT), help="the results file (sections merge into it)")
    args = ap.parse_args()
    out = Path(args.out)
    model = Path(args.model)
    if not (model / "config.json").is_file():
        sys.exit(f"no model at {model}: run `make demo` first (or pass --model)")
    results = json.loads(out.read_text()) if out.is_file() else {}
    for section in args.only.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"compress-{section}-"))
        t0 = time.perf_counter()
        print(f"{section} ...", flush=True)
        if section == "quantize":
            res = quantize(model, work)
        elif section == "prune":
            res = prune(model, work, args.retrain_steps)
        elif section == "lora":
            res = lora(model, work, args.seeds, args.lora_steps, args.lora_lr, args.lora_kinds.split(","))
        elif section == "distill":
            res = distill(model, work, args.seeds, args.distill_steps)
        elif section == "lottery":
            res = lottery(model, work, args.seeds, args.lottery_steps, args.levels, args.lottery_batch)
        else:
            sys.exit(f"unknown section {section}")
        results[section] = {**res, "machine": machine(), "model": str(model), "seconds": time.perf_counter() - t0,
                            "date": time.strftime("%Y-%m-%d")}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(json.dumps({k: v for k, v in res.items() if k != "runs"}, indent=1, default=str)[:3000], flush=True)


if __name__ == "__main__":
    main()
