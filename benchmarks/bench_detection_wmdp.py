"""Concept-mode detection on WMDP vs MMLU (no model generation; embeddings only).

The store holds one ``harmful`` request per subset built from DRAGON's synthetic questions
(never WMDP's own items). Positives: stratified WMDP questions in the evaluation's MC format;
negatives: stratified MMLU test questions in the same format. Prints and writes JSON with
trigger rates at the configured tau and TPR at fixed MMLU-test FPRs (an oracle operating point,
for comparison only). MMLU *dev* (never test) serves as in-domain benign negatives by default.

    python benchmarks/bench_detection_wmdp.py --wmdp-limit 300 --mmlu-limit 500 --out results/detection_wmdp.json
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
from lethe.evaluation import data as D
from lethe.evaluation.metrics import mc as MC
from lethe.evaluation.runner import load_mmlu_sample, mmlu_dev_benign, wmdp_targets


def user_turn(item: dict) -> str:
    """What the detector reads in an evaluation: the user turn of the chat-format MC prompt."""
    return MC.chat_messages(MC.format_mc_prompt(item))[-1]["content"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--subsets", default="bio,chem,cyber")
    ap.add_argument("--wmdp-limit", type=int, default=300)
    ap.add_argument("--mmlu-limit", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tau", type=float, default=None)
    ap.add_argument("--store-format", default="mc", choices=["mc", "question"])
    ap.add_argument("--benign", default="mmlu-dev", choices=["mmlu-dev", "none"],
                    help="in-domain benign negatives for the scorer (MMLU dev, never test)")
    ap.add_argument("--scorer", default=None)
    ap.add_argument("--out", default="results/detection_wmdp.json")
    args = ap.parse_args()
    subsets = [s for s in args.subsets.split(",") if s]
    cfg = GuardConfig()
    if args.tau is not None:
        cfg.detector.tau = args.tau
    if args.scorer:
        cfg.detector.scorer = args.scorer
    guard = Guard.open(Path(tempfile.mkdtemp(prefix="lethe-bench-wmdp-")), config=cfg)
    t0 = time.perf_counter()
    if args.benign == "mmlu-dev":
        guard.add_benign(mmlu_dev_benign(args.data))
    for t in wmdp_targets(subsets, args.data, args.seed, args.store_format):
        guard.forget(t.prompts, kind="harmful", rewriter="rule", progress=False, seed=args.seed)
    add_s = time.perf_counter() - t0
    sets = {f"wmdp_{s}": [user_turn(i) for i in D.stratified_sample(D.load_wmdp(s, args.data), args.wmdp_limit,
                                                                    args.seed, key="answer")] for s in subsets}
    sets["mmlu"] = [user_turn(i) for i in load_mmlu_sample(args.data, args.mmlu_limit, args.seed)]
    scores, per_q = {}, {}
    for name, qs in sets.items():
        t = time.perf_counter()
        dets = guard.detect_many(qs)
        per_q[name] = (time.perf_counter() - t) / max(1, len(qs))
        scores[name] = np.array([d.score for d in dets])
    tau = cfg.detector.tau
    res = {"config": {**vars(args), "tau": tau}, "versions": {"lethe": lethe.__version__, "python": platform.python_version()},
           "setup_s": round(add_s, 1),
           "rates_at_tau": {k: float((v > tau).mean()) for k, v in scores.items()},
           "tpr_at_mmlu_fpr": {k: {f: float((v > np.quantile(scores["mmlu"], 1 - f)).mean()) for f in (0.01, 0.02, 0.05)}
                               for k, v in scores.items() if k != "mmlu"},
           "n": {k: len(v) for k, v in scores.items()},
           "detect_s_per_query": {k: round(v, 4) for k, v in per_q.items()}}
    print(json.dumps(res, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
