"""Export a Llama-family model directory as one GGUF file for llama.cpp, GPT4All and Ollama, written by the
`gguf` package (llama.cpp's own writer and constants).

What the export has to get right, beyond copying tensors:
- q and k projections go from Hugging Face's half-split rotary layout to llama.cpp's interleaved one (rows
  permuted per head); without it greedy agreement falls to a quarter.
- `tokenizer.ggml.pre` names llama.cpp's pre-tokenizer. llama.cpp's converter recognises tokenizers by a hash and
  refuses a freshly trained one; a plain byte-level BPE splits exactly as llama.cpp's "gpt-2" pre-tokenizer does,
  so that is what we write for it, and refuse any other pre-tokenizer rather than tokenize differently.
- The chat template travels as `tokenizer.chat_template`, without the `{% generation %}` markers (they only tell
  the trainer which tokens to learn, and llama.cpp's template engine does not know them).
- q8_0 / q4_0 quantize 2-D weights whose rows are a multiple of the 32-value block; norms stay f32.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from lmforge.errors import ModelError
from lmforge.io import read_json

TYPES = ("f16", "q8_0", "q4_0")
END_OF_TURN = "<|end|>"


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's rotary halves -> llama.cpp's interleaved pairs, per head: rows (h, 2, d/2) become (h, d/2, 2)."""
    out_dim = w.shape[0]                                             # n_head * head_dim
    return (w.reshape(n_head, 2, out_dim // n_head // 2, *w.shape[1:])  # (H, 2, D/2, C)
            .swapaxes(1, 2)                                          # (H, D/2, 2, C)
            .reshape(w.shape))                                       # (H*D, C)


def _pre_tokenizer(tok: dict, where: str) -> str:
    pre = tok.get("pre_tokenizer") or {}
    if tok.get("model", {}).get("type") != "BPE":
        raise ModelError("only byte-level BPE tokenizers export to GGUF", where=where)
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space", False) \
            and not tok.get("normalizer"):
        return "gpt-2"
    raise ModelError(f"the pre-tokenizer {json.dumps(pre)[:120]} has no llama.cpp equivalent lmforge has verified",
                     where=where, hint="lmforge exports tokenizers it trains (byte-level BPE, GPT-2 splitting)")


def _vocab(tok: dict, vocab_size: int) -> tuple[list[str], list[int]]:
    import gguf

    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [int(gguf.TokenType.UNUSED)] * vocab_size
    for piece, i in tok["model"]["vocab"].items():
        if i < vocab_size:
            tokens[i], types[i] = piece, int(gguf.TokenType.NORMAL)
    for added in tok.get("added_tokens", []):
        if added["id"] < vocab_size:
            tokens[added["id"]] = added["content"]
            types[added["id"]] = int(gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED)
    return tokens, types


def _tensor_type(name: str, w: np.ndarray, qtype: str):
    import gguf

    if w.ndim == 1:
        return gguf.GGMLQuantizationType.F32
    if qtype == "f16" or w.shape[-1] % 32:
        return gguf.GGMLQuantizationType.F16
    return {"q8_0": gguf.GGMLQuantizationType.Q8_0, "q4_0": gguf.GGMLQuantizationType.Q4_0}[qtype]


def export_gguf(model_dir: str | os.PathLike, out: str | os.PathLike, *, qtype: str = "f16") -> Path:
    """Write `model_dir` (Hugging Face layout, Llama family) as the GGUF file `out`; atomic (a temporary file is
    renamed into place), so a failure leaves no half-written file."""
    import gguf
    from safetensors.numpy import load_file

    from lmforge.infer.catalog import describe

    if qtype not in TYPES:
        raise ModelError(f"unknown GGUF type {qtype!r}", hint=f"choose one of {', '.join(TYPES)}")
    model_dir, out = Path(model_dir), Path(out)
    if describe(model_dir)["format"] != "hf":
        raise ModelError("already a GGUF file", where=str(model_dir), hint="export a model directory")
    if not out.parent.is_dir():
        raise ModelError("the output's folder does not exist", where=str(out.parent), hint="create it first")
    config = read_json(model_dir / "config.json")
    tok = read_json(model_dir / "tokenizer.json")
    tok_config = read_json(model_dir / "tokenizer_config.json") if (model_dir / "tokenizer_config.json").is_file() \
        else {}
    pre = _pre_tokenizer(tok, str(model_dir / "tokenizer.json"))
    weights_file = model_dir / "model.safetensors"
    if not weights_file.is_file():
        raise ModelError("no model.safetensors (a single-file checkpoint is what the exporter reads)",
                         where=str(model_dir))
    state = load_file(str(weights_file))
    if config.get("rope_scaling"):
        raise ModelError("rope_scaling is not exported yet", where=str(model_dir / "config.json"))

    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    vocab_size = config["vocab_size"]
    name = {"f16": gguf.LlamaFileType.MOSTLY_F16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
            "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[qtype]

    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, "llama")
        from lmforge.infer.local import model_id

        w.add_name(model_id(model_dir))
        w.add_context_length(config["max_position_embeddings"])
        w.add_embedding_length(config["hidden_size"])
        w.add_block_count(config["num_hidden_layers"])
        w.add_feed_forward_length(config["intermediate_size"])
        w.add_head_count(n_head)
        w.add_head_count_kv(n_kv)
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_rope_dimension_count(head_dim)
        w.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
        w.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-5)))
        w.add_vocab_size(vocab_size)
        w.add_file_type(name)
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)

        tokens, types = _vocab(tok, vocab_size)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        merges = tok["model"]["merges"]
        w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
        ids = {t: i for i, t in enumerate(tokens)}
        for key, add in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                         ("pad_token_id", w.add_pad_token_id)):
            if config.get(key) is not None:
                add(int(config[key]))
        if END_OF_TURN in ids:
            w.add_eot_token_id(ids[END_OF_TURN])
        w.add_add_bos_token(bool(tok_config.get("add_bos_token", config.get("bos_token_id") is not None)))
        w.add_add_eos_token(False)
        template = tok_config.get("chat_template")
        if template:
            w.add_chat_template(re.sub(r"{%-?\s*(end)?generation\s*-?%}", "", template))

        tied = config.get("tie_word_embeddings", False) or "lm_head.weight" not in state
        names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
        if not tied:
            names["lm_head.weight"] = "output.weight"
        per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                     "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
                     "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                     "mlp.down_proj": "ffn_down"}
        for i in range(config["num_hidden_layers"]):
            for hf, gg in per_layer.items():
                names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
        missing = [k for k in names if k not in state]
        if missing:
            raise ModelError(f"weights missing for the GGUF: {missing[:4]}", where=str(weights_file))
        for hf, gg in names.items():
            t = state[hf].astype(np.float32)
            if hf.endswith("q_proj.weight"):
                t = _permute(t, n_head)
            elif hf.endswith("k_proj.weight"):
                t = _permute(t, n_kv)
            ttype = _tensor_type(gg, t, qtype)
            if ttype == gguf.GGMLQuantizationType.F32:
                w.add_tensor(gg, t)
            elif ttype == gguf.GGMLQuantizationType.F16:
                w.add_tensor(gg, t.astype(np.float16))
            else:
                w.add_tensor(gg, gguf.quants.quantize(t, ttype), raw_dtype=ttype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def ollama_modelfile(gguf_name: str, chat_template: str | None) -> str:
    """A Modelfile for `ollama create NAME -f Modelfile`: the GGUF beside it, lmforge's chat format as a Go
    template, and its end-of-turn marker as a stop."""
    lines = [f"FROM ./{gguf_name}"]
    if chat_template and "<|assistant|>" in chat_template:
        lines.append('TEMPLATE """{{- range .Messages }}{{- if eq .Role "assistant" }}<|assistant|>\n{{ .Content }}'
                     '<|end|>\n{{ else }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}{{- end }}<|assistant|>\n"""')
        lines += ['PARAMETER stop "<|end|>"', 'PARAMETER stop "<|eos|>"']
    return "\n".join(lines) + "\n"


def export_ollama(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *, qtype: str = "f16") -> Path:
    """A folder with the GGUF and a Modelfile; `ollama create NAME -f OUT/Modelfile` imports it."""
    from lmforge.infer.local import model_id

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ModelError("the output folder is not empty", where=str(out_dir), hint="choose a new folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    file = export_gguf(model_dir, out_dir / f"{model_id(model_dir)}-{qtype}.gguf", qtype=qtype)
    tok_config = model_dir / "tokenizer_config.json"
    template = read_json(tok_config).get("chat_template") if tok_config.is_file() else None
    (out_dir / "Modelfile").write_text(ollama_modelfile(file.name, template), encoding="utf-8")
    return out_dir


def _validation_chunks(model_dir: Path, context: int, max_tokens: int, encode) -> list[list[int]] | None:
    """Up to `max_tokens` of the model's validation split (from its lineage), as context-sized token chunks."""
    from lmforge.data.dataset import Dataset, record_text

    path = (read_json(model_dir / "lmforge.json").get("dataset") or {}).get("path") \
        if (model_dir / "lmforge.json").is_file() else None
    if not path or not Path(path).is_dir():
        return None
    chunks, total = [], 0
    for record in Dataset(path).records("validation"):
        ids = encode(record_text(record))[:context]
        if len(ids) > 1:
            chunks.append(ids)
            total += len(ids)
        if total >= max_tokens:
            break
    return chunks or None


def perplexity_change(model_dir: str | os.PathLike, gguf_file: str | os.PathLike, *,
                      max_tokens: int = 4096) -> dict | None:
    """Perplexity of the fp32 torch model and of the GGUF (through llama.cpp) on the same validation tokens;
    None when the model's lineage names no validation split to measure on."""
    import torch

    from lmforge.infer.engine import prompt_ids
    from lmforge.infer.llamacpp import _llama
    from lmforge.model.hf import load_pretrained

    model_dir = Path(model_dir)
    model, tokenizer = load_pretrained(model_dir)
    chunks = _validation_chunks(model_dir, model.config.max_position_embeddings, max_tokens,
                                lambda text: prompt_ids(tokenizer, text))
    if chunks is None:
        return None
    llm = _llama(Path(gguf_file), model.config.max_position_embeddings, logits_all=True)
    nll_torch = nll_gguf = 0.0
    count = 0
    for ids in chunks:
        targets = torch.tensor(ids[1:])                                                # (T-1,)
        with torch.no_grad():
            logits = model(torch.tensor([ids]))[0, :-1].float()                         # (T-1, V)
        nll_torch += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        llm.reset()
        llm.eval(ids)
        scores = torch.from_numpy(np.array(llm.scores[: len(ids) - 1], dtype=np.float32))  # (T-1, V)
        nll_gguf += torch.nn.functional.cross_entropy(scores, targets, reduction="sum").item()
        count += len(ids) - 1
    ppl_torch, ppl_gguf = float(np.exp(nll_torch / count)), float(np.exp(nll_gguf / count))
    return {"tokens": count, "ppl_fp32": ppl_torch, "ppl": ppl_gguf, "change": ppl_gguf / ppl_torch - 1.0,
            "measured_on": "validation split"}


def record_export(model_dir: str | os.PathLike, entry: dict) -> None:
    """Append an export's record (file, type, perplexity change) to the model's lmforge.json `exports`."""
    from lmforge.io import write_json

    file = Path(model_dir) / "lmforge.json"
    lineage = read_json(file) if file.is_file() else {}
    lineage["exports"] = [e for e in lineage.get("exports", []) if e.get("file") != entry["file"]] + [entry]
    write_json(file, lineage)
