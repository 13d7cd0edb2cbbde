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

TYPES = ("f16", "q8_0", "q4_0", "f32")
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


def _tensor_type(gguf_name: str, w: np.ndarray, qtype: str, *, head: bool):
    """llama.cpp's choices: 1-D tensors (norms) f32; 2-D weights in the file's type, f16 where their rows are
    not a whole number of blocks (convert_hf_to_gguf's QuantError fallback). For q4_0 the output head (the token
    embedding when tied) is q8_0: llama-quantize gives it Q6_K, which falls back to Q8_0 on rows that are not a
    multiple of 256, and which the gguf package cannot write."""
    import gguf

    T = gguf.GGMLQuantizationType
    if w.ndim == 1 or qtype == "f32":
        return T.F32
    if qtype == "f16":
        return T.F16
    wanted = T.Q8_0 if qtype == "q8_0" or head else T.Q4_0
    return wanted if w.shape[-1] % gguf.GGML_QUANT_SIZES[wanted][0] == 0 else T.F16


def export_gguf(model_dir: str | os.PathLike, out: str | os.PathLike, *, qtype: str = "f16") -> Path:
    """Write `model_dir` (Hugging Face layout, Llama family) as the GGUF file `out`; atomic (a temporary file is
    renamed into place), so a failure leaves no half-written file."""
    import gguf
    from safetensors.numpy import load_file

    from lmforge.infer.catalog import describe
    from lmforge.infer.local import model_id

    if qtype not in TYPES:
        raise ModelError(f"unknown GGUF type {qtype!r}", hint=f"choose one of {', '.join(TYPES)}")
    model_dir, out = Path(model_dir), Path(out)
    if describe(model_dir)["format"] != "hf":  # also: it exists, is Llama-family, has config and tokenizer
        raise ModelError("already a GGUF file", where=str(model_dir), hint="export a model directory")
    if not out.parent.is_dir():
        raise ModelError("the output's folder does not exist", where=str(out.parent), hint="create it first")
    if out.is_dir():
        raise ModelError("the output is a folder", where=str(out), hint="name a .gguf file (or use --format ollama)")
    config = read_json(model_dir / "config.json")
    if config.get("rope_scaling"):
        raise ModelError("rope_scaling is not exported yet", where=str(model_dir / "config.json"))
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise ModelError("biases in attention or MLP are not exported", where=str(model_dir / "config.json"))
    tok = read_json(model_dir / "tokenizer.json")
    tok_config = read_json(model_dir / "tokenizer_config.json") if (model_dir / "tokenizer_config.json").is_file() \
        else {}
    pre = _pre_tokenizer(tok, str(model_dir / "tokenizer.json"))
    weights_file = model_dir / "model.safetensors"
    if not weights_file.is_file():
        raise ModelError("no model.safetensors (a single-file checkpoint is what the exporter reads)",
                         where=str(model_dir))
    state = load_file(str(weights_file))

    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    vocab_size = config["vocab_size"]
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
    head_name = "token_embd.weight" if tied else "output.weight"

    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    w = None
    try:
        w = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
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
        w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                         "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[qtype])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)

        tokens, types = _vocab(tok, vocab_size)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
        ids = {t: i for i, t in enumerate(tokens)}
        special = _special_ids(config, tok_config, ids)
        for key, add in (("bos", w.add_bos_token_id), ("eos", w.add_eos_token_id), ("pad", w.add_pad_token_id)):
            if special[key] is not None:
                add(special[key])
        if END_OF_TURN in ids:
            w.add_eot_token_id(ids[END_OF_TURN])
        w.add_add_bos_token(_adds_bos(tok, tok_config, special["bos"]))
        w.add_add_eos_token(bool(tok_config.get("add_eos_token", False)))
        template = tok_config.get("chat_template")
        if isinstance(template, str) and template:
            w.add_chat_template(_GENERATION_TAG.sub("", template))

        for hf, gg in names.items():
            t = state[hf].astype(np.float32)
            if hf.endswith("q_proj.weight"):
                t = _permute(t, n_head)
            elif hf.endswith("k_proj.weight"):
                t = _permute(t, n_kv)
            ttype = _tensor_type(gg, t, qtype, head=gg == head_name)
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
        w = None
        os.replace(tmp, out)
    finally:
        if w is not None:
            w.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


_GENERATION_TAG = re.compile(r"{%-?\s*(end)?generation\s*-?%}")


def _special_ids(config: dict, tok_config: dict, ids: dict[str, int]) -> dict[str, int | None]:
    """bos / eos / pad ids: config.json's, else the tokens tokenizer_config.json names."""
    out = {}
    for key in ("bos", "eos", "pad"):
        value = config.get(f"{key}_token_id")
        if isinstance(value, list):  # some configs list several eos ids; llama.cpp takes one
            value = value[0] if value else None
        if value is None:
            token = tok_config.get(f"{key}_token")
            token = token.get("content") if isinstance(token, dict) else token
            value = ids.get(token) if token else None
        out[key] = int(value) if value is not None else None
    return out


