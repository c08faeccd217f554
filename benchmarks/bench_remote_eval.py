"""Multiple-choice evaluation against an OpenAI-compatible server: questions/s sequential vs concurrent.

Starts llama-cpp-python's server on loopback with the embedded default (or uses ``--base-url``), scores
the same MMLU sample with ``--concurrency 1`` and ``--concurrency N`` through the ``openai`` backend
(letter log-probabilities from the completions endpoint), checks both give the same predictions, and
writes JSON with config, versions and numbers. A local llama.cpp server decodes one request at a
time, so concurrency buys little here; against vLLM on a GPU it is what makes WMDP + MMLU take minutes.

    python benchmarks/bench_remote_eval.py --limit 40 --concurrency 8 --out /tmp/lethe-results/remote_eval.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", default=None, help="an already running server (default: start llama.cpp's)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--data", default=os.environ.get("LETHE_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=Path("results/remote_eval.json"))
    args = ap.parse_args()

    import httpx

    import lethe
    from lethe.backends import BACKENDS
    from lethe.evaluation.methods import create_method
    from lethe.evaluation.runner import load_mmlu_sample, run_mc_items, versions

    proc = None
    url = args.base_url
    if url is None:
        from lethe.backends.default_model import default_gguf_path

        port = _port()
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(default_gguf_path()),
                                 "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
                                 "--model_alias", args.model, "--verbose", "False"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/v1"
        for _ in range(240):
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
    try:
        be = BACKENDS.create("openai", args.model, base_url=url)
        items = load_mmlu_sample(args.data, args.limit, seed=0)
        method = create_method("none", be)
        run_mc_items(items[:2], method, be, is_forget=False, fmt="raw")  # warm the server
        rows = {}
        preds = {}
        for c in (1, args.concurrency):
            t0 = time.perf_counter()
            recs = run_mc_items(items, method, be, is_forget=False, fmt="raw", concurrency=c)
            dt = time.perf_counter() - t0
            rows[str(c)] = {"seconds": round(dt, 2), "questions_per_s": round(len(items) / dt, 3),
                            "prob_acc": round(100.0 * sum(r["correct"] for r in recs) / len(recs), 2)}
            preds[c] = [r["pred"] for r in recs]
        result = {
            "benchmark": "remote_eval", "date": time.strftime("%Y-%m-%d"),
            "config": {"base_url": "local llama.cpp server" if proc else url, "model": args.model,
                       "limit": len(items), "concurrency": args.concurrency, "format": "raw", "scorer": "logprob"},
            "versions": {**versions(), "lethe": lethe.__version__},
            "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "load1": round(os.getloadavg()[0], 2)},
            "results": rows, "same_predictions": preds[1] == preds[args.concurrency],
        }
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["results"], indent=2), "same predictions:", result["same_predictions"])


if __name__ == "__main__":
    main()
