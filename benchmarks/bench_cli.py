"""Wall and CPU time of the ``lethe`` command as a new user runs it, one process per call.

On a store of ``--requests`` privacy requests (fictitious people, rule rewriter) in a fresh
home: ``lethe check "QUERY"``, ``lethe forget list``, ``lethe forget add --rewriter rule``,
``lethe chat`` (embedded default model, ``--max-tokens``), ``lethe --help``, an error
(``check --file`` on a missing file) and ``python -c "import lethe"`` (beside a bare
``python -c pass``). Each command runs ``--runs`` times after one warm-up; the JSON holds every
run and min / median / max. ``check (first call)`` is one ``check`` against a cache that holds
the model files but no cached benign embeddings or scorer fits, as on a user's first call.

    python benchmarks/bench_cli.py --out /tmp/lethe-results/bench_cli.json [--runs 5] [--no-chat]

``--src DIR`` runs another checkout's ``src`` (``PYTHONPATH``) with this interpreter, to compare
before and after a change.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEOPLE = [
    "Hina Ameen", "Basil Mahfouz", "Marisol Quintero-Hale", "Tobias Reinholt", "Ngozi Adebayo-Clarke",
    "Elif Sarac", "Kwame Boateng", "Ilse Vandermeer", "Ravi Chandrasekar", "Solveig Lindqvist",
    "Dario Montefiore", "Yuki Harada",
]
QUESTIONS = ["Where was {} born?", "What genre does {} write in?", "Which awards has {} won?"]


def _cmd(args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "lethe.cli.main"]


def _forget_file(folder: Path, person: str) -> Path:
    path = folder / f"{person.replace(' ', '_')}.jsonl"
    path.write_text("".join(json.dumps({"prompt": q.format(person)}) + "\n" for q in QUESTIONS), encoding="utf-8")
    return path


def _run(argv: list[str], env: dict[str, str], check: bool = True) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, stdout) of one process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if check and proc.returncode != 0:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr[-2000:]}")
    return wall, cpu, proc.stdout


def _stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _time(name: str, argv: list[str], env: dict[str, str], runs: int, results: dict, after=None,
          check: bool = True) -> None:
    walls, cpus = [], []
    for i in range(runs + 1):
        wall, cpu, out = _run(argv, env, check)
        if after is not None:
            after(out)
        if i:  # the first run warms the OS file cache
            walls.append(wall)
            cpus.append(cpu)
    results[name] = {"argv": argv[3:] if argv[:3] == _cmd(ARGS) else argv, "runs": runs,
                     "wall_s": _stats(walls) | {"all": walls}, "cpu_s": _stats(cpus) | {"all": cpus}}
    print(f"{name:<28} wall median {statistics.median(walls):6.2f} s  cpu median {statistics.median(cpus):6.2f} s",
          flush=True)


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("lethe-unlearn", "numpy", "onnxruntime", "tokenizers", "torch", "sentence-transformers",
                "scikit-learn", "typer", "llama-cpp-python"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def main() -> None:
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=10, help="forget requests in the store")
    ap.add_argument("--runs", type=int, default=5, help="timed runs per command (after one warm-up)")
    ap.add_argument("--chat-tokens", type=int, default=16, help="--max-tokens of the timed chat")
    ap.add_argument("--no-chat", action="store_true", help="skip the chat timing (no model load)")
    ap.add_argument("--src", default=None, help="another checkout's src folder to time instead")
    ap.add_argument("--label", default="", help="free text stored with the results")
    ap.add_argument("--out", default="/tmp/lethe-results/bench_cli.json")
    ARGS = args = ap.parse_args()
    if args.requests > len(PEOPLE) - 1:
        raise SystemExit(f"--requests at most {len(PEOPLE) - 1}")
    work = Path(tempfile.mkdtemp(prefix="lethe-bench-cli-"))
    env = dict(os.environ)
    env["LETHE_HOME"] = str(work / "home")
    env.pop("LETHE_VERBOSE", None)
    if args.src:
        env["PYTHONPATH"] = str(Path(args.src).resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    cache = Path(env.get("LETHE_CACHE") or Path.home() / ".cache" / "lethe")
    lethe = _cmd(args)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    try:
        files = [_forget_file(work, p) for p in PEOPLE]
        # the store: --requests requests, added in one process through the Python API
        setup = ("import sys, json; from lethe import Guard; g = Guard.open(sys.argv[1]); "
                 "[g.forget([json.loads(l)['prompt'] for l in open(f)], kind='privacy', subject=n, rewriter='rule', "
                 "progress=False) for f, n in zip(sys.argv[2::2], sys.argv[3::2])]")
        pairs = [x for f, p in zip(files[:args.requests], PEOPLE[:args.requests], strict=True) for x in (str(f), p)]
        _run([sys.executable, "-c", setup, env["LETHE_HOME"], *pairs], env)
        setup_s = time.perf_counter() - t0
        results: dict = {}
        query = QUESTIONS[0].format(PEOPLE[0])

        # first call: model files cached, benign embeddings and scorer fits not
        cold = work / "cold-cache"
        cold.mkdir()
        for sub in ("models", "onnx"):
            if (cache / sub).exists():
                (cold / sub).symlink_to(cache / sub)
        wall, cpu, _ = _run([*lethe, "check", query], env | {"LETHE_CACHE": str(cold)})
        results["check (first call)"] = {"argv": ["check", query], "runs": 1, "wall_s": {"all": [wall]},
                                         "cpu_s": {"all": [cpu]}}
        print(f"{'check (first call)':<28} wall {wall:6.2f} s  cpu {cpu:6.2f} s", flush=True)

        _time("check", [*lethe, "check", query], env, args.runs, results)
        _time("forget list", [*lethe, "forget", "list"], env, args.runs, results)
        extra = files[args.requests]

        def revoke(out: str) -> None:  # keep the store at --requests requests
            _run([*lethe, "forget", "revoke", out.strip().splitlines()[-1]], env)

        _time("forget add --rewriter rule", [*lethe, "forget", "add", "--file", str(extra), "--rewriter", "rule",
                                             "--subject", PEOPLE[args.requests]], env, args.runs, results, after=revoke)
        if not args.no_chat:
            _time("chat", [*lethe, "chat", "What is the capital of Japan?", "--max-tokens", str(args.chat_tokens)],
                  env, args.runs, results)
        _time("--help", [*lethe, "--help"], env, args.runs, results)
        _time("error (missing file)", [*lethe, "check", "--file", str(work / "missing.jsonl")], env, args.runs,
              results, check=False)
        _time("python -c 'import lethe'", [sys.executable, "-c", "import lethe"], env, args.runs, results)
        _time("python -c pass", [sys.executable, "-c", "pass"], env, args.runs, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = os.cpu_count()
    report = {
        "benchmark": "cli", "label": args.label, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": vars(args) | {"cache": str(cache), "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE")},
        "versions": _versions(),
        "machine": {"cores": cores, "loadavg_start": load0, "loadavg_end": os.getloadavg(),
                    "platform": platform.platform()},
        "setup_s": setup_s, "results": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written {out}")


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
