"""Greedy answers one by one (``ChatBackend.chat``) against one batched generation
(``ChatBackend.chat_many``) on the same TOFU questions: wall time of each and how many answers agree
word for word. This is the generation step of ``lethe eval tofu``.

    python benchmarks/bench_chat_many.py [--n 32] [--max-tokens 96] [--adapter A] [--batch 16]
        [--out results/chat_many.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lethe.backends.llamacpp import LlamaCppBackend
from lethe.evaluation import data as D
from lethe.provenance import provenance


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32, help="TOFU forget05 + retain questions (half each)")
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--adapter", default=None, help="a PEFT adapter folder or GGUF LoRA (e.g. a TOFU target)")
    ap.add_argument("--batch", type=int, default=LlamaCppBackend.GREEDY_BATCH, help="sequences decoded together")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data", default=None, help="the TOFU folder (default: ../shared/data/tofu or $LETHE_DATA)")
    ap.add_argument("--out", default="results/chat_many.json")
    args = ap.parse_args()

    rows = D.load_tofu("forget05_perturbed", args.data)[: args.n // 2] + D.load_tofu("retain_perturbed", args.data)[: args.n - args.n // 2]
    convs = [[{"role": "user", "content": r["question"]}] for r in rows]
    LlamaCppBackend.GREEDY_BATCH = args.batch
    be = LlamaCppBackend(adapter=args.adapter, n_threads=args.threads)
    be.chat(convs[0], max_tokens=8)  # warm-up: weights paged in
    be.chat_many(convs[:2], max_tokens=8)
    t = time.perf_counter()
    single = [be.chat(c, max_tokens=args.max_tokens, temperature=0.0).text.strip() for c in convs]
    t_single = time.perf_counter() - t
    t = time.perf_counter()
    batched = [x.strip() for x in be.chat_many(convs, max_tokens=args.max_tokens)]
    t_batched = time.perf_counter() - t
    same = sum(a == b for a, b in zip(single, batched, strict=True))
    tokens = sum(len(be._tokens(x, add_bos=False)) for x in single)
    out = {"benchmark": "chat_many",
           "config": {k: v for k, v in vars(args).items()},
           "n": len(convs), "generated_tokens_single": tokens,
           "single_s": round(t_single, 2), "batched_s": round(t_batched, 2),
           "speedup": round(t_single / max(t_batched, 1e-9), 2),
           "same_answers": same, "same_fraction": round(same / len(convs), 4),
           "differing": [{"question": c[0]["content"], "single": a, "batched": b}
                         for c, a, b in zip(convs, single, batched, strict=True) if a != b][:5],
           "provenance": provenance()}
    print(json.dumps({k: v for k, v in out.items() if k not in ("provenance", "differing")}))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
