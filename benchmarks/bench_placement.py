"""Refusal and pass-through rates per intervention placement on the configured model.

In-scope: TOFU forget05 paraphrased questions (one request per author, rule rewriter).
Out-of-scope: real_authors / world_facts questions; pass-through = guarded output identical
to the unguarded output at temperature 0. Refusal = refusal phrase in the answer.

    python benchmarks/bench_placement.py --n 20 --out results/placement.json
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import tempfile
from pathlib import Path

import lethe
from lethe import Guard

REFUSAL = re.compile(r"sorry|can(?:no|')t|unable|not able|decline|apolog|no information|not (?:share|provide)"
                     r"|don't have|do not have|restricted|privacy", re.I)


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--placements", default="assistant_prefill,user_prefix,system")
    ap.add_argument("--guider", default="template", choices=["template", "llm"],
                    help="template (default) or llm: the configured model writes the reasoning")
    ap.add_argument("--out", default="results/placement.json")
    args = ap.parse_args()
    tofu = Path(args.data) / "tofu"
    forget = load(tofu / "forget05_perturbed.jsonl")
    guard = Guard.open(tempfile.mkdtemp(prefix="lethe-pl-"))
    guard.config.guider.kind = args.guider  # type: ignore[assignment]
    for a in range(0, len(forget), 20):
        guard.forget([r["question"] for r in forget[a:a + 20]], kind="privacy", rewriter="rule", progress=False)
    inside = [r["paraphrased_question"] for r in forget[:: max(1, len(forget) // args.n)]][: args.n]
    outside = [r["question"] for r in (load(tofu / "real_authors.jsonl") + load(tofu / "world_facts.jsonl"))][:: 20][: args.n]
    plain_out = {q: guard.chat(q, max_tokens=args.max_tokens, use_guard=False).response for q in outside}
    rows = {}
    for placement in args.placements.split(","):
        guard.config.intervention.placement = placement  # type: ignore[assignment]
        res_in = [guard.chat(q, max_tokens=args.max_tokens) for q in inside]
        res_out = [guard.chat(q, max_tokens=args.max_tokens) for q in outside]
        rows[placement] = {
            "triggered_in_scope": sum(r.triggered for r in res_in) / len(inside),
            "refusal_in_scope": sum(bool(REFUSAL.search(r.response)) for r in res_in) / len(inside),
            "pass_through_identical": sum(r.response == plain_out[q] for r, q in zip(res_out, outside, strict=True))
            / len(outside),
            "mean_timings_in_scope": {k: round(sum(r.timings.get(k, 0.0) for r in res_in) / len(inside), 3)
                                      for k in res_in[0].timings},
            "examples": [{"query": q, "response": r.response, "reasoning": r.reasoning}
                         for q, r in list(zip(inside, res_in, strict=True))[:3]],
        }
        print(placement, {k: v for k, v in rows[placement].items() if k != "examples"}, flush=True)
    result = {"benchmark": "placement", "config": vars(args) | {"model": guard.config.backend.model},
              "versions": {"lethe": lethe.__version__, "python": platform.python_version()}, "placements": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
