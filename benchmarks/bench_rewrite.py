"""LLM rewriting of TOFU forget05 prompts: one numbered-list generation per prompt against the
batched path (k sampled lines per prompt, many prompts per generation; ``LLMRewriter``).

For each path: wall and process CPU seconds per prompt (the CPU figure counts every thread of the
process, so it does not depend on how busy the shared machine is), the BERTScore F1 of the chosen
rewrite to its original (``lethe.guard.bertscore``), how many chosen rewrites are inside the copy
bound (``lethe.guard.copy_bound``; the others are stored as embeddings only) and how many came
from the model rather than the rule fallback. The load average before and after each path is
recorded too.

    python benchmarks/bench_rewrite.py --n 20 --out /tmp/lethe-results/rewrite.json
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
from lethe.backends import get_embedder, load_backend
from lethe.guard.bertscore import bertscore_f1
from lethe.guard.rewrite import LLMRewriter, RuleRewriter, is_copy, rewrite_prompts, within_bound
from lethe.guard.subject import guess_subject


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _version(pkg: str) -> str:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def run_path(name: str, rw: LLMRewriter, prompts: list[str], names: list[str], emb, k: int) -> dict:
    load_before = _load()
    cands: list[list[str]] = []
    t, c = time.perf_counter(), time.process_time()
    chosen = rewrite_prompts(prompts, _Recording(rw, cands), emb, k)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    f1 = bertscore_f1(emb, chosen, prompts)
    inside = [within_bound(r, p, names) for r, p in zip(chosen, prompts, strict=True)]
    from_model = [r in cs for r, cs in zip(chosen, cands, strict=True)]
    usable = [sum(1 for x in cs if not is_copy(x, p)) for cs, p in zip(cands, prompts, strict=True)]
    return {
        "path": name, "n_prompts": len(prompts), "k": k,
        "wall_s_per_prompt": wall / len(prompts), "cpu_s_per_prompt": cpu / len(prompts),
        "bertscore_f1_chosen_mean": float(np.mean(f1)), "bertscore_f1_chosen": [float(x) for x in f1],
        "inside_bound_rate": float(np.mean(inside)), "chosen_from_model_rate": float(np.mean(from_model)),
        "model_candidates_per_prompt": float(np.mean([len(cs) for cs in cands])),
        "model_candidates_inside_bound_per_prompt": float(np.mean(usable)),
        "loadavg_before": load_before, "loadavg_after": _load(),
        "items": [{"prompt": p, "chosen": r, "candidates": cs}
                  for p, r, cs in zip(prompts, chosen, cands, strict=True)],
    }


class _Recording:
    """A rewriter that keeps the candidates it hands out (to tell model choices from fallbacks)."""

    def __init__(self, rw: LLMRewriter, sink: list[list[str]]) -> None:
        self.rw, self.sink = rw, sink

    def candidates_many(self, prompts: list[str], k: int) -> list[list[str]]:
        out = self.rw.candidates_many(prompts, k)
        self.sink.extend(out)
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("LETHE_DATA", str(Path(__file__).resolve().parents[2] / "shared"
                                                                      / "data")))
    ap.add_argument("--n", type=int, default=20, help="forget05 prompts (from the first author on)")
    ap.add_argument("--k", type=int, default=4, help="candidates per prompt (rewrites_per_prompt)")
    ap.add_argument("--paths", default="numbered,batched", help="comma list of: numbered, batched")
    ap.add_argument("--out", default="/tmp/lethe-results/rewrite.json")
    args = ap.parse_args()
    rows = [json.loads(x) for x in (Path(args.data) / "tofu" / "forget05.jsonl").read_text().splitlines() if x.strip()]
    prompts = [r["question"] for r in rows[: args.n]]
    names = [n for n in {guess_subject([r["question"] for r in rows[a:a + 20]]) for a in range(0, args.n, 20)} if n]
    t = time.perf_counter()
    backend = load_backend()
    emb = get_embedder()
    load_s = time.perf_counter() - t
    results = []
    for path in args.paths.split(","):
        rw = LLMRewriter(backend, batched=path == "batched")
        results.append(run_path(path, rw, prompts, names, emb, args.k))
        r = results[-1]
        print(f"{path}: {r['wall_s_per_prompt']:.2f} s/prompt wall, {r['cpu_s_per_prompt']:.2f} CPU s/prompt, "
              f"BERTScore {r['bertscore_f1_chosen_mean']:.4f}, inside bound {r['inside_bound_rate']:.3f}, "
              f"from model {r['chosen_from_model_rate']:.3f}, load {r['loadavg_before']} -> {r['loadavg_after']}")
    rule = RuleRewriter()
    rule_f1 = bertscore_f1(emb, [rule.rewrite(p) for p in prompts], prompts)
    result = {
        "benchmark": "rewrite", "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "config": vars(args) | {"backend": backend.describe(), "embedder": getattr(emb, "identity", "")},
        "versions": {"lethe": lethe.__version__, "python": platform.python_version(),
                     "llama_cpp_python": _version("llama_cpp_python"), "onnxruntime": _version("onnxruntime")},
        "cpus": len(os.sched_getaffinity(0)), "load_s": load_s,
        "rule_only_bertscore_f1_mean": float(np.mean(rule_f1)), "paths": results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"rule rewriter alone: BERTScore {result['rule_only_bertscore_f1_mean']:.4f}; wrote {out}")


if __name__ == "__main__":
    main()
