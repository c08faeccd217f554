"""Two llama.cpp processes on the same cores: tokens/s of one process alone and of two at once.

For each (threads, wait policy) configuration the benchmark starts one worker process, then two at
once (``--repeats`` times, interleaved); every worker loads the embedded default model through
``LlamaCppBackend`` (the code path of ``lethe forget add``, ``chat`` and ``serve``), waits until all
workers of the run have loaded, then streams greedy answers to a fixed prompt for ``--seconds``
seconds and reports generated tokens per second (prompt processing included: it is part of every
rewrite and answer). The ratio ``shared / alone``
per process is what two Lethe processes on one machine keep of their throughput.

The machine may be busy with other work (a training job): ``os.getloadavg()`` before and after each
run goes into the JSON, so a reader can tell a quiet measurement from a loaded one.

    python benchmarks/bench_llamacpp_sharing.py --out /tmp/lethe-results/bench_llamacpp_sharing.json
    python benchmarks/bench_llamacpp_sharing.py --configs 2:passive --seconds 5   # quick look
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

PROMPT = ("Rewrite the following question in different words, keeping its meaning: "
          "Which city did the novelist grow up in, and what did her parents do for a living?")


def worker(args: argparse.Namespace) -> None:
    """One process: load, say ready, wait for "go" on stdin, stream answers until the deadline."""
    from lethe.backends.llamacpp import LlamaCppBackend

    t0 = time.perf_counter()
    be = LlamaCppBackend(args.model, n_threads=args.threads, wait_policy=args.policy, n_ctx=1024)
    load_s = time.perf_counter() - t0
    print("ready", flush=True)
    sys.stdin.readline()
    tokens = calls = 0
    threads_seen: dict[int, int] = {}
    cpu0, t1 = time.process_time(), time.perf_counter()
    deadline = t1 + args.seconds
    while time.perf_counter() < deadline:
        # a different last turn each call, so no call reuses the previous call's KV cache wholesale
        msgs = [{"role": "user", "content": f"{PROMPT} (variant {calls})"}]
        for _piece in be.stream(msgs, max_tokens=args.max_tokens):
            tokens += 1  # llama.cpp streams one piece per generated token
            threads_seen[be._threads_now] = threads_seen.get(be._threads_now, 0) + 1
            if time.perf_counter() >= deadline:
                break
        calls += 1
    wall = time.perf_counter() - t1
    print(json.dumps({"tokens": tokens, "calls": calls, "wall_s": round(wall, 3), "tokens_per_s": tokens / wall,
                      "cpu_s": round(time.process_time() - cpu0, 3), "load_s": round(load_s, 2),
                      "threads_per_token": threads_seen, "describe": be.describe()}))


def run_group(n: int, threads: int | None, policy: str, a: argparse.Namespace) -> dict:
    """``n`` workers of one configuration, released together once all have loaded the model."""
    cmd = [sys.executable, __file__, "--worker", "--model", a.model, "--policy", policy,
           "--seconds", str(a.seconds), "--max-tokens", str(a.max_tokens)]
    if threads:
        cmd += ["--threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # the backend sets the policy
    # each worker in its own session, as `lethe serve` and a CLI call from another terminal are: with the
    # kernel's autogroup scheduling, processes of one session share one slice of the CPU between them
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                              start_new_session=True) for _ in range(n)]
    for p in procs:
        if p.stdout is None or p.stdout.readline().strip() != "ready":
            raise SystemExit(f"worker failed to start: {' '.join(cmd)}")
    load_before = os.getloadavg()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    outs = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"worker failed ({p.returncode}): {' '.join(cmd)}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return {"processes": n, "workers": outs, "tokens_per_s": [w["tokens_per_s"] for w in outs],
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()]}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct-q4")
    ap.add_argument("--configs", default="0:passive,2:spin,2:passive,1:passive",
                    help="comma-separated THREADS:POLICY (THREADS 0 = the backend's default, chosen per call from "
                         "the free cores; POLICY passive, spin (libgomp's default), active)")
    ap.add_argument("--seconds", type=float, default=20.0, help="generation time per worker and run")
    ap.add_argument("--max-tokens", type=int, default=48, help="tokens per completion (about a rewrite's length)")
    ap.add_argument("--repeats", type=int, default=2, help="alone/shared pairs per configuration (medians reported)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--policy", default="passive", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return
    results = []
    for spec in a.configs.split(","):
        t, _, policy = spec.partition(":")
        threads = int(t) or None
        runs = []
        for _ in range(a.repeats):  # alone and shared interleaved, so drifting background load hits both
            runs.append((run_group(1, threads, policy, a), run_group(2, threads, policy, a)))
        alone_tps = [al["tokens_per_s"][0] for al, _ in runs]
        shared_tps = [x for _, sh in runs for x in sh["tokens_per_s"]]
        base = statistics.median(alone_tps)
        ratios = [x / base if base else 0.0 for x in shared_tps]
        row = {"threads": threads or "auto", "wait_policy": policy,
               "alone_tokens_per_s": [round(x, 2) for x in alone_tps], "alone_median": round(base, 2),
               "shared_tokens_per_s": [round(x, 2) for x in shared_tps],
               "shared_over_alone_median": [round(r, 3) for r in ratios], "min_ratio": round(min(ratios), 3),
               "median_ratio": round(statistics.median(ratios), 3),
               "runs": [{"alone": al, "shared": sh} for al, sh in runs]}
        results.append(row)
        loads = [r["alone"]["loadavg_before"][0] for r in row["runs"]]
        print(f"threads={row['threads']!s:4s} policy={policy:8s} alone {base:6.1f} tok/s   two at once "
              + " / ".join(f"{x:.1f}" for x in shared_tps)
              + f" tok/s   ratio median {row['median_ratio']:.2f} min {row['min_ratio']:.2f}   "
              f"load1 {min(loads):.1f}-{max(loads):.1f}", flush=True)
    versions = {}
    for pkg in ("lethe", "llama_cpp_python"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    report = {"benchmark": "llamacpp_sharing", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "config": {"model": a.model, "seconds": a.seconds, "max_tokens": a.max_tokens, "prompt": PROMPT,
                         "configs": a.configs, "repeats": a.repeats},
              "machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                          "platform": platform.platform(), "python": platform.python_version()},
              "versions": versions,
              "sched_autogroup": _read("/proc/sys/kernel/sched_autogroup_enabled"),
              "note": "loadavg_* are os.getloadavg() around each run; other work on the machine (e.g. a "
                      "training job) lowers both the alone and the shared numbers. Each worker runs in its own "
                      "session (own scheduler autogroup), as two terminals or a service and a terminal do.",
              "results": results}
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(report, indent=1))
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
