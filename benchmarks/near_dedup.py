"""Near-duplicate detection: lmforge's MinHash LSH (candidates verified by exact Jaccard) against datasketch
(MinHash.bulk + MinHashLSH) in the same process, and datatrove / text-dedup in their own virtual environment
(a subprocess, so lmforge's environment stays clean), on the same records.

    python benchmarks/near_dedup.py [--records 100000] [--threshold 0.8] [--sample 3000]
                                    [--peers-venv /work/peers-venv] [--peers-venv-312 /work/peers-venv-312]

Records: ~150 words of real standard-library Python source each — three runs of 50 consecutive words taken at
seeded random places of the running interpreter's stdlib (it has ~2.6 M words, too few for 100,000 disjoint
150-word pieces) — plus planted copies: 10% near duplicates (0-5% of the words replaced, inserted or deleted)
and 2% re-spaced exact duplicates.

Quality: pair precision / recall / F1 of "same group" against the truth "exact Jaccard of the word 5-shingle sets
>= threshold", by brute force (Python sets of word tuples) over every pair inside a random sample of records
plus every planted pair. Speed: records/s on wall-clock time, and CPU-seconds (all threads and subprocesses).
Writes benchmarks/results/near_dedup.json. A peer whose environment is missing is recorded as not run, with why.

The peers' environments (kept apart from lmforge's .venv):
    python3.11 -m venv /work/peers-venv && /work/peers-venv/bin/pip install datatrove==0.10.1 regex tokenizers \
        orjson spacy "xxhash<4"     # datatrove 0.10.1 hashes str, which xxhash 4 refuses
    python3.12 -m venv /work/peers-venv-312 && /work/peers-venv-312/bin/pip install text-dedup==0.4.1  # needs 3.12
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corpus import edit_words, stdlib_tokens   # benchmarks/corpus.py (the script's folder is on sys.path)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # busy-waiting OpenMP threads collapse on shared cores

ROOT = Path(__file__).resolve().parents[1]
WORD = re.compile(r"[0-9a-z_\u0080-\U0010ffff]+")  # lmforge's word definition (after str.lower())


# ---- the corpus ---------------------------------------------------------------------------------------------

def build_corpus(n: int, seed: int, near: float = 0.10, exact: float = 0.02):
    """(texts, planted pairs [(original row, copy row)]) in a seeded shuffled order."""
    rng = random.Random(seed)
    toks = stdlib_tokens()
    n_near, n_exact = int(n * near), int(n * exact)
    n_base = n - n_near - n_exact
    texts = []
    for _ in range(n_base):
        parts = []
        for _ in range(3):
            s = rng.randrange(len(toks) - 50)
            parts.append(" ".join(toks[s:s + 50]))
        texts.append("\n".join(parts))
    planted = []
    for _ in range(n_near):
        i = rng.randrange(n_base)
        planted.append((i, len(texts)))
        texts.append(edit_words(texts[i], rng.uniform(0.0, 0.05), rng, toks[:100000]))
    for _ in range(n_exact):
        i = rng.randrange(n_base)
        planted.append((i, len(texts)))
        texts.append("  " + texts[i].replace(" ", "  ").replace("\n", "\n    ") + "\n")
    order = list(range(len(texts)))
    rng.shuffle(order)
    where = {old: new for new, old in enumerate(order)}
    texts = [texts[i] for i in order]
    planted = [tuple(sorted((where[a], where[b]))) for a, b in planted]
    return texts, sorted(set(planted))


# ---- truth and scores -------------------------------------------------------------------------------------

def shingle_set(text: str, n: int = 5) -> set:
    w = WORD.findall(text.lower())
    if 0 < len(w) < n:
        return {tuple(w)}
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def evaluation_pairs(texts, planted, sample: int, threshold: float, seed: int):
    """(pairs to score [k, 2], truth bool [k], true Jaccard [k]): every pair inside a random sample of records, by
    brute force with a sparse matrix product, plus every planted pair."""
    import numpy as np
    from scipy.sparse import csr_matrix

    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(texts), size=min(sample, len(texts)), replace=False))
    ids: dict = {}
    r, c, sizes = [], [], []
    for k, i in enumerate(rows.tolist()):
        s = shingle_set(texts[i])
        sizes.append(len(s))
        for g in s:
            r.append(k)
            c.append(ids.setdefault(g, len(ids)))
    m = csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(rows), max(len(ids), 1)))
    inter = (m @ m.T).toarray()
    size = np.array(sizes, dtype=np.float64)
    iu, ju = np.triu_indices(len(rows), k=1)
    union = size[iu] + size[ju] - inter[iu, ju]
    jac = np.where(union > 0, inter[iu, ju] / np.maximum(union, 1), 0.0)
    pairs = np.stack([rows[iu], rows[ju]], axis=1)
    planted_j = np.array([len((a := shingle_set(texts[i])) & (b := shingle_set(texts[j]))) / max(len(a | b), 1)
                          for i, j in planted])
    pairs = np.concatenate([pairs, np.asarray(planted, dtype=np.int64).reshape(-1, 2)])
    jac = np.concatenate([jac, planted_j])
    return pairs, jac >= threshold, jac


def score(labels, pairs, truth) -> dict:
    """Pair precision / recall / F1 of "same group" (labels: group id per record, -1 = none)."""
    import numpy as np

    labels = np.asarray(labels)
    a, b = labels[pairs[:, 0]], labels[pairs[:, 1]]
    pred = (a >= 0) & (a == b)
    tp = int((pred & truth).sum())
    p = tp / max(int(pred.sum()), 1)
    r = tp / max(int(truth.sum()), 1)
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "true_pairs": int(truth.sum()), "predicted_pairs": int(pred.sum()), "scored_pairs": int(len(pairs))}


def timed(fn):
    c_self, c_kids = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - c_self + (kids.ru_utime - c_kids.ru_utime) + (kids.ru_stime - c_kids.ru_stime)
    return out, wall, cpu


# ---- contenders in this process -----------------------------------------------------------------------------

def run_lmforge(texts, threshold, num_perm):
    from lmforge.curate import dedup

    sig, t_sig, c_sig = timed(lambda: dedup.minhash_signatures(texts, num_perm=num_perm, threads=0))
    groups, t_grp, c_grp = timed(lambda: dedup.near_groups(texts, threshold=threshold, num_perm=num_perm,
                                                           signatures=sig))
    bands, rows = dedup.lsh_params(threshold, num_perm)
    return groups, {"wall_s": t_sig + t_grp, "cpu_s": c_sig + c_grp, "minhash_wall_s": t_sig,
                    "lsh_verify_group_wall_s": t_grp, "bands": bands, "rows": rows, "verified": True}


def run_datasketch(texts, threshold, num_perm):
    import numpy as np
    from datasketch import MinHash, MinHashLSH

    from lmforge.curate.dedup import groups_from_pairs

    def go():
        # the same shingles lmforge uses (regex words, 5-grams), as a datasketch user would write them
        shingles = [[" ".join(g).encode() for g in shingle_set(t)] for t in texts]
        mins = MinHash.bulk(shingles, num_perm=num_perm)
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        with lsh.insertion_session() as session:
            for i, m in enumerate(mins):
                session.insert(i, m)
        pairs = [(i, j) for i, m in enumerate(mins) for j in lsh.query(m) if j > i]
        return groups_from_pairs(len(texts), np.asarray(pairs, dtype=np.int64).reshape(-1, 2))

    groups, wall, cpu = timed(go)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return groups, {"wall_s": wall, "cpu_s": cpu, "bands": lsh.b, "rows": lsh.r, "verified": False}


# ---- contenders in the peers' environment (this file, run by their interpreter with --peer) -------------------

def peer_datatrove(jsonl_dir: Path, work: Path, threshold: float, num_perm: int, workers: int) -> dict:
    import struct

    import datatrove
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster
    from datatrove.pipeline.readers import JsonlReader

    config = MinhashConfig()  # its defaults: 5-grams, 14 buckets x 8 hashes
    files = sorted(p.name for p in jsonl_dir.glob("*.jsonl"))

    def stage(pipeline, tasks, name):
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=min(workers, tasks),
                              logging_dir=str(work / "logs" / name)).run()

    def go():
        stage([JsonlReader(str(jsonl_dir), glob_pattern="*.jsonl"),
               MinhashDedupSignature(output_folder=str(work / "sigs"), config=config)],
              len(files), "sigs")
        stage([MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"),
                                   config=config)], config.num_buckets, "buckets")
        stage([MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"),
                                   config=config, save_cluster_id=True)], 1, "clusters")

    _, wall, cpu = timed(go)
    sizes = [sum(1 for _ in open(jsonl_dir / f)) for f in files]
    labels = [-1] * sum(sizes)
    base = 0
    for rank, size in enumerate(sizes):
        path = work / "remove" / f"{rank:06d}.clusters"
        if path.exists():
            data = path.read_bytes()
            for doc, cluster in struct.iter_unpack("<2I", data):
                labels[base + doc] = cluster
        base += size
    return {"version": datatrove.__version__ if hasattr(datatrove, "__version__") else _version("datatrove"),
            "wall_s": wall, "cpu_s": cpu, "labels": labels, "bands": config.num_buckets,
            "rows": config.hashes_per_bucket, "verified": False,
            "note": "datatrove MinhashConfig defaults (English: spaCy word tokenizer over its simplified text); "
                    "candidates are not verified"}


def peer_textdedup(jsonl_dir: Path, work: Path, threshold: float, num_perm: int, workers: int) -> dict:
    import pickle

    from text_dedup.config.base import load_config_from_toml
    from text_dedup.minhash import main

    toml = work / "config.toml"
    files = sorted(str(p) for p in jsonl_dir.glob("*.jsonl"))
    toml.write_text(f"""
