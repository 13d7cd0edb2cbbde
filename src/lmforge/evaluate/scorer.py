"""What the harness asks of a model: log-likelihoods of continuations and greedy generations.

Batch-size invariance: each scored sequence is right-padded to a length bucket fixed by its own length
(BUCKET tokens), and only sequences of the same bucket share a batch. A row's computation then has the same
shape whatever else is in its batch, so its scores do not move with `--batch-size` (in a causal model no real
token attends to the padding after it; without buckets, padding to the batch's longest row changes the
attention's reduction lengths, and the log-likelihoods by ~1e-6 — lm-eval's behaviour).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmforge.train.precision import autocast

BUCKET = 32


@dataclass
class LoglikelihoodResult:
    logprob: float
    """Summed log-probability of the continuation's tokens."""
    greedy: bool
    """Whether every continuation token is the argmax at its position."""
    tokens: int


class ModelScorer:
    """A LocalModel (torch backend) seen as the harness needs it."""

    def __init__(self, local, *, batch_size: int = 16, precision: str = "fp32"):
        self.local, self.model, self.tokenizer = local, local.model, local.tokenizer
        self.batch_size, self.precision = batch_size, precision
        self.max_len = local.model.config.max_position_embeddings

    # --- tokens ----------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def prefix(self, *, nonempty: bool = False) -> list[int]:
        """What a scored sequence starts from: the BOS where the tokenizer adds one (as the trainer packed its
        documents); with `nonempty`, the EOS when it does not (something must precede the first prediction)."""
        if self.tokenizer.adds_bos and self.tokenizer.bos_id is not None:
            return [self.tokenizer.bos_id]
        return [self.tokenizer.eos_id] if nonempty else []

    def pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) as lm-eval splits them: the context's trailing whitespace moves to the
        continuation, the two are encoded together and the continuation is what follows the context's tokens."""
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return self.prefix(nonempty=not ctx) + ctx, whole[len(ctx):]

    # --- scoring ---------------------------------------------------------------------------------

    @torch.no_grad()
    def loglikelihood(self, pairs: list[tuple[list[int], list[int]]]) -> list[LoglikelihoodResult]:
        """Log-likelihood of each continuation after its context, keeping the last max_len tokens."""
        rows = []
        for ctx, cont in pairs:
            seq = (ctx + cont)[-(self.max_len + 1):]
            rows.append((seq[:-1], seq[1:], min(len(cont), len(seq) - 1)))
        bucket_of = [min(self.max_len, -(-len(x) // BUCKET) * BUCKET) for x, _, _ in rows]
        order = sorted(range(len(rows)), key=lambda i: (-bucket_of[i], i))
        out: list[LoglikelihoodResult | None] = [None] * len(rows)
        device = next(self.model.parameters()).device
        start = 0
        while start < len(order):
            width = bucket_of[order[start]]
            batch = [i for i in order[start:start + self.batch_size] if bucket_of[i] == width]
            start += len(batch)
            x = torch.zeros(len(batch), width, dtype=torch.long)                      # (B, T)
            for r, i in enumerate(batch):
                x[r, :len(rows[i][0])] = torch.tensor(rows[i][0])
            with autocast(self.precision, device.type):
                logits = self.model(x.to(device))                                      # (B, T, V)
            for r, i in enumerate(batch):
                inp, tgt, n = rows[i]
                span = logits[r, len(inp) - n:len(inp)].float().log_softmax(-1)      # (n, V)
                want = torch.tensor(tgt[len(tgt) - n:])                              # (n,)
                lp = span.gather(-1, want[:, None].to(span.device)).sum().item()
                greedy = bool((span.argmax(-1).cpu() == want).all())
                out[i] = LoglikelihoodResult(lp, greedy, n)
        return out  # type: ignore[return-value]

    def rolling_pairs(self, text: str) -> list[tuple[list[int], list[int]]]:
        """The whole text's tokens as (context, continuation) windows: every token predicted once, each with as
        much preceding context as the model holds (lm-eval's rolling windows, context length 1)."""
        ids = self.encode(text)
        seq = self.prefix(nonempty=True) + ids
        pairs, done = [], 0
        while done < len(ids):
            take = min(self.max_len, len(ids) - done)
            end = done + take + 1                                  # in seq: targets seq[done + 1:end]
            ctx_start = max(0, end - 1 - self.max_len)
            pairs.append((seq[ctx_start:done + 1], seq[done + 1:end]))
            done += take
        return pairs

    def generate(self, contexts: list[str], *, until: list[str], max_tokens: int, temperature: float = 0.0,
                 seed: int | None = None) -> list[str]:
        """Continuations of each context, cut at the first `until` string. At most half the model's context is
        generated, and the context's head is dropped to leave room for it (as lm-eval truncates on the left)."""
        from lmforge.infer.engine import prompt_ids
        from lmforge.infer.sampling import SamplingParams

        engine = self.local.engine
        max_tokens = min(max_tokens, engine.max_len // 2)  # a small context keeps half for the prompt
        room = engine.max_len - max_tokens
        params = [SamplingParams(max_tokens=max_tokens, temperature=temperature, stop=tuple(s for s in until if s),
                                 seed=None if seed is None else seed + i) for i in range(len(contexts))]
        requests = [engine.submit(prompt_ids(self.tokenizer, c)[-room:], p) for c, p in zip(contexts, params)]
        engine.run(requests)
        return [r.text for r in requests]
