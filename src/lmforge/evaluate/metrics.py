"""Metrics as per-item values plus an aggregation, so every score gets a bootstrap interval over items and two
models scored on the same items get a paired test.

A metric's per-item value is a float (acc: 0/1; perplexity: the item's log-likelihood) or a (numerator,
denominator) pair for the weighted ones (bits per byte: nats and bytes), and `aggregate` turns a list of them
into the score, exactly as lm-eval aggregates (perplexity = exp(-mean log-likelihood); word/byte perplexity and
bits per byte weighted by words/bytes).
"""

from __future__ import annotations

import math
import re
import string
from typing import Sequence

import numpy as np

from lmforge.errors import DataError

# metric -> (output types it applies to, aggregation, higher is better)
METRICS = {
    "acc": (("multiple_choice", "loglikelihood"), "mean", True),
    "acc_norm": (("multiple_choice",), "mean", True),
    "perplexity": (("loglikelihood",), "perplexity", False),
    "exact_match": (("generate_until",), "mean", True),
    "word_perplexity": (("loglikelihood_rolling",), "weighted_perplexity", False),
    "byte_perplexity": (("loglikelihood_rolling",), "weighted_perplexity", False),
    "bits_per_byte": (("loglikelihood_rolling",), "bits_per_byte", False),
    # computed by the shipped tasks only (builtin.py), not named in task files
    "loss": ((), "weighted_mean", False),                 # nats per token: [nats, tokens] per window
    "pass@1": ((), "mean", True),
    "pass@10": ((), "mean", True),
    "pass@100": ((), "mean", True),
}
BOOTSTRAP_ITERS = 1000
CONFIDENCE = 0.95


def check_metric(name: str, output_type: str, where: str) -> None:
    if name not in METRICS or not METRICS[name][0]:
        raise DataError(f"unknown metric {name!r}", where=where,
                        hint=f"supported: {', '.join(m for m in METRICS if METRICS[m][0])}")
    if output_type not in METRICS[name][0]:
        raise DataError(f"metric {name!r} does not apply to {output_type}", where=where,
                        hint=f"it applies to {', '.join(METRICS[name][0])}")


def higher_is_better(name: str) -> bool:
    return METRICS[name][2] if name in METRICS else True


def aggregate(name: str, values: Sequence) -> float:
    kind = METRICS[name][1] if name in METRICS else "mean"
    if kind == "mean":
        return float(np.mean(values)) if len(values) else float("nan")
    if kind == "perplexity":
        return float(math.exp(-np.mean(values)))
    v = np.asarray(values, dtype=np.float64).reshape(-1, 2)  # (items, [log-likelihood, words or bytes])
    if kind == "weighted_perplexity":
        return float(math.exp(-v[:, 0].sum() / v[:, 1].sum()))
    if kind == "weighted_mean":
        return float(v[:, 0].sum() / v[:, 1].sum())
    return float(-v[:, 0].sum() / v[:, 1].sum() / math.log(2))  # bits_per_byte


def _resample_indices(n: int, iters: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(iters, n))           # (iters, n)


def bootstrap(name: str, values: Sequence, *, iters: int = BOOTSTRAP_ITERS, seed: int = 0) -> dict:
    """The score, its bootstrap standard error and percentile interval (CONFIDENCE) over resampled items."""
    score = aggregate(name, values)
    n = len(values)
    if n < 2:
        return {"score": score, "stderr": float("nan"), "ci": [float("nan"), float("nan")]}
    idx = _resample_indices(n, iters, seed)
    kind = METRICS[name][1] if name in METRICS else "mean"
    arr = np.asarray(values, dtype=np.float64)
    if kind == "mean":
        stats = arr[idx].mean(1)                                                      # (iters,)
    elif kind == "perplexity":
        stats = np.exp(-arr[idx].mean(1))
    else:
        pairs = arr.reshape(n, 2)
        num, den = pairs[idx, 0].sum(1), pairs[idx, 1].sum(1)                         # (iters,) each
        stats = {"weighted_perplexity": lambda: np.exp(-num / den), "weighted_mean": lambda: num / den,
                 "bits_per_byte": lambda: -num / den / math.log(2)}[kind]()
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return {"score": score, "stderr": float(stats.std(ddof=1)), "ci": [float(lo), float(hi)]}


# --- paired comparison of two models on the same items -------------------------------------------


def paired_bootstrap(name: str, a: Sequence, b: Sequence, *, iters: int = BOOTSTRAP_ITERS, seed: int = 0) -> dict:
    """score(b) - score(a) with a paired bootstrap interval (the same resampled items for both) and the share
    of resamples in which the difference's sign flips (a two-sided bootstrap p-value)."""
    if len(a) != len(b):
        raise DataError(f"paired comparison needs the same items: {len(a)} against {len(b)}",
                        hint="evaluate both models on the same task with the same --limit")
    diff = aggregate(name, b) - aggregate(name, a)
    n = len(a)
    if n < 2:
        return {"difference": diff, "ci": [float("nan"), float("nan")], "p_bootstrap": float("nan")}
    idx = _resample_indices(n, iters, seed)
    if METRICS.get(name, ((), "mean"))[1] == "mean":
        stats = np.asarray(b, dtype=np.float64)[idx].mean(1) - np.asarray(a, dtype=np.float64)[idx].mean(1)
    else:  # weighted or exponentiated: aggregate each resample as the score itself is aggregated
        stats = np.array([aggregate(name, [b[i] for i in row]) - aggregate(name, [a[i] for i in row]) for row in idx])
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    p = min(1.0, 2 * min((stats <= 0).mean(), (stats >= 0).mean()))
    return {"difference": diff, "ci": [float(lo), float(hi)], "p_bootstrap": float(p)}


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """McNemar's exact test on paired right/wrong outcomes: only the items the two disagree on count, and under
    the null each disagreement favours either model with probability 1/2 (a two-sided binomial test)."""
    from scipy.stats import binomtest

    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(binomtest(only_b, n, 0.5).pvalue)
    return {"only_a": only_a, "only_b": only_b, "p_value": p}


# --- per-item values ------------------------------------------------------------------------------


def exact_match(prediction: str, reference: str, *, ignore_case: bool = False, ignore_punctuation: bool = False,
                regexes_to_ignore: Sequence[str] = (), ignore_numbers: bool = False) -> float:
    """1.0 when prediction equals reference after the options' normalisation (HF evaluate's exact_match)."""
    for pattern in regexes_to_ignore:
        prediction, reference = re.sub(pattern, "", prediction), re.sub(pattern, "", reference)
    if ignore_case:
        prediction, reference = prediction.lower(), reference.lower()
    if ignore_punctuation:
        table = str.maketrans("", "", string.punctuation)
        prediction, reference = prediction.translate(table), reference.translate(table)
    if ignore_numbers:
        table = str.maketrans("", "", string.digits)
        prediction, reference = prediction.translate(table), reference.translate(table)
    return float(prediction == reference)