[input]
input_type = "local_files"
file_type = "json"
[input.read_arguments]
path = "json"
data_files = {json.dumps(files)}
split = "train"
cache_dir = "{work / 'hf-cache'}"

[algorithm]
algorithm_name = "minhash"
text_column = "text"
num_perm = {num_perm}
ngram_size = 5
threshold = {threshold}
min_length = 1
check_false_positive = true
num_proc = {workers}

[output]
output_dir = "{work / 'out'}"
skip_filtering = true
save_clusters = true

[debug]
enable_profiling = false
""")
    config = load_config_from_toml(toml)
    _, wall, cpu = timed(lambda: main(config))
    clusters = pickle.loads((work / "out" / "clusters.pickle").read_bytes())
    n = sum(sum(1 for _ in open(f)) for f in files)
    labels = [-1] * n
    for idx, cluster in clusters.items():
        labels[int(idx)] = int(cluster)
    return {"version": _version("text-dedup"), "wall_s": wall, "cpu_s": cpu, "labels": labels,
            "bands": config.algorithm.bands, "rows": config.algorithm.rows, "verified": True,
            "note": "text-dedup's minhash with check_false_positive (exact Jaccard of its own shingles)"}


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def _tree_cpu(root: int) -> dict[int, float]:
    """CPU-seconds so far of `root` and all its descendants, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    out = {}
    for pid in cpu:
        p = pid
        while p in parent and p != root and p > 1:
            p = parent[p]
        if p == root:
            out[pid] = cpu[pid]
    return out


