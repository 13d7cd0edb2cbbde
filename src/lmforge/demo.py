"""The demo pipeline behind `lmforge demo` / `make demo`: standard library -> tokenizer -> trained code
model -> validation losses against baselines -> completions. Returns a report; the CLI renders it."""

from __future__ import annotations

import time
from pathlib import Path

DEMO_PROMPTS = [
    'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
    "import os\n\n\ndef list_python_files(root):\n",
    "class Stack:\n    def __init__(self):\n",
    "    def __repr__(self):\n",
]
TARGET_BPB = 1.25


def run_demo(recipe_path: Path, out: Path, *, max_steps: int | None = None, console=None,
             prompts=DEMO_PROMPTS) -> dict:
    from lmforge.infer.local import load
    from lmforge.io import machine_name, write_json
    from lmforge.train.precision import resolve_precision
    from lmforge.train.prepare import resolve_dataset, resolve_tokenizer
    from lmforge.train.recipe import load_recipe, recipe_data
    from lmforge.train.trainer import train
    from lmforge.train.validation import evaluate_loss, unigram_baseline

    say = console.print if console else (lambda *a, **k: None)
    recipe = load_recipe(recipe_path, [f"train.max_steps={max_steps}"] if max_steps else [])
    t0 = time.perf_counter()

    say(f"[bold]1/4 data[/]: {recipe.data.corpus or recipe.data.path}")
    dataset = resolve_dataset(recipe.data)
    c = dataset.info["counts"]
    say(f"    {c['records']:,} records, {c['chars'] / 1e6:.1f}M characters, "
        f"{c['train']:,} train / {c['validation']:,} validation  ({dataset.path})")

    say(f"[bold]2/4 tokenizer[/]: " + (f"byte-level BPE, {recipe.tokenizer.vocab_size} tokens"
                                        if recipe.tokenizer.vocab_size else str(recipe.tokenizer.path)))
    tok_dir = resolve_tokenizer(recipe.tokenizer, dataset)
    say(f"    {tok_dir}")

    say(f"[bold]3/4 train[/]: {recipe.name}, {recipe.train.max_steps} steps -> {out}")
    before: dict = {}

    def measure_start(prep, model, val_windows, bytes_per_token):
        before["model"] = evaluate_loss(model, val_windows, bytes_per_token,
                                        max_tokens=recipe.train.final_eval_tokens,
                                        precision=resolve_precision(recipe.train.precision))
        targets = val_windows.targets(recipe.train.final_eval_tokens)
        before["unigram"] = unigram_baseline(targets, bytes_per_token, prep.tokenizer.vocab_size)
        say(f"    {model.config.num_parameters():,} parameters; train {len(prep.train_tokens):,} tokens, "
            f"validation {len(prep.val_tokens):,} tokens")

    result = train(recipe, out, resume=(out / "checkpoints").is_dir(), on_prepared=measure_start)

    say("[bold]4/4 generate[/]: completions of Python prefixes")
    texts = load(result["model"]).generate(list(prompts), max_tokens=48, temperature=0.3, top_p=0.9,
                                           repetition_penalty=1.3, seed=0)
    completions = list(zip(prompts, texts))
    report = {
        "recipe": recipe_data(recipe),
        "model": str(result["model"]),
        "steps": result["steps"],
        "train_seconds": result["train_seconds"],
        "device": f"{machine_name()}, {result['threads']} threads, {result['precision']}"
                  f"{', torch.compile' if result['compiled'] else ''}",
        "total_seconds": time.perf_counter() - t0,
        "validation": {"random_init": before["model"], "unigram": before["unigram"],
                       "trained": result["validation"]},
        "target_bpb": TARGET_BPB,
        "completions": [{"prompt": p, "completion": c} for p, c in completions],
    }
    write_json(out / "demo.json", report)
    return report


def render_report(report: dict, console) -> None:
    from rich.table import Table

    v = report["validation"]
    table = Table(title=f"validation split ({v['trained']['tokens']:,} tokens, {v['trained']['bytes']:,} bytes)")
    table.add_column("model")
    table.add_column("nats / token", justify="right")
    table.add_column("bits / byte", justify="right")
    for name, key in (("before training (random init)", "random_init"), ("unigram-entropy baseline", "unigram"),
                      (f"after training ({report['steps']} steps)", "trained")):
        table.add_row(name, f"{v[key]['loss']:.3f}", f"{v[key]['bpb']:.3f}")
    console.print(table)
    bpb = v["trained"]["bpb"]
    verdict = "[green]met[/]" if bpb <= report["target_bpb"] else "[red]not met[/]"
    console.print(f"goal <= {report['target_bpb']} bits/byte: {verdict} ({bpb:.3f}); training took "
                  f"{report['train_seconds'] / 60:.1f} min, the whole demo {report['total_seconds'] / 60:.1f} min "
                  f"on {report['device']}")
    for item in report["completions"]:
        console.rule()
        console.print(item["prompt"], end="", markup=False, highlight=False, style="bold")
        console.print(item["completion"], markup=False, highlight=False)
    console.rule()
    console.print(f"model: {report['model']}  (try: lmforge generate {report['model']} 'def quicksort(xs):')")
