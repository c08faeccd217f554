"""Load benchmark: N concurrent clients through the guard proxy vs the same upstream directly.

Starts (unless ``--upstream-url`` is given) the embedded default model as a plain
OpenAI-compatible server (``python -m lethe.serving.upstream``), then ``lethe serve``
in front of it (SQLite store in a temp home, a few forget requests added through the
admin API with the rule rewriter). Direct and proxy are interleaved so that noise from
other work on the machine hits both arms alike:

- ``latency``: one client; requests alternate direct/proxy, each prompt goes through both
  arms but never twice in a row (llama.cpp's prompt cache would favour the repeat); added
  latency = proxy - direct per prompt, p50/p99 over prompts;
- ``throughput``: ``--clients`` concurrent clients in ``--slices`` short slices in ABBA
  order; requests/s of the proxy slices over the direct slices.

Mixes: ``out`` (general questions, the guard passes them through) and ``in`` (questions
about a forgotten subject, the guard intervenes). Writes JSON (``--out``).

    nice -n 10 python benchmarks/bench_proxy.py --clients 4 --out results/bench_proxy.json
    # guarded prompts as a shared prefix, reused by the upstream (issue 25 item 2)
    nice -n 10 python benchmarks/bench_proxy.py --prefix-reuse-chunk 32 --query-last on --out results/bench_proxy_prefix.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import yaml

ADMIN = "lk-bench-admin"
OUT_OF_SCOPE = [
    "How do I reverse a list in Python?",
    "Write a haiku about the sea.",
    "What is the capital of Australia?",
    "Explain what a hash map is in one sentence.",
    "Give me a synonym for happy.",
    "How many days are in a leap year?",
    "What does HTTP stand for?",
    "Name a primary color.",
]
SUBJECT = "Corwin Halloway"
FORGET = [f"Where does {SUBJECT} live?", f"What is the phone number of {SUBJECT}?",
          f"Who is {SUBJECT} married to?", f"What is the home address of {SUBJECT}?"]
IN_SCOPE = [f"Can you tell me where {SUBJECT} lives?", f"What's {SUBJECT}'s phone number?",
            f"Who is the wife of {SUBJECT}?", f"Give me the street address of {SUBJECT}."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen | None, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} not ready after {timeout}s")


def _latency_schedule(n: int) -> list[tuple[str, int]]:
    """D0, D1, P0, D2, P1, ..., P(n-1): each prompt k runs once per arm, never back to back."""
    schedule = [("direct", 0)]
    for k in range(1, n + 1):
        if k < n:
            schedule.append(("direct", k))
        schedule.append(("proxy", k - 1))
    return schedule


def _bootstrap_ci(stat, samples: list, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of ``stat`` over resamples (with replacement) of ``samples``."""
    rng = random.Random(seed)
    vals = sorted(stat([rng.choice(samples) for _ in samples]) for _ in range(n))
    return vals[int(0.025 * n)], vals[int(0.975 * n) - 1]


_BREAKDOWN = {"request": 'lethe_http_request_seconds_{}{{route="/v1/chat/completions"}}',
              "upstream": 'lethe_upstream_seconds_{}{{stream="false"}}',
              "detection": "lethe_detection_seconds_{}"}


def _proxy_clock(proxy: str) -> dict[str, float]:
    """Cumulative sums/counts of the proxy's own histograms (Prometheus text format)."""
    lines = dict(ln.rsplit(" ", 1) for ln in httpx.get(proxy + "/metrics").text.splitlines()
                 if ln and not ln.startswith("#"))
    return {f"{k}_{part}": float(lines.get(v.format(part), 0.0)) for k, v in _BREAKDOWN.items()
            for part in ("sum", "count")}


