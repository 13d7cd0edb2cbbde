"""`lmforge serve` under load: the same completion requests sent by 1 client at a time and by 8 at once,
against one server in the same run. Continuous batching should make 8 clients several times faster than 1.

    python benchmarks/serve_throughput.py [--model runs/demo/model] [--requests 32] [--max-tokens 48]

Writes benchmarks/results/serve_throughput.json: requests/s and generated tokens/s per concurrency, the ratio,
and the engine's mean rows per decode step (1.0 would mean requests were queued one by one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["def main(", "import os\n", "class Config:\n    def", "for i in range(", "    return ", "with open(",
           "try:\n    ", "if __name__"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "runs" / "demo" / "model"))
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_throughput.json"))
    args = ap.parse_args()
    if not Path(args.model).is_dir():
        sys.exit(f"error: {args.model}: no model (run `make demo` first, or pass --model DIR)")

    import httpx
    import torch

    from lmforge.infer.local import load
    from lmforge.io import cpu_flags, machine_name
    from lmforge.serve.http import start_server
    from lmforge.serve.openai import ModelPool, create_app

    pool = ModelPool({"m": load(args.model, max_batch=8)})
    url, stop = start_server(create_app(pool, chat_page=False))
    engine = pool.get("m").engine
    body = {"model": "m", "max_tokens": args.max_tokens, "temperature": 0.8, "seed": 0}

    def run(clients: int) -> dict:
        work = list(range(args.requests))
        lock, tokens = threading.Lock(), [0]
        steps, rows = engine.steps, engine.decoded_rows

        def client():
            with httpx.Client(timeout=300) as http:
                while True:
                    with lock:
                        if not work:
                            return
                        i = work.pop()
                    r = http.post(url + "v1/completions", json={**body, "prompt": PROMPTS[i % len(PROMPTS)],
                                                                "seed": i})
                    r.raise_for_status()
                    with lock:
                        tokens[0] += r.json()["usage"]["completion_tokens"]

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
        return {"clients": clients, "seconds": seconds, "requests_per_s": args.requests / seconds,
                "tokens_per_s": tokens[0] / seconds, "tokens": tokens[0],
                "rows_per_decode_step": (engine.decoded_rows - rows) / max(1, engine.steps - steps)}

    run(2)  # warm-up: first allocations, thread pools
    one, eight = run(1), run(8)
    stop()
    pool.close()
    result = {
        "benchmark": "serve_throughput", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu": machine_name(), "threads": torch.get_num_threads(), "device": "cpu",
                    "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512_bf16", "amx_bf16", "amx_int8"}),
                    "python": sys.version.split()[0], "torch": torch.__version__},
        "model": args.model, "requests": args.requests, "max_tokens": args.max_tokens,
        "one_client": one, "eight_clients": eight,
        "ratio_requests_per_s_8_vs_1": eight["requests_per_s"] / one["requests_per_s"],
        "goal": "> 1 (batched, not queued)",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"1 client: {one['requests_per_s']:.2f} req/s, {one['tokens_per_s']:.0f} tok/s; "
          f"8 clients: {eight['requests_per_s']:.2f} req/s, {eight['tokens_per_s']:.0f} tok/s "
          f"({result['ratio_requests_per_s_8_vs_1']:.2f}x, {eight['rows_per_decode_step']:.1f} rows per step)")


if __name__ == "__main__":
    main()
