"""The harness: a task's documents -> requests -> the model's answers -> per-item metric values.

Every runner returns a TaskResult whose per-item values (one list per "METRIC,FILTER") are what the report
aggregates, bootstraps, splits into clean/dirty items and pairs against another model; `items` are the texts the
contamination check looks for in the training data (the document as it would appear there: text and answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lmforge.evaluate.filters import apply_filter
from lmforge.evaluate.metrics import exact_match
from lmforge.evaluate.tasks import Task


@dataclass
class TaskResult:
    name: str
    output_type: str
    values: dict[str, list] = field(default_factory=dict)
    """"METRIC,FILTER" -> one value per document (see metrics.py)."""
    samples: list[dict] = field(default_factory=list)
    """Per document, in lm-eval's logged-samples shape (doc_id, doc, target, arguments, resps, filtered_resps,
    and each metric's value)."""
    items: list[str] | None = None
    """The documents' text for the contamination check; None where it does not apply."""
    n_shot: int = 0
    config: dict = field(default_factory=dict)
    original: int = 0
    """Documents in the split, before --limit."""
    extra: dict = field(default_factory=dict)
    """Runner-specific report sections (e.g. the repair curve)."""


def run_task(task: Task, scorer, *, limit: int | None = None, seed: int = 1234,
             num_fewshot: int | None = None) -> TaskResult:
    docs = task.docs()
    chosen = docs[:limit] if limit else docs
    n_shot = task.num_fewshot if num_fewshot is None else num_fewshot
    contexts = [task.context(d, i, seed=seed, num_fewshot=n_shot) for i, d in enumerate(chosen)]
    result = TaskResult(task.name, task.output_type, n_shot=n_shot, config=task.config, original=len(docs),
                        items=[task.text(d) + task.target_delimiter + _answer_text(task, d) for d in chosen])
    runner = {"multiple_choice": _multiple_choice, "loglikelihood": _loglikelihood,
              "loglikelihood_rolling": _rolling, "generate_until": _generate}[task.output_type]
    runner(task, scorer, chosen, contexts, result)
    return result


def _answer_text(task: Task, doc: dict) -> str:
    return task.target_text(doc) if task.output_type != "loglikelihood_rolling" else ""


def _wanted(task: Task) -> set[str]:
    return {m["metric"] for m in task.metrics}


def _multiple_choice(task, scorer, docs, contexts, result):
    import numpy as np

    choices = [task.choices(d) for d in docs]
    pairs = [scorer.pair(ctx, task.target_delimiter + c) for ctx, cs in zip(contexts, choices) for c in cs]
    scored = iter(scorer.loglikelihood(pairs))
    want = _wanted(task)
    for i, (doc, ctx, cs) in enumerate(zip(docs, contexts, choices)):
        lls = np.array([next(scored).logprob for _ in cs])
        gold = task.target(doc)
        values = {"acc": float(lls.argmax() == gold),
                  "acc_norm": float((lls / np.array([float(len(c)) for c in cs])).argmax() == gold)}
        _record(result, i, doc, gold, [[ctx, task.target_delimiter + c] for c in cs], lls.tolist(), values, want)


def _loglikelihood(task, scorer, docs, contexts, result):
    want = _wanted(task)
    targets = [task.target(d) for d in docs]
    scored = scorer.loglikelihood([scorer.pair(c, task.target_delimiter + t) for c, t in zip(contexts, targets)])
    for i, (doc, ctx, t, r) in enumerate(zip(docs, contexts, targets, scored)):
        _record(result, i, doc, t, [[ctx, task.target_delimiter + t]], [r.logprob, r.greedy],
                {"perplexity": r.logprob, "acc": float(r.greedy)}, want)


def _rolling(task, scorer, docs, contexts, result):
    want = _wanted(task)
    result.items = [task.target(d) for d in docs]
    for i, doc in enumerate(docs):
        text = task.target(doc)
        ll = sum(r.logprob for r in scorer.loglikelihood(scorer.rolling_pairs(text)))
        words, n_bytes = len(re.split(r"\s+", text)), len(text.encode("utf-8"))
        _record(result, i, doc, text, [[text]], ll, {"word_perplexity": [ll, words], "byte_perplexity": [ll, n_bytes],
                                                   "bits_per_byte": [ll, n_bytes]}, want)


def _generate(task, scorer, docs, contexts, result):
    kwargs = dict(task.generation_kwargs)
    until = kwargs.get("until", [task.fewshot_delimiter])
    until = [until] if isinstance(until, str) else list(until)
    temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
    texts = scorer.generate(contexts, until=until, max_tokens=int(kwargs.get("max_gen_toks", 256)),
                            temperature=temperature, seed=kwargs.get("seed"))
    options = {m["metric"]: {k: v for k, v in m.items() if k in ("ignore_case", "ignore_punctuation",
                                                                "regexes_to_ignore", "ignore_numbers")}
               for m in task.metrics}
    for i, (doc, ctx, text) in enumerate(zip(docs, contexts, texts)):
        target = task.target(doc)
        sample = {"doc_id": i, "doc": doc, "target": target, "arguments": [[ctx, {"until": until}]],
                  "resps": [[text]], "filtered_resps": []}
        for flt in task.filters:
            answer = apply_filter(flt, [text])
            answer = answer if isinstance(answer, str) else answer[0]
            sample["filtered_resps"].append(answer)
            for metric in options:
                value = exact_match(answer, str(target), **options[metric])
                result.values.setdefault(f"{metric},{flt['name']}", []).append(value)
                sample[f"{metric},{flt['name']}"] = value
        result.samples.append(sample)


def _record(result, i, doc, target, arguments, resps, values: dict, want: set[str]) -> None:
    sample = {"doc_id": i, "doc": doc, "target": target, "arguments": arguments, "resps": resps,
              "filtered_resps": resps}
    for name in sorted(want):
        result.values.setdefault(f"{name},none", []).append(values[name])
        sample[f"{name},none"] = values[name]
    result.samples.append(sample)