def _adds_bos(tok: dict, tok_config: dict, bos: int | None) -> bool:
    """Whether encoding prepends BOS: tokenizer_config's add_bos_token, else whether tokenizer.json's
    post-processor puts a special token first (as transformers' PreTrainedTokenizerFast then does)."""
    if bos is None:
        return False
    if "add_bos_token" in tok_config:
        return bool(tok_config["add_bos_token"])
    post = tok.get("post_processor") or {}
    single = post.get("single") or []
    return post.get("type") == "TemplateProcessing" and bool(single) and "SpecialToken" in single[0]


_SLOT = "\x00content\x00"


def _go_template(chat_template: str, tok_config: dict) -> tuple[str, str] | None:
    """lmforge's chat template as an Ollama (Go text/template) TEMPLATE, and the assistant's turn ending, derived
    by rendering the Jinja template: each role's text before and after its content, the generation prompt, and a
    check that a whole conversation renders to exactly those pieces. None when the template is not of that shape
    (per-role wrapping, nothing depending on position); then Ollama falls back to the GGUF's own template."""
    from lmforge.model.tokenizer import render_chat_template

    def token(key):
        value = tok_config.get(key)
        return value.get("content") if isinstance(value, dict) else value

    special = {k: token(k) for k in ("bos_token", "eos_token") if token(k)}

    def render(messages, gen=False):
        return render_chat_template(chat_template, messages, add_generation_prompt=gen, **special)[0]

    try:
        head = render([])
        wrap = {}
        for role in ("system", "user", "assistant"):
            text = render([{"role": role, "content": _SLOT}])
            if not text.startswith(head) or text.count(_SLOT) != 1:
                return None
            wrap[role] = tuple(text[len(head):].split(_SLOT))
        turn = [{"role": "user", "content": "u"}]
        generation = render(turn, True)[len(render(turn)):]
        conversation = [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
                        {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}]
        expected = render(conversation, True)
    except Exception:  # a template that refuses these conversations (role order rules, raise_exception)
        return None
    if head + "".join(wrap[m["role"]][0] + m["content"] + wrap[m["role"]][1] for m in conversation) + generation \
            != expected:
        return None
    if special.get("bos_token") and tok_config.get("add_bos_token", True) and head.startswith(special["bos_token"]):
        head = head[len(special["bos_token"]):]  # llama.cpp (under Ollama) adds BOS when it tokenizes
    pieces = [head, generation, *(x for pair in wrap.values() for x in pair)]
    if any("{{" in x or "}}" in x or '"""' in x for x in pieces):
        return None
    branches = "".join(f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{pre}{{{{ .Content }}}}{post}'
                       for i, (role, (pre, post)) in enumerate(wrap.items()))
    return head + "{{ range .Messages }}" + branches + "{{ end }}{{ end }}" + generation, wrap["assistant"][1]


def ollama_modelfile(gguf_name: str, tok_config: dict, special_tokens: list[str]) -> str:
    """A Modelfile for `ollama create NAME -f Modelfile`: the GGUF beside it, the chat template as a Go template,
    and the special tokens that end an assistant's turn (and EOS) as stops."""
    lines = [f"FROM ./{gguf_name}"]
    template = tok_config.get("chat_template")
    derived = _go_template(template, tok_config) if isinstance(template, str) and template else None
    stops = []
    if derived:
        go, ending = derived
        lines.append(f'TEMPLATE """{go}"""')
        stops = [t for t in special_tokens if t in ending]
    eos = tok_config.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    if eos and eos not in stops:
        stops.append(eos)
    lines += [f"PARAMETER stop {json.dumps(t)}" for t in stops]
    return "\n".join(lines) + "\n"


def export_ollama(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *, qtype: str = "f16") -> Path:
    """A folder with the GGUF and a Modelfile; `ollama create NAME -f OUT/Modelfile` imports it. A failure
    removes the folder it created."""
    import shutil

    from lmforge.infer.local import model_id

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ModelError("the output folder is not empty", where=str(out_dir), hint="choose a new folder")
    if not out_dir.parent.is_dir():
        raise ModelError("the output's folder does not exist", where=str(out_dir.parent), hint="create it first")
    created = not out_dir.exists()
    out_dir.mkdir(exist_ok=True)
    try:
        file = export_gguf(model_dir, out_dir / f"{model_id(model_dir)}-{qtype}.gguf", qtype=qtype)
        tok_file = model_dir / "tokenizer_config.json"
        tok_config = read_json(tok_file) if tok_file.is_file() else {}
        special = [t["content"] for t in read_json(model_dir / "tokenizer.json").get("added_tokens", [])
                   if t.get("special")]
        from lmforge.io import atomic_write_text

        atomic_write_text(out_dir / "Modelfile", ollama_modelfile(file.name, tok_config, special))
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return out_dir