def run_tree_sampled(cmd, *, timeout: int, env) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command; (result, wall s, CPU-s of its whole process tree). Pool workers that are never reaped escape
    RUSAGE_CHILDREN, so the tree is also sampled from /proc every 0.2 s and the larger figure is kept."""
    import threading

    seen: dict[int, float] = {}
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for pid, c in _tree_cpu(proc.pid).items():
                seen[pid] = max(seen.get(pid, 0.0), c)
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        stop.set()
        sampler.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    wall = time.perf_counter() - t0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (kids.ru_utime - kids0.ru_utime) + (kids.ru_stime - kids0.ru_stime)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), wall, max(reaped, sum(seen.values()))


def run_peer(name: str, python: str, jsonl_dir: Path, threshold: float, num_perm: int, workers: int,
             timeout: int) -> dict:
    """Run this file with the peers' interpreter in --peer mode; returns its figures or why it could not run."""
    if not Path(python).exists():
        return {"error": f"{python} not found: create it (see the module docstring)"}
    with tempfile.TemporaryDirectory(prefix=f"peer-{name}-") as work:
        out = Path(work) / "result.json"
        cmd = [python, __file__, "--peer", name, "--input", str(jsonl_dir), "--work", work, "--result", str(out),
               "--threshold", str(threshold), "--num-perm", str(num_perm), "--workers", str(workers)]
        env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
        try:
            proc, wall, cpu = run_tree_sampled(cmd, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        if proc.returncode != 0 or not out.exists():
            return {"error": f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-1500:]}"}
        res = json.loads(out.read_text())
        # the peer times its own dedup steps (wall); CPU-seconds come from here, for its whole process tree
        # (pool workers included), so they also count its interpreter start, imports and result reading
        res["cpu_s_inside"] = res.pop("cpu_s")
        res["cpu_s"] = cpu
        res["process_wall_s"] = wall
        return res


