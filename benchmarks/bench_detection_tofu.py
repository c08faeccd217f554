"""Detection quality on TOFU forget05: one forget request per author, no retain data used.

Positives: the forget05 questions and their paraphrased questions. Negatives: retain90
questions (other fictitious authors), real_authors and world_facts. Prints and writes
JSON with TPR/FPR at the configured tau, the calibrated tau, and latency.

    python benchmarks/bench_detection_tofu.py --data ../shared/data --rewriter rule --out results/det.json
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
from lethe import Guard, GuardConfig


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--rewriter", default="rule", choices=["rule", "llm"])
    ap.add_argument("--split", default="forget05")
    ap.add_argument("--neg-limit", type=int, default=0, help="cap retain90 negatives (0 = all)")
    ap.add_argument("--target-fpr", type=float, default=0.01)
    ap.add_argument("--home", default=None)
    ap.add_argument("--out", default="results/detection_tofu.json")
    args = ap.parse_args()
    tofu = Path(args.data) / "tofu"
    forget = load(tofu / f"{args.split}_perturbed.jsonl")
    n_forget = len(forget)
    home = Path(args.home or tempfile.mkdtemp(prefix="lethe-bench-"))
    guard = Guard.open(home, config=GuardConfig())
    t0 = time.perf_counter()
    ids = []
    for a in range(0, n_forget, 20):  # TOFU: 20 questions per author
        chunk = forget[a:a + 20]
        req = guard.forget([r["question"] for r in chunk], kind="privacy", rewriter=args.rewriter, progress=False)
        ids.append(req.id)
    add_s = time.perf_counter() - t0
    forget_qs = {r["question"] for r in forget}
    retain = [r["question"] for r in load(tofu / "retain90.jsonl") if r["question"] not in forget_qs]
    if args.neg_limit:
        retain = retain[: args.neg_limit]
    real = [r["question"] for r in load(tofu / "real_authors.jsonl")]
    world = [r["question"] for r in load(tofu / "world_facts.jsonl")]
    sets = {
        "forget": [r["question"] for r in forget],
        "forget_paraphrased": [r["paraphrased_question"] for r in forget],
        "retain90": retain, "real_authors": real, "world_facts": world,
    }
    scores = {}
    t = time.perf_counter()
    for name, qs in sets.items():
        scores[name] = np.array([d.score for d in guard.detect_many(qs)])
    det_s = time.perf_counter() - t
    n_total = sum(len(v) for v in sets.values())
    tau_default = guard.config.detector.tau
    tau_cal = guard.calibrate(target_fpr=args.target_fpr, force=True)  # shipped hold-out: out of domain, floored

    def rates(tau: float) -> dict:
        pos = np.concatenate([scores["forget"], scores["forget_paraphrased"]])
        neg = np.concatenate([scores["retain90"], scores["real_authors"], scores["world_facts"]])
        per = {k: float((v > tau).mean()) for k, v in scores.items()}
        return {"tau": tau, "tpr": float((pos > tau).mean()), "fpr": float((neg > tau).mean()), "per_set": per}

    worst_neg = sorted(zip(scores["retain90"].tolist(), retain, strict=True), reverse=True)[:5]
    worst_pos = sorted(zip(scores["forget_paraphrased"].tolist(), sets["forget_paraphrased"], strict=True))[:5]
    result = {
        "benchmark": "detection_tofu", "config": vars(args) | {"guard": guard.config.model_dump(),
                                                                 "embedder_identity": guard.embedder.identity},
        "versions": {"lethe": lethe.__version__, "python": platform.python_version()},
        "n_requests": len(ids), "add_seconds": add_s,
        "at_default_tau": rates(tau_default), "at_calibrated_tau": rates(tau_cal),
        "detect_ms_per_query_batched": 1000 * det_s / n_total,
        "hardest_negatives": [{"score": s, "query": q} for s, q in worst_neg],
        "hardest_positives": [{"score": s, "query": q} for s, q in worst_pos],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result[k] for k in ("at_default_tau", "at_calibrated_tau", "detect_ms_per_query_batched",
                                              "add_seconds")}, indent=2))
    print(json.dumps(result["hardest_negatives"][:5], indent=1))
    print(json.dumps(result["hardest_positives"][:5], indent=1))


if __name__ == "__main__":
    main()
