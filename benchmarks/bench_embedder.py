"""The embedder's ONNX engine in fp32 and int8 (``embedder_quantize``), measured in one run.

Single queries (one text per call, p50/p95 milliseconds and CPU milliseconds) and batches (texts per
second, batch 64) on TOFU questions, plus how close the int8 vectors are to fp32 (cosine of each
text's two vectors, and whether each paraphrased question's nearest forget question is the same).
The load average before and after is recorded: the machine may be shared.

    python benchmarks/bench_embedder.py --out /tmp/lethe-results/embedder_int8.json
    python benchmarks/bench_embedder.py --also all-mpnet-base-v2   # a larger encoder on the same texts
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import lethe
from lethe.backends.embeddings import Embedder, int8_export_path, onnx_export_path


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def measure(emb: Embedder, singles: list[str], batch: list[str]) -> dict:
    emb.encode(singles[:8])  # warm-up
    ms, cpu_ms = [], []
    for t in singles:
        w, c = time.perf_counter(), time.process_time()
        emb.encode([t])
        ms.append(1000 * (time.perf_counter() - w))
        cpu_ms.append(1000 * (time.process_time() - c))
    w, c = time.perf_counter(), time.process_time()
    emb.encode(batch, batch_size=64)
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    return {"single_ms_p50": float(np.median(ms)), "single_ms_p95": float(np.percentile(ms, 95)),
            "single_cpu_ms_p50": float(np.median(cpu_ms)), "batched_texts_per_s": len(batch) / wall,
            "batched_cpu_ms_per_text": 1000 * cpu / len(batch)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("LETHE_DATA", str(Path(__file__).resolve().parents[2] / "shared"
                                                                      / "data")))
    ap.add_argument("--singles", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--also", default="",
                    help="comma-separated other encoders measured in fp32 on the same texts (e.g. all-mpnet-base-v2)")
    ap.add_argument("--out", default="/tmp/lethe-results/embedder_int8.json")
    args = ap.parse_args()
    tofu = Path(args.data) / "tofu"
    rows = [json.loads(x) for x in (tofu / "forget05_perturbed.jsonl").read_text().splitlines() if x.strip()]
    retain = [json.loads(x)["question"] for x in (tofu / "retain90.jsonl").read_text().splitlines() if x.strip()]
    forget, para = [r["question"] for r in rows], [r["paraphrased_question"] for r in rows]
    singles, batch = retain[: args.singles], (retain * 2)[: args.batch]
    load_before = [round(x, 2) for x in os.getloadavg()]
    t = time.perf_counter()
    fp32 = Embedder(engine="onnx", quantize="none")
    fp32_load = time.perf_counter() - t
    had_int8 = int8_export_path(onnx_export_path(fp32.path)).exists()
    t = time.perf_counter()
    int8 = Embedder(engine="onnx", quantize="int8")
    int8_load = time.perf_counter() - t
    res = {}
    for name, emb in (("fp32", fp32), ("int8", int8)):  # interleaved twice: load drifts on a shared machine
        res[name] = measure(emb, singles, batch)
    for name, emb in (("int8", int8), ("fp32", fp32)):
        again = measure(emb, singles, batch)
        res[name] = {k: (res[name][k] + again[k]) / 2 for k in again}
    texts = forget + para + retain[:1000]
    a, b = fp32.encode(texts), int8.encode(texts)
    cos = (a * b).sum(axis=1)
    fa, fb, pa, pb = fp32.encode(forget), int8.encode(forget), fp32.encode(para), int8.encode(para)
    same_nn = float(np.mean((pa @ fa.T).argmax(axis=1) == (pb @ fb.T).argmax(axis=1)))
    score_diff = np.abs((pa * fa).sum(axis=1) - (pb * fb).sum(axis=1))
    fp32_path = onnx_export_path(fp32.path)
    result = {
        "benchmark": "embedder_int8", "date": time.strftime("%Y-%m-%d", time.gmtime()), "config": vars(args),
        "versions": {"lethe": lethe.__version__, "python": platform.python_version(),
                     "onnxruntime": _version("onnxruntime"), "onnx": _version("onnx")},
        "cpus": len(os.sched_getaffinity(0)), "threads": os.environ.get("LETHE_EMBED_THREADS", "default"),
        "loadavg_before": load_before, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "open_s": {"fp32": fp32_load, "int8": int8_load, "int8_quantised_in_this_run": not had_int8},
        "file_mb": {"fp32": fp32_path.stat().st_size / 1e6, "int8": int8_export_path(fp32_path).stat().st_size / 1e6},
        "fp32": res["fp32"], "int8": res["int8"],
        "speedup": {"single_p50": res["fp32"]["single_ms_p50"] / res["int8"]["single_ms_p50"],
                    "batched": res["int8"]["batched_texts_per_s"] / res["fp32"]["batched_texts_per_s"]},
        "agreement": {"n_texts": len(texts), "cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()),
                      "cosine_p01": float(np.percentile(cos, 1)), "paraphrase_nn_same": same_nn,
                      "paraphrase_pair_cosine_abs_diff_mean": float(score_diff.mean()),
                      "paraphrase_pair_cosine_abs_diff_max": float(score_diff.max())},
    }
    for spec in [x for x in args.also.split(",") if x]:  # other encoders, fp32, against the default's figures
        t = time.perf_counter()
        other = Embedder(spec, engine="onnx", quantize="none")
        other_load = time.perf_counter() - t
        m = measure(other, singles, batch)
        result.setdefault("also", {})[spec] = {
            **m, "open_s": other_load, "file_mb": onnx_export_path(other.path).stat().st_size / 1e6,
            "dim": int(other.encode(singles[:1]).shape[1]),
            "single_p50_vs_default": m["single_ms_p50"] / res["fp32"]["single_ms_p50"]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("fp32", "int8", "speedup", "agreement", "file_mb", "open_s",
                                              "loadavg_before", "loadavg_after", "also") if k in result}, indent=1))


if __name__ == "__main__":
    main()