# ---- main ---------------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--sample", type=int, default=3000, help="records whose every pair is scored by brute force")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3, help="lmforge rounds (median); peers run once")
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--peers-venv", default="/work/peers-venv", help="venv with datatrove")
    ap.add_argument("--peers-venv-312", default="/work/peers-venv-312", help="venv with text-dedup (Python >= 3.12)")
    ap.add_argument("--skip", nargs="*", default=[], help="contenders to skip: datasketch datatrove text-dedup")
    ap.add_argument("--peer-timeout", type=int, default=3600)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "near_dedup.json"))
    # --peer mode: run one peer inside its own environment
    ap.add_argument("--peer")
    ap.add_argument("--input")
    ap.add_argument("--work")
    ap.add_argument("--result")
    args = ap.parse_args()

    if args.peer:
        fn = {"datatrove": peer_datatrove, "text-dedup": peer_textdedup}[args.peer]
        res = fn(Path(args.input), Path(args.work), args.threshold, args.num_perm, args.workers)
        Path(args.result).write_text(json.dumps(res))
        return

    import statistics

    import datasketch
    import numpy as np

    from lmforge.io import machine_name

    t0 = time.perf_counter()
    texts, planted = build_corpus(args.records, args.seed)
    words = np.array([len(t.split()) for t in texts[:5000]])
    print(f"{len(texts):,} records (median {int(np.median(words))} words), {len(planted):,} planted pairs; "
          f"built in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    pairs, truth, jac = evaluation_pairs(texts, planted, args.sample, args.threshold, args.seed)
    print(f"truth: {len(pairs):,} pairs scored, {int(truth.sum()):,} at Jaccard >= {args.threshold} "
          f"({time.perf_counter() - t0:.1f} s)")

    figures: dict[str, dict] = {}
    run_lmforge(texts[:2000], args.threshold, args.num_perm)  # warm-up: one-off imports (scipy, rich) and caches
    rounds = []
    for _ in range(args.rounds):
        groups, fig = run_lmforge(texts, args.threshold, args.num_perm)
        rounds.append(fig)
    fig = dict(min(rounds, key=lambda f: f["wall_s"]))
    fig["wall_s"] = statistics.median(r["wall_s"] for r in rounds)
    fig["cpu_s"] = statistics.median(r["cpu_s"] for r in rounds)
    fig["rounds"] = rounds
    figures["lmforge"] = {**fig, **score(groups, pairs, truth)}

    if "datasketch" not in args.skip:
        groups, fig = run_datasketch(texts, args.threshold, args.num_perm)
        figures["datasketch"] = {**fig, "version": datasketch.__version__, **score(groups, pairs, truth)}

    with tempfile.TemporaryDirectory(prefix="near-dedup-") as tmp:
        jsonl = Path(tmp) / "input"
        jsonl.mkdir()
        parts = max(args.workers, 1)
        step = -(-len(texts) // parts)
        for k in range(parts):  # one file per worker, records in order
            with open(jsonl / f"part-{k:03d}.jsonl", "w", encoding="utf-8") as f:
                for i in range(k * step, min((k + 1) * step, len(texts))):
                    f.write(json.dumps({"id": str(i), "text": texts[i]}) + "\n")
        for name, venv in (("datatrove", args.peers_venv), ("text-dedup", args.peers_venv_312)):
            if name in args.skip:
                continue
            print(f"running {name} ...", flush=True)
            res = run_peer(name, str(Path(venv) / "bin" / "python"), jsonl, args.threshold, args.num_perm,
                           args.workers, args.peer_timeout)
            if "labels" in res:
                res.update(score(np.asarray(res.pop("labels")), pairs, truth))
            figures[name] = res

    n = len(texts)
    for f in figures.values():
        if "wall_s" in f:
            f["records_per_s"] = n / f["wall_s"]
            f["records_per_cpu_s"] = n / f["cpu_s"] if f["cpu_s"] else None
    ratios = {f"lmforge_vs_{k}": figures["lmforge"]["records_per_s"] / v["records_per_s"]
              for k, v in figures.items() if k != "lmforge" and "records_per_s" in v}
    result = {
        "benchmark": "near_dedup",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu": machine_name(), "cores": len(os.sched_getaffinity(0)), "python": sys.version.split()[0],
                    "numpy": np.__version__, "datasketch": datasketch.__version__},
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "config": {"records": n, "threshold": args.threshold, "num_perm": args.num_perm, "ngram": 5,
                   "sample": args.sample, "planted_pairs": len(planted), "seed": args.seed,
                   "truth": "exact Jaccard of word 5-shingle sets (brute force) over all pairs of the sample "
                            "plus all planted pairs; score = 'same group' pair precision/recall/F1",
                   "caveat": "peers shingle their own way (datatrove: spaCy words of text with numbers and "
                             "punctuation normalised away; text-dedup: \\W-split words), so part of a peer's "
                             "'false positives' or misses can be pairs on the other side of 0.8 under its own "
                             "definition; datasketch is fed lmforge's shingles"},
        "figures": figures,
        "ratios_records_per_s": ratios,
        "goal": "lmforge >= 6,000 records/s on 2 cores with pair F1 >= 0.95",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{machine_name()}, {len(os.sched_getaffinity(0))} cores, {n:,} records, threshold {args.threshold}")
    for name, f in figures.items():
        if "error" in f:
            print(f"  {name:11s} not run: {f['error'][:300]}")
            continue
        print(f"  {name:11s} {f['records_per_s']:9,.0f} records/s ({f['records_per_cpu_s']:,.0f} per CPU-second)  "
              f"bands {f.get('bands')}x{f.get('rows')}  P {f['precision']:.3f} R {f['recall']:.3f} "
              f"F1 {f['f1']:.3f}")
    for k, v in ratios.items():
        print(f"  {k}: {v:.2f}x")
    print(f"  -> {args.out}")


if __name__ == "__main__":
    main()