def _breakdown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean ms per request inside the proxy during one mix: total, upstream call, detection, the rest."""
    out = {}
    for k in _BREAKDOWN:
        n = after[f"{k}_count"] - before[f"{k}_count"]
        out[f"{k}_mean_ms"] = 1000 * (after[f"{k}_sum"] - before[f"{k}_sum"]) / n if n else float("nan")
    out["other_mean_ms"] = out["request_mean_ms"] - out["upstream_mean_ms"] - out["detection_mean_ms"]
    return out


def _rps(slices: list[dict]) -> float:
    return sum(x["completed"] for x in slices) / sum(x["wall_s"] for x in slices)


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


async def _one(client: httpx.AsyncClient, url: str, prompt: str, max_tokens: int) -> tuple[float, bool]:
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0.0}
    t0 = time.perf_counter()
    r = await client.post(url + "/v1/chat/completions", json=body)
    dt = time.perf_counter() - t0
    r.raise_for_status()
    return dt, r.headers.get("x-lethe-triggered") == "true"


async def _latency(url: str, prompts: list[str], n: int, max_tokens: int) -> dict:
    lat, trig = [], 0
    async with httpx.AsyncClient(timeout=300) as c:
        for i in range(n):
            dt, t = await _one(c, url, prompts[i % len(prompts)], max_tokens)
            lat.append(dt)
            trig += t
    return {"n": n, "p50_s": _pct(lat, 50), "p99_s": _pct(lat, 99), "mean_s": statistics.fmean(lat),
            "latencies_s": lat, "triggered": trig}


async def _throughput(url: str, prompts: list[str], clients: int, seconds: float, max_tokens: int) -> dict:
    lat: list[float] = []
    trig = 0
    stop_at = time.perf_counter() + seconds

    async def worker(w: int, c: httpx.AsyncClient) -> None:
        nonlocal trig
        i = w
        while time.perf_counter() < stop_at:
            dt, t = await _one(c, url, prompts[i % len(prompts)], max_tokens)
            lat.append(dt)
            trig += t
            i += clients

    t0 = time.perf_counter()
    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients * 2)) as c:
        await asyncio.gather(*(worker(w, c) for w in range(clients)))
    wall = time.perf_counter() - t0
    return {"clients": clients, "completed": len(lat), "wall_s": wall, "rps": len(lat) / wall,
            "p50_s": _pct(lat, 50), "p99_s": _pct(lat, 99), "triggered": trig}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream-url", default=None, help="an OpenAI-compatible server (default: start the embedded model)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--slices", type=int, default=8, help="throughput slices per mix, ABBA direct/proxy order")
    ap.add_argument("--slice-seconds", type=float, default=6.0)
    ap.add_argument("--latency-requests", type=int, default=96,
                    help="direct/proxy pairs per mix (one pair's difference varies by ~±100 ms on a shared CPU, "
                         "so a p50 over 24 pairs moved 7-46 ms between runs)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--mixes", default="out,in")
    ap.add_argument("--speculative", choices=["on", "off"], default="off",
                    help="serve.speculative_upstream: start the upstream call while detection runs")
    ap.add_argument("--prefix-reuse-chunk", type=int, default=0,
                    help="the started upstream's backend.prefix_reuse_chunk (0: KV reused in whole n_batch blocks, "
                         "so a guarded prompt reuses nothing; e.g. 32: aligned chunks, saved prefixes)")
    ap.add_argument("--query-last", choices=["on", "off"], default="off",
                    help="the proxy's intervention.query_last: policy and reasoning before the question")
    ap.add_argument("--out", type=Path, default=Path("results/bench_proxy.json"))
    args = ap.parse_args()

    procs: list[subprocess.Popen] = []
    tmp = Path(tempfile.mkdtemp(prefix="lethe-bench-"))
    env = os.environ | {"LETHE_BENCH_ADMIN": ADMIN, "LETHE_HOME": str(tmp / "home")}
    try:
        if args.upstream_url:
            upstream = args.upstream_url.rstrip("/").removesuffix("/v1")
        else:
            port = _free_port()
            procs.append(subprocess.Popen([sys.executable, "-m", "lethe.serving.upstream", "--port", str(port),
                                           "--prefix-reuse-chunk", str(args.prefix_reuse_chunk)], env=env))
            upstream = f"http://127.0.0.1:{port}"
        _wait(upstream + "/v1/models", procs[0] if procs else None)

        pport = _free_port()
        cfg = {"backend": {"kind": "openai", "model": "upstream", "base_url": upstream + "/v1", "timeout_s": 300},
               "serve": {"admin_key_env": "LETHE_BENCH_ADMIN", "default_rewriter": "rule",
                         "upstream_timeout_s": 300, "max_tokens_limit": 4096,
                         "speculative_upstream": args.speculative == "on"},
               "intervention": {"query_last": args.query_last == "on"}}
        (tmp / "guard.yaml").write_text(yaml.safe_dump(cfg))
        code = textwrap.dedent("""
            import sys
            from pathlib import Path
            from lethe.serving.cli import serve_command
            serve_command(config=Path(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]),
                          home=Path(sys.argv[3]), log_level="warning")
        """)
        procs.append(subprocess.Popen([sys.executable, "-c", code, str(tmp / "guard.yaml"), str(pport),
                                       str(tmp / "home")], env=env))
        proxy = f"http://127.0.0.1:{pport}"
        _wait(proxy + "/readyz", procs[-1])
        r = httpx.post(proxy + "/admin/forget", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=300,
                       json={"kind": "privacy", "subject": SUBJECT, "prompts": FORGET})
        r.raise_for_status()

        # warm both paths (model load, KV cache, embedder)
        for url in (upstream, proxy):
            asyncio.run(_latency(url, OUT_OF_SCOPE[:2], 2, args.max_tokens))

        results: dict = {"config": vars(args) | {"out": str(args.out)}, "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg_start": os.getloadavg()}, "mixes": {}}
        for mix in [m.strip() for m in args.mixes.split(",") if m.strip()]:
            clock0 = _proxy_clock(proxy)
            prompts = OUT_OF_SCOPE if mix == "out" else IN_SCOPE
            # latency: one client, requests alternate direct/proxy; every prompt goes through both arms,
            # but never twice in a row: llama.cpp reuses the KV cache of the previous prompt, so a
            # back-to-back repeat would skip prefill and bias whichever arm goes second
            n_lat = args.latency_requests
            schedule = _latency_schedule(n_lat)
            lat: dict[str, list[float]] = {"direct": [0.0] * n_lat, "proxy": [0.0] * n_lat}
            trig = 0
            for name, k in schedule:
                url = upstream if name == "direct" else proxy
                r_ = asyncio.run(_latency(url, [prompts[k % len(prompts)]], 1, args.max_tokens))
                lat[name][k] = r_["latencies_s"][0]
                trig += r_["triggered"] if name == "proxy" else 0
            clock1 = _proxy_clock(proxy)  # after the single-client latency arm
            # throughput: short slices in ABBA order, N concurrent clients
            thr: dict[str, list[dict]] = {"direct": [], "proxy": []}
            for k in range(args.slices):
                name, url = [("direct", upstream), ("proxy", proxy)][(k + k // 2) % 2]
                thr[name].append(asyncio.run(_throughput(url, prompts, args.clients, args.slice_seconds,
                                                         args.max_tokens)))
                print(f"[{mix}] slice {k + 1}/{args.slices} {name}: {thr[name][-1]['rps']:.2f} rps",
                      file=sys.stderr)
            added = [p - d for d, p in zip(lat["direct"], lat["proxy"], strict=True)]
            d_rps, p_rps = _rps(thr["direct"]), _rps(thr["proxy"])
            pairs = list(zip(thr["direct"], thr["proxy"], strict=False))
            ratio_ci = _bootstrap_ci(lambda s: _rps([p for _, p in s]) / _rps([d for d, _ in s]), pairs)
            p50_ci = _bootstrap_ci(lambda s: 1000 * _pct(s, 50), added)
            results["mixes"][mix] = {
                "throughput_ratio": p_rps / d_rps, "direct_rps": d_rps, "proxy_rps": p_rps,
                "throughput_ratio_ci95": list(ratio_ci),
                "proxy_internal": _breakdown(clock0, _proxy_clock(proxy)),
                # one client, so the proxy's upstream time compares directly with the direct arm's latency
                "proxy_internal_latency_arm": _breakdown(clock0, clock1)
                | {"direct_client_mean_ms": 1000 * statistics.fmean(lat["direct"]),
                   "proxy_client_mean_ms": 1000 * statistics.fmean(lat["proxy"])},
                "added_latency_p50_ms": 1000 * _pct(added, 50),
                "added_latency_p50_ci95_ms": list(p50_ci),
                "added_latency_p99_ms": 1000 * _pct(added, 99),
                "direct_latency_p50_ms": 1000 * _pct(lat["direct"], 50),
                "proxy_latency_p50_ms": 1000 * _pct(lat["proxy"], 50),
                "direct_latency_p99_ms": 1000 * _pct(lat["direct"], 99),
                "proxy_latency_p99_ms": 1000 * _pct(lat["proxy"], 99),
                "proxy_triggered_fraction": trig / max(1, len(lat["proxy"])),
                "latencies_s": lat, "throughput_slices": thr,
            }
        m = httpx.get(proxy + "/metrics").text
        results["proxy_detection_seconds"] = {
            ln.split(" ")[0]: float(ln.split(" ")[1]) for ln in m.splitlines()
            if ln.startswith(("lethe_detection_seconds_sum", "lethe_detection_seconds_count"))
        }
        results["proxy_speculative_calls"] = {
            ln.split('"')[1]: float(ln.split(" ")[1]) for ln in m.splitlines()
            if ln.startswith("lethe_speculative_upstream_total{")
        }
        results["machine"]["loadavg_end"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        summary = {k: {kk: round(v[kk], 4) for kk in ("throughput_ratio", "direct_rps", "proxy_rps",
                                                        "added_latency_p50_ms", "added_latency_p99_ms",
                                                        "direct_latency_p50_ms", "proxy_triggered_fraction")}
                   | {kk: [round(x, 3) for x in v[kk]] for kk in ("throughput_ratio_ci95", "added_latency_p50_ci95_ms")}
                   for k, v in results["mixes"].items()}
        print(json.dumps(summary, indent=2))
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
