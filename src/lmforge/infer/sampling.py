"""What to generate and how to pick each token: the sampling parameters, the logits processors (in
transformers' order: repetition penalty, temperature, top-k, top-p, min-p), and stop strings.

Each request carries its own parameters and its own seeded generator, so one request's draws never depend on
which other requests share its batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lmforge.errors import RequestError


@dataclass(frozen=True)
class SamplingParams:
    """How one request is sampled. Defaults follow llama.cpp's server where the OpenAI API is silent."""

    max_tokens: int = 128
    """Most new tokens; generation also stops at the model's end-of-sequence / end-of-turn tokens."""
    temperature: float = 0.8
    """0 is greedy (argmax); otherwise logits are divided by it before the filters below."""
    top_k: int = 0
    """Keep only the k likeliest tokens (0 = off)."""
    top_p: float = 1.0
    """Keep the smallest set of likeliest tokens whose probability reaches top_p (1 = off)."""
    min_p: float = 0.0
    """Drop tokens less likely than min_p times the likeliest one (0 = off)."""
    repetition_penalty: float = 1.0
    """CTRL's penalty on tokens already in the sequence (1 = off)."""
    seed: int | None = None
    """Same seed, same prompt, same parameters: same text."""
    stop: tuple[str, ...] = field(default_factory=tuple)
    """Strings that end the text; the text returned stops before the first of them."""

    def __post_init__(self):
        checks = [
            ("max_tokens", isinstance(self.max_tokens, int) and self.max_tokens >= 1, "an integer >= 1"),
            ("temperature", 0.0 <= self.temperature <= 100.0, "between 0 and 100"),
            ("top_k", isinstance(self.top_k, int) and self.top_k >= 0, "an integer >= 0"),
            ("top_p", 0.0 < self.top_p <= 1.0, "in (0, 1]"),
            ("min_p", 0.0 <= self.min_p < 1.0, "in [0, 1)"),
            ("repetition_penalty", 0.0 < self.repetition_penalty <= 10.0, "in (0, 10]"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise RequestError(f"{name} must be {want}, got {getattr(self, name)!r}", param=name)
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise RequestError("stop must be a list of non-empty strings", param="stop")

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


def penalize_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (as in transformers and llama.cpp): a token already in the sequence has its
    logit divided by `penalty` when positive, multiplied when negative. `seen` holds the distinct ids."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    picked = logits[seen]
    return logits.index_copy(0, seen, torch.where(picked > 0, picked / penalty, picked * penalty))


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, top-p and min-p: the returned logits are -inf where a token may not be drawn
    (the likeliest token always survives)."""
    logits = logits.float() / params.temperature                                  # (V,)
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = probs.cumsum(-1) - probs >= params.top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.index_put((order[drop],), torch.tensor(float("-inf")))
    if params.min_p > 0.0:
        probs = torch.softmax(logits, dim=-1)
        logits = logits.masked_fill(probs < params.min_p * probs.max(), float("-inf"))
    return logits


def pick(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token id from a 1-D logits vector (after any penalty or mask)."""
    if params.greedy:
        return int(torch.argmax(logits))
    probs = torch.softmax(filter_logits(logits, params), dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class StopStrings:
    """Finds stop strings in streamed text and holds back any tail that could still become one, so that a
    client never receives text that the final answer does not contain."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.text = ""     # everything decoded so far
        self.sent = 0      # how much of it has been released

    def feed(self, piece: str) -> tuple[str, bool]:
        """Add decoded text; return what may be released now, and whether a stop string was met."""
        self.text += piece
        # a stop string may straddle the previous release point: look back as far as the longest one
        start = max(0, self.sent - self.hold)
        hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if hits:
            end = min(hits)
            out, self.sent = self.text[self.sent:end], end
            return out, True
        safe = len(self.text) - self._partial_tail()
        out = self.text[self.sent:max(safe, self.sent)]
        self.sent = max(safe, self.sent)
        return out, False

    def flush(self) -> str:
        out, self.sent = self.text[self.sent:], len(self.text)
        return out

    def _partial_tail(self) -> int:
        """Length of the longest suffix of the text that is a proper prefix of a stop string."""
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best
