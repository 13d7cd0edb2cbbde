"""What compressing a model cost: the perplexity of a quantized form (a GGUF through llama.cpp, or a torch
int8/int4 directory) against the fp32 model, on the same held-out tokens, recorded in the model's lmforge.json.

Held-out tokens are the model's validation split (its lineage names the dataset); a model without one (a
directory transformers wrote, say) is measured on FALLBACK_TEXT, and `measured_on` says which was used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from lmforge.io import read_json

# Held-out text for a model whose lineage names no validation split: modules of the running Python's standard
# library, always present and the same for every export.
FALLBACK_TEXT = ("textwrap.py", "shlex.py", "fractions.py", "difflib.py")


def held_out_sources(model_dir: Path) -> Iterable[tuple[str, Iterable[str]]]:
    """(name, texts) candidates in order: the model's validation split (from its lineage), then FALLBACK_TEXT."""
    import sysconfig

    from lmforge.data.dataset import Dataset, record_text

    lineage = read_json(model_dir / "lmforge.json") if (model_dir / "lmforge.json").is_file() else {}
    path = (lineage.get("dataset") or {}).get("path")
    if path and Path(path).is_dir():
        yield "validation split", (record_text(r) for r in Dataset(path).records("validation"))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    yield ("python standard library: " + ", ".join(FALLBACK_TEXT),
           ((stdlib / f).read_text(encoding="utf-8") for f in FALLBACK_TEXT if (stdlib / f).is_file()))


def token_chunks(texts: Iterable[str], context: int, max_tokens: int, encode) -> list[list[int]]:
    """Up to `max_tokens` tokens of `texts`, as context-sized chunks."""
    chunks, total = [], 0
    for text in texts:
        ids = encode(text)
        for start in range(0, len(ids) - 1, context):
            chunk = ids[start:start + context]
            if len(chunk) > 1:
                chunks.append(chunk)
                total += len(chunk)
            if total >= max_tokens:
                return chunks
    return chunks


def held_out_chunks(model_dir: Path, tokenizer, context: int, max_tokens: int) -> tuple[str, list[list[int]]]:
    """The first source in held_out_sources that yields tokens, as chunks; ("", []) when none does."""
    from lmforge.infer.engine import prompt_ids

    for measured_on, texts in held_out_sources(model_dir):
        try:
            chunks = token_chunks(texts, context, max_tokens, lambda t: prompt_ids(tokenizer, t))
        except Exception:  # a dataset that moved or changed shape since training: use the next source
            chunks = []
        if chunks:
            return measured_on, chunks
    return "", []


def nll(logits_of: Callable[[list[int]], torch.Tensor], chunks: list[list[int]]) -> tuple[float, int]:
    """Summed next-token negative log-likelihood over `chunks` and the number of tokens it covers;
    `logits_of(ids)` gives the (T, V) logits of one chunk."""
    total, count = 0.0, 0
    for ids in chunks:
        logits = logits_of(ids)[:-1].float()                                           # (T-1, V)
        total += torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
        count += len(ids) - 1
    return total, count


def divergence(reference: Callable[[list[int]], torch.Tensor], other: Callable[[list[int]], torch.Tensor],
               chunks: list[list[int]]) -> dict:
    """Both models on the same chunks: summed next-token NLL of each, mean per-token KL(reference ‖ other) over
    the whole vocabulary, and the share of positions where their most likely next tokens agree."""
    nll_ref = nll_other = kl = 0.0
    agree = count = 0
    for ids in chunks:
        target = torch.tensor(ids[1:])                                                    # (T-1,)
        lp = torch.log_softmax(reference(ids)[:-1].float(), -1)                           # (T-1, V)
        lq = torch.log_softmax(other(ids)[:-1].float(), -1)                               # (T-1, V)
        nll_ref -= lp.gather(1, target[:, None]).sum().item()
        nll_other -= lq.gather(1, target[:, None]).sum().item()
        kl += (lp.exp() * (lp - lq)).sum().item()
        agree += int((lp.argmax(-1) == lq.argmax(-1)).sum())
        count += len(ids) - 1
    return {"tokens": count, "nll_reference": nll_ref, "nll": nll_other, "kl": kl / max(1, count),
            "top1_agreement": agree / max(1, count)}


def torch_logits(model) -> Callable[[list[int]], torch.Tensor]:
    @torch.no_grad()
    def logits_of(ids: list[int]) -> torch.Tensor:
        return model(torch.tensor([ids]))[0]                                           # (T, V)
    return logits_of


def gguf_logits(file: Path, context: int) -> Callable[[list[int]], torch.Tensor]:
    from lmforge.infer.llamacpp import _llama

    llm = _llama(Path(file), context, logits_all=True)

    def logits_of(ids: list[int]) -> torch.Tensor:
        llm.reset()
        llm.eval(ids)
        return torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))  # (T, V)
    return logits_of


def perplexity_change(model_dir: str | os.PathLike, quantized: str | os.PathLike, *,
                      max_tokens: int = 4096) -> dict | None:
    """Perplexity of the fp32 model at `model_dir` and of `quantized` (a .gguf file, or a model directory such
    as a torch int8/int4 export or a pruned model) on the same held-out tokens, with their KL divergence and
    top-1 agreement (`divergence`); None when there is no text at all."""
    from lmforge.model.hf import load_pretrained, load_model

    model_dir, quantized = Path(model_dir), Path(quantized)
    model, tokenizer = load_pretrained(model_dir)
    context = model.config.max_position_embeddings
    measured_on, chunks = held_out_chunks(model_dir, tokenizer, context, max_tokens)
    if not chunks:
        return None
    other = gguf_logits(quantized, context) if quantized.suffix == ".gguf" else torch_logits(load_model(quantized))
    d = divergence(torch_logits(model), other, chunks)
    ppl_fp32, ppl = float(np.exp(d["nll_reference"] / d["tokens"])), float(np.exp(d["nll"] / d["tokens"]))
    return {"tokens": d["tokens"], "ppl_fp32": ppl_fp32, "ppl": ppl, "change": ppl / ppl_fp32 - 1.0,
            "ppl_ratio": ppl / ppl_fp32, "kl": d["kl"], "top1_agreement": d["top1_agreement"],
            "measured_on": measured_on}


def record_export(model_dir: str | os.PathLike, entry: dict) -> None:
    """Append an export's record (file, format, type, perplexity change) to the model's lmforge.json `exports`."""
    from lmforge.io import write_json

    file = Path(model_dir) / "lmforge.json"
    lineage = read_json(file) if file.is_file() else {}
    lineage["exports"] = [e for e in lineage.get("exports", []) if e.get("file") != entry["file"]] + [entry]
    write_json(file, lineage)
