"""`lmforge map` stage by stage: records/s of read, signals, embed, exact, near, semantic, umap, clusters, labels
and write on N records, and, in the same run, the projection as umap-learn does it on its own (pynndescent
neighbours, `UMAP.fit` on the same sample, `UMAP.transform` for the rest) as the peer of lmforge's umap stage.

    python benchmarks/map_stages.py [--records 100000] [--fit-sample 20000] [--no-peer]

Records: ~150 words of real Python source each — three runs of 50 consecutive words taken at seeded random
places of the running interpreter's standard library — plus planted copies (10% near duplicates with ~2% of the
words edited, 2% re-spaced exact duplicates), so the duplicate stages have real work. The embedding cache is a
fresh directory: nothing is reused from an earlier run (so "other" includes exporting the embedding model to
ONNX, once per cache). Writes benchmarks/results/map_stages.json (machine,
threads, versions, seconds, CPU-seconds and records/s per stage, the peer's figures and the ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from corpus import stdlib_tokens   # benchmarks/corpus.py (the script's folder is on sys.path)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # busy-waiting OpenMP threads collapse on shared cores

ROOT = Path(__file__).resolve().parents[1]


def corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    toks = stdlib_tokens()
    n_near, n_exact = n // 10, n // 50
    texts = []
    for _ in range(n - n_near - n_exact):
        parts = []
        for _ in range(3):
            s = rng.randrange(len(toks) - 50)
            parts += toks[s:s + 50]
        texts.append(" ".join(parts))
    base = len(texts)
    for _ in range(n_near):
        words = texts[rng.randrange(base)].split()
        for _ in range(max(1, len(words) // 50)):
            words[rng.randrange(len(words))] = rng.choice(toks)
        texts.append(" ".join(words))
    for _ in range(n_exact):
        texts.append("  " + texts[rng.randrange(base)].replace(" ", "\n", 3))
    rng.shuffle(texts)
    return texts


def cpu_seconds() -> float:
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def peer_umap(emb, fit_sample: int, seed: int) -> float:
    """Seconds of umap-learn on its own: fit on the same seeded sample, transform the rest in the same chunks."""
    import warnings

    import numpy as np
    import umap

    from lmforge.curate.project import CHUNK, MIN_DIST, N_NEIGHBORS

    n = emb.shape[0]
    t0 = time.perf_counter()
    rows = np.sort(np.random.default_rng(seed).choice(n, fit_sample, replace=False)) if n > fit_sample \
        else np.arange(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_neighbors=N_NEIGHBORS, min_dist=MIN_DIST, metric="cosine", random_state=seed)
        reducer.fit(np.asarray(emb[rows]))
        rest = np.setdiff1d(np.arange(n), rows)
        for s in range(0, len(rest), CHUNK):
            reducer.transform(np.asarray(emb[rest[s:s + CHUNK]]))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--fit-sample", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-peer", action="store_true", help="skip umap-learn's own projection")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "map_stages.json"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="map-bench-"))
    os.environ["LMFORGE_CACHE"] = str(work / "cache")  # a cold embedding cache
    try:
        run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args, work: Path) -> None:
    import numpy as np

    from lmforge.curate.mapping import STAGES, build_map
    from lmforge.data.ingest import write_dataset
    from lmforge.io import machine_name

    texts = corpus(args.records, args.seed)
    write_dataset(({"id": str(i), "text": t, "messages": None, "source": "stdlib", "split": "train"}
                   for i, t in enumerate(texts)), work / "ds", progress=False)
    words = sum(len(t.split()) for t in texts) / len(texts)
    del texts

    timings: dict[str, float] = {}
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    info = build_map(work / "ds", work / "map", fit_sample=args.fit_sample, seed=args.seed, timings=timings,
                     progress=sys.stdout.isatty())
    total, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    n = info["records"]
    stages = {s: {"seconds": round(timings[s], 3), "records_per_s": round(n / timings[s], 1) if timings[s] else None}
              for s in STAGES}
    cpus = len(os.sched_getaffinity(0))
    print(f"{n:,} records of {words:.0f} words on {machine_name()} ({cpus} cores)")
    for s, v in stages.items():
        print(f"  {s:9} {v['seconds']:9.2f} s  {v['records_per_s'] or 0:>12,.0f} records/s")
    other = total - sum(timings.values())
    print(f"  {'other':9} {other:9.2f} s  (opening the dataset, loading or exporting the embedding model)")
    print(f"  {'total':9} {total:9.2f} s  {n / total:>12,.0f} records/s   ({cpu:.0f} CPU-s)")

    result = {
        "benchmark": "map_stages", "machine": machine_name(), "cpus": cpus, "python": platform.python_version(),
        "versions": {m: __import__(m).__version__ for m in
                     ("numpy", "onnxruntime", "numba", "umap", "sklearn", "faiss", "pyarrow")},
        "records": n, "mean_words": round(words, 1), "fit_sample": args.fit_sample,
        "stages": stages, "other_seconds": round(other, 3), "total_seconds": round(total, 3),
        "cpu_seconds": round(cpu, 1),
        "clusters": info["stats"]["clusters"], "redundant": info["stats"]["redundant"],
    }
    if not args.no_peer:
        emb = np.load(work / "map" / "embeddings.npy", mmap_mode="r")
        peer = peer_umap(emb, args.fit_sample, args.seed)
        ratio = peer / timings["umap"]
        print(f"  umap-learn on its own (pynndescent): {peer:.2f} s -> lmforge's umap stage is {ratio:.2f}x as fast")
        result["peer_umap"] = {"what": "umap.UMAP(cosine, pynndescent).fit(sample) + transform(rest)",
                               "seconds": round(peer, 3), "ratio_peer_over_lmforge": round(ratio, 3)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
