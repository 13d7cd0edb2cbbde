"""Local decoding on CPU: the torch backend (fp32, bf16 where native, int8, int4) against the llama.cpp backend
(f16, q8_0, q4_0 GGUFs exported by lmforge) on the same weights, in one run, on two sizes: the demo model's
shape and a ~100M-parameter Llama, both with random weights (speed does not depend on what they learned).

    python benchmarks/decode_speed.py [--sizes demo,100m] [--prompt 64] [--new 64] [--rounds 3]

Each contender runs in its own process (so peak memory is its own): one request, greedy, end tokens ignored;
time to first token (prefill + first sample) and decode tokens/s after it, median of the rounds after a warm-up
round (which is when a compiled contender compiles: `warmup_s`); peak RSS and its rise over the process before
loading. Torch contenders run eager and compiled (Engine(compile=True): the static-shape decode step). Writes benchmarks/results/decode_speed.json with ratios against
llama.cpp f16. Goals (issue 10): torch >= 50% of llama.cpp f16's decode speed; llama.cpp q8_0 faster than both.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
SIZES = {  # (hidden, intermediate, layers, heads, kv heads)
    "demo": (128, 352, 4, 4, 2),
    "100m": (768, 2048, 14, 12, 4),
}


def _rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the process's own address space;
    ru_maxrss is not usable here, since a forked child starts from its parent's peak."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(path: str, backend: str, dtype: str, quantize: str | None, compile: bool, prompt_len: int, new: int,
           rounds: int):
    import torch

    from lmforge.infer.engine import prompt_ids
    from lmforge.infer.local import load
    from lmforge.infer.sampling import SamplingParams

    before = _rss_mb()
    t = time.perf_counter()
    m = load(path, backend=backend, dtype=getattr(torch, dtype), quantize=quantize, max_batch=1,
             max_len=prompt_len + new + 8, compile=compile)
    load_s = time.perf_counter() - t
    m.engine.stop_ids = frozenset()  # random weights: never stop early
    text = "def main(argv):\n    for name in sorted(argv):\n        print(name.upper())\n" * 20
    ids = prompt_ids(m.tokenizer, text)[:prompt_len]
    params = SamplingParams(max_tokens=new, temperature=0)
    ttft, rates, warmup_s = [], [], None
    for r in range(rounds + 1):  # round 0 warms up (and compiles)
        request = m.engine.submit(ids, params)
        t0 = time.perf_counter()
        first = None
        count = 0
        for chunk in m.engine.stream(request):
            count += len(chunk.tokens)
            if first is None and chunk.tokens:
                first = time.perf_counter()
        end = time.perf_counter()
        if r:
            ttft.append(first - t0)
            rates.append((count - 1) / (end - first))
        else:
            warmup_s = end - t0
    print(json.dumps({"ttft_s": statistics.median(ttft), "decode_tok_s": statistics.median(rates),
                      "peak_rss_mb": _rss_mb(), "rss_rise_mb": _rss_mb() - before, "tokens": count,
                      "load_s": load_s, "warmup_s": warmup_s}))


def build(size: str, tok, root: Path) -> Path:
    import torch

    from lmforge.model.config import ModelConfig
    from lmforge.model.hf import save_pretrained
    from lmforge.model.transformer import Transformer

    hidden, inter, layers, heads, kv = SIZES[size]
    config = ModelConfig(vocab_size=tok.vocab_size, hidden_size=hidden, intermediate_size=inter,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    torch.manual_seed(0)
    model = Transformer(config)
    return save_pretrained(model, root / size / "model", tokenizer=tok)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="demo,100m")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "decode_speed.json"))
    ap.add_argument("--worker", nargs=5, metavar=("PATH", "BACKEND", "DTYPE", "QUANTIZE", "COMPILE"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        path, backend, dtype, quantize, compile = args.worker
        worker(path, backend, dtype, None if quantize == "-" else quantize, compile == "compile", args.prompt,
               args.new, args.rounds)
        return

    import sysconfig

    import torch

    from lmforge.infer.gguf import export_gguf
    from lmforge.infer.quantize import compute_dtype, export_quantized
    from lmforge.model.hf import load_model
    from lmforge.io import cpu_flags, machine_name
    from lmforge.model.tokenizer import Tokenizer
    from lmforge.train.precision import cpu_has_native_bf16

    root = Path(tempfile.mkdtemp(prefix="lmforge-decode-"))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(stdlib.glob("*.py"))[:150]]
    tok = Tokenizer.train(texts, 4096, show_progress=False)
    results: dict[str, dict] = {}
    for size in args.sizes.split(","):
        model_dir = build(size, tok, root)
        params = sum(p.numel() for p in load_model(model_dir).parameters())
        torch_kinds = [("fp32", "float32", "-")]
        if cpu_has_native_bf16():
            torch_kinds.append(("bf16", "bfloat16", "-"))
        for method in ("int8", "int4"):  # the exported directories: loaded without the fp32 weights in memory
            torch_kinds.append((method, "float32", str(export_quantized(model_dir, root / size / method, method))))
        contenders = [(f"torch {kind}{' compiled' if c == 'compile' else ''}", path if path != "-" else str(model_dir),
                       "torch", dtype, "-", c)
                      for c in ("eager", "compile") for kind, dtype, path in torch_kinds]
        for qtype in ("f16", "q8_0", "q4_0"):
            file = export_gguf(model_dir, root / size / f"model-{qtype}.gguf", qtype=qtype)
            contenders.append((f"llama.cpp {qtype}", str(file), "llamacpp", "float32", "-", "eager"))
        figures = {}
        for name, path, backend, dtype, quantize, compile in contenders:
            proc = subprocess.run([sys.executable, __file__, "--prompt", str(args.prompt), "--new", str(args.new),
                                   "--rounds", str(args.rounds), "--worker", path, backend, dtype, quantize, compile],
                                  capture_output=True, text=True)
            if proc.returncode:
                figures[name] = {"error": proc.stderr.strip().splitlines()[-1:]}
                print(f"{size} {name}: failed: {figures[name]['error']}")
                continue
            figures[name] = json.loads(proc.stdout.strip().splitlines()[-1])
            f = figures[name]
            print(f"{size} {name:20s} decode {f['decode_tok_s']:8.1f} tok/s  ttft {f['ttft_s'] * 1000:7.1f} ms  "
                  f"peak {f['peak_rss_mb']:6.0f} MB  warm-up {f['warmup_s']:5.1f} s", flush=True)
        base = figures.get("llama.cpp f16", {}).get("decode_tok_s")
        ratios = {name: f["decode_tok_s"] / base for name, f in figures.items() if base and "decode_tok_s" in f}
        results[size] = {"parameters": params, "shape": dict(zip(("hidden", "intermediate", "layers", "heads",
                                                                   "kv_heads"), SIZES[size])),
                         "figures": figures, "decode_vs_llamacpp_f16": ratios}
    result = {
        "benchmark": "decode_speed", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"cpu": machine_name(), "threads": torch.get_num_threads(), "device": "cpu",
                    "cpu_flags": sorted(cpu_flags() & {"avx2", "avx512_bf16", "amx_bf16", "amx_int8"}),
                    "python": sys.version.split()[0], "torch": torch.__version__,
                    "quantized_kernels_compute_dtype": str(compute_dtype()).removeprefix("torch.")},
        "prompt_tokens": args.prompt, "new_tokens": args.new, "rounds": args.rounds, "sizes": results,
        "goal": "torch >= 0.5 x llama.cpp f16 decode; llama.cpp q8_0 faster than both",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
