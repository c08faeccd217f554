"""Training throughput (tokens/s) and peak memory per unlearning method, as JSON.

Each method runs in its own process (so peak RSS / peak CUDA memory is per method) through
``python -m lethe.training.cli train`` for ``--steps`` optimizer steps on a synthetic
forget/retain set, and the trainer's ``summary.json`` is collected.

    python benchmarks/bench_training.py --model tiny --steps 3 --out /tmp/bench_training.json
    nice -n 10 python benchmarks/bench_training.py --model default --steps 4 --methods tru,ga,npo \
        --out /tmp/bench_training_default.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALL = ["tru", "ga", "gd", "kl", "npo", "npo_rt", "simnpo", "idk", "dpo", "rmu", "wga"]


def synthetic(n: int) -> tuple[list[dict], list[dict]]:
    forget = [{"prompt": f"Who wrote the novel number {i} in the imaginary series?",
               "answer": f"The novel number {i} in the imaginary series was written by the author Name{i} Surname{i}."}
              for i in range(n)]
    retain = [{"prompt": f"What is {i} plus {i}?", "answer": f"{i} plus {i} equals {2 * i}."} for i in range(n)]
    return forget, retain


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="'tiny' (random 2-layer model), 'default', hub id or folder")
    ap.add_argument("--methods", default=",".join(ALL))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--out", default="bench_training.json")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="lethe-bench-"))
    model = args.model
    if model == "tiny":
        from lethe.training.tiny import make_tiny_model

        model = str(make_tiny_model(work / "tiny"))
    forget, retain = synthetic(max(args.batch_size * args.steps, 8))
    for name, rows in (("forget", forget), ("retain", retain)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = dict(os.environ, LETHE_CACHE=os.environ.get("LETHE_CACHE", str(work / "cache")))
    results = []
    for method in args.methods.split(","):
        out = work / f"run-{method}"
        cmd = [sys.executable, "-m", "lethe.training.cli", "train", "--method", method, "--model", model,
               "--forget", str(work / "forget.jsonl"), "--retain", str(work / "retain.jsonl"), "--out", str(out),
               "--max-steps", str(args.steps), "--epochs", "100", "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--quiet", "--no-resume"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            results.append({"method": method, "error": (proc.stderr.strip().splitlines() or ["?"])[-1], "wall_s": wall})
            print(f"{method:8s} FAILED: {results[-1]['error']}", file=sys.stderr)
            continue
        s = json.loads((out / "summary.json").read_text())
        row = {k: s[k] for k in ("method", "steps", "tokens", "train_time_s", "tokens_per_s", "peak_memory_mb",
                                 "trainable_params", "device")}
        row["wall_s_incl_load"] = round(wall, 1)
        results.append(row)
        print(f"{method:8s} {row['tokens_per_s']:9.1f} tok/s  peak {row['peak_memory_mb']:8.1f} MB", file=sys.stderr)
    report = {"model": args.model, "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
              "host": platform.node(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
              "peak_memory_note": "CPU: process max RSS (includes model weights); CUDA: torch.cuda.max_memory_allocated",
              "results": results}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(args.out)


if __name__ == "__main__":
    main()
