"""Guard latency: detection p50/p99 per single query, batched throughput, and the guard's
overhead relative to the model's own generation time (embedded default, temperature 0).

    python benchmarks/bench_guard_latency.py --out results/guard_latency.json [--no-model]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

import lethe
from lethe import Guard
from lethe.cli.demo import DEMO_FORGET
from lethe.guard.detector import benign_split, load_benign


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="single-query detections to time")
    ap.add_argument("--gen", type=int, default=5, help="generations to time for the overhead ratio")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--no-model", action="store_true", help="skip the generation overhead part")
    ap.add_argument("--out", default="results/guard_latency.json")
    args = ap.parse_args()
    guard = Guard.open(tempfile.mkdtemp(prefix="lethe-lat-"))
    guard.forget(DEMO_FORGET, kind="privacy", subject="Marisol Quintero-Hale", rewriter="rule", progress=False)
    _, queries = benign_split(load_benign())
    queries = (queries * (args.n // max(1, len(queries)) + 1))[: args.n]
    guard.detect(queries[0])  # warm-up
    single = []
    for q in queries:
        t = time.perf_counter()
        guard.detect(q)
        single.append(time.perf_counter() - t)
    t = time.perf_counter()
    guard.detect_many(queries)
    batched_s = time.perf_counter() - t
    result: dict = {
        "benchmark": "guard_latency", "config": vars(args),
        "versions": {"lethe": lethe.__version__, "python": platform.python_version()},
        "detect_single_ms": {"p50": 1000 * float(np.percentile(single, 50)),
                             "p99": 1000 * float(np.percentile(single, 99)),
                             "mean": 1000 * float(np.mean(single))},
        "detect_batched_qps": len(queries) / batched_s,
    }
    if not args.no_model:
        plain, guarded_over = [], []
        for q in queries[: args.gen]:
            r = guard.chat(q, max_tokens=args.max_tokens, use_guard=False)
            plain.append(r.timings["generate_s"])
            g = guard.chat(q, max_tokens=args.max_tokens)
            guarded_over.append(g.timings["detect_s"] + g.timings.get("guide_s", 0.0))
        result["generation_s_mean"] = float(np.mean(plain))
        result["guard_overhead_s_mean"] = float(np.mean(guarded_over))
        result["overhead_ratio"] = float(np.mean(guarded_over) / np.mean(plain))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
