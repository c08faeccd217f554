"""Every speed figure of the guard in one run and one JSON: the store at scale, the proxy, rewriting,
the embedder and evaluation against a server.

Runs each part's own benchmark as a child process with the arguments its table in ``docs/results.md``
uses (``--quick``: small sizes, for a smoke run of the whole), then writes one file holding every
part's config, versions and numbers, keyed by part, plus the command lines and wall time of each part:

    eval "$(.ci/start_postgres.sh)"   # the store part also measures PostgreSQL when LETHE_TEST_PG_DSN is set
    python benchmarks/bench_speed.py --out /tmp/lethe-results/speed.json
    python benchmarks/bench_speed.py --quick --parts embedder,rewrite --out /tmp/lethe-results/speed_quick.json

Parts: ``store`` (``bench_store_scale.py``, 1 M samples), ``proxy`` (``bench_proxy.py``, both mixes in one
run), ``rewrite`` (``bench_rewrite.py``), ``embedder`` (``bench_embedder.py``, fp32 against int8) and
``remote`` (``bench_remote_eval.py``, sequential against concurrent). The full run takes hours on 2 cores,
most of it the store's index rebuild at 1 M and the proxy's slices; a part that fails is recorded with
its exit status and the rest still run.
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

HERE = Path(__file__).resolve().parent


def _parts(quick: bool, pg: bool) -> dict[str, list[str]]:
    """Each part's benchmark and arguments (``--out`` is added per run)."""
    stores = "sqlite,postgres" if pg else "sqlite"
    return {
        "store": ["bench_store_scale.py", "--sizes", "20000" if quick else "1000000", "--stores", stores,
                  "--ef", "384", "--replica-rates", "1,2", "--queries", "200" if quick else "1000"],
        "proxy": ["bench_proxy.py", "--mixes", "in,out", "--clients", "2", "--slices", "4" if quick else "24",
                  "--slice-seconds", "5" if quick else "20", "--latency-requests", "4" if quick else "24",
                  "--max-tokens", "16", "--prefix-reuse-chunk", "32", "--query-last", "on"],
        "rewrite": ["bench_rewrite.py", "--n", "2" if quick else "20"],
        "embedder": ["bench_embedder.py", "--singles", "20" if quick else "100", "--batch", "64" if quick else "512"],
        "remote": ["bench_remote_eval.py", "--limit", "8" if quick else "40", "--concurrency", "4" if quick else "8"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="store,proxy,rewrite,embedder,remote", help="comma list of parts to run")
    ap.add_argument("--quick", action="store_true", help="small sizes: checks that every part runs, not the bars")
    ap.add_argument("--work", default=None, help="folder for the parts' own files (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/lethe-results/speed.json"))
    args = ap.parse_args()
    parts = _parts(args.quick, bool(os.environ.get("LETHE_TEST_PG_DSN")))
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(wanted) - set(parts))
    if unknown:
        raise SystemExit(f"unknown part(s) {', '.join(unknown)} (known: {', '.join(parts)})")
    work = Path(args.work or tempfile.mkdtemp(prefix="lethe-speed-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"benchmark": "speed", "config": {k: str(v) for k, v in vars(args).items()},
                    "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                                "loadavg_start": os.getloadavg()},
                    "python": platform.python_version(), "parts": {}}
    for name in wanted:
        script, *rest = parts[name]
        out = work / f"{name}.json"
        argv = [sys.executable, str(HERE / script), *rest, "--out", str(out)]
        if name == "store":
            argv += ["--work", str(work / "store"), "--notes", str(work / "store.md")]
        print(f"[speed] {name}: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        rc = subprocess.run(argv).returncode
        entry: dict = {"command": " ".join(["python", *argv[1:]]), "returncode": rc,
                       "wall_s": round(time.perf_counter() - t, 1)}
        if rc == 0 and out.exists():
            entry["result"] = json.loads(out.read_text())
        report["parts"][name] = entry
        report["machine"]["loadavg_end"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))  # after every part: nothing lost if a later one dies
    failed = [n for n, e in report["parts"].items() if e["returncode"] != 0]
    print(f"wrote {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
