"""TOFU (Maini et al. 2024, arXiv 2401.06121): fictitious authors to forget, with DRAGON's metrics.

Splits: the forget split (forget01/05/10), retain (the first 300 rows of ``retain_perturbed``, as
DRAGON), real authors and world facts. The forget requests are sample-mode privacy requests, one per
forget author (20 consecutive questions each). Per split: ROUGE-L recall of greedy answers, the
answer probability and truth ratio (``--probs``); over the splits: model utility, DS, KFR / KRR, CS,
RQ and, against a reference run, forget quality.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lethe.backends.base import ChatBackend, Message
from lethe.errors import ConfigError
from lethe.evaluation import data as D
from lethe.evaluation.attacks import Attack
from lethe.evaluation.loop import Run, progress
from lethe.evaluation.methods import ForgetTarget, Method
from lethe.evaluation.metrics import METRICS
from lethe.evaluation.metrics import tofu as likelihood
from lethe.evaluation.metrics.rouge import rouge_l
from lethe.evaluation.scoring import score_records, scoring_setup
from lethe.evaluation.tasks.base import TASKS, Task

_ds = METRICS.create("ds")
_truth_ratio_aggregate = METRICS.create("truth_ratio_aggregate")
_model_utility = METRICS.create("model_utility")
_forget_quality = METRICS.create("forget_quality")

SPLITS = ("forget", "retain", "real_authors", "world_facts")
GEN_BATCH = 16  # items whose greedy answers are generated together


class Cache:
    """Memoises generations and answer NLLs by their exact prompt (continual runs re-ask a lot)."""

    def __init__(self) -> None:
        self.gen: dict[Any, tuple[str, Any]] = {}
        self.nll: dict[tuple[str, str], float] = {}

    def nll_of(self, backend: ChatBackend, prompt: str, answer: str) -> float:
        key = (prompt, answer)
        if key not in self.nll:
            self.nll[key] = likelihood.mean_nll(backend, prompt, answer)
        return self.nll[key]


def tofu_targets(forget_rows: Sequence[dict], per_author: int = 20, retain_rows: Sequence[dict] = (),
                 seed: int = 0) -> list[ForgetTarget]:
    """One privacy forget request per TOFU author (20 consecutive questions each)."""
    from lethe.guard.subject import guess_subject

    retain_ex = [(r["question"], r["answer"]) for r in retain_rows[:30]]
    out = []
    for g in D.tofu_author_groups(forget_rows, per_author):
        subject = guess_subject([r["question"] for r in g])  # None: the guard guesses the name itself
        forget_ex = [(r["question"], r.get("perturbed_answer", [r["answer"]])[0]) for r in g]
        out.append(ForgetTarget(kind="privacy", subject=f"the author {subject}" if subject else "a fictitious author",
                                prompts=[r["question"] for r in g], entities=[subject] if subject else None,
                                forget_examples=forget_ex, retain_examples=retain_ex))
    return out


def _prompt_for_probs(method: Method, backend: ChatBackend, msgs: list[Message], idx: int, is_forget: bool) -> str:
    plan = method.plan(msgs, idx, is_forget)
    if plan.response is not None:  # Guardrail+ only replaces the output: the model's probabilities are unchanged
        return backend.format_prompt(msgs)
    return backend.format_prompt(plan.messages, plan.prefill)


def run_tofu_split(rows: Sequence[dict], split: str, method: Method, backend: ChatBackend, *, is_forget: bool,
                   attack: Attack | None, probs: bool, generate: bool, cache: Cache, max_tokens: int = 200,
                   desc: str = "", offset: int = 0) -> list[dict]:
    """Per-item records: the (attacked) query, the greedy answer and trigger, probabilities and truth ratio.

    The greedy answers are generated first, ``GEN_BATCH`` items at a time through
    :meth:`Method.respond_many` (one batched generation on a backend that has one), then each item's
    probabilities are scored."""
    queries = [attack.apply(r["question"], offset + j) if attack is not None else r["question"]
               for j, r in enumerate(rows)]
    keys = [("gen", method.name, len(method.targets), q, offset + j) for j, q in enumerate(queries)]
    if generate:
        todo = [j for j, k in enumerate(keys) if k not in cache.gen]
        bar = progress(None, len(todo), f"{desc} answers" if probs else desc)
        for start in range(0, len(todo), GEN_BATCH):
            part = todo[start:start + GEN_BATCH]
            outs = method.respond_many([([{"role": "user", "content": queries[j]}], offset + j, is_forget)
                                        for j in part], max_tokens=max_tokens)
            for j, out in zip(part, outs, strict=True):
                cache.gen[keys[j]] = out
            bar.update(len(part))
        bar.close()
    recs = []
    for j, r in enumerate(progress(rows, len(rows), f"{desc} probabilities") if probs else rows):
        idx = offset + j
        q = queries[j]
        msgs: list[Message] = [{"role": "user", "content": q}]
        rec: dict[str, Any] = {"id": r["id"], "query": q, "ground_truth": r["answer"]}
        if generate:
            text, plan = cache.gen[keys[j]]
            rec.update(generated_response=text, triggered=plan.triggered, score=plan.score)
        if probs:
            prompt = _prompt_for_probs(method, backend, msgs, idx, is_forget)
            if split.startswith(("real_authors", "world_facts")):
                correct = cache.nll_of(backend, prompt, r["answer"])
                pert = [cache.nll_of(backend, prompt, a) for a in r["perturbed_answer"]]
                rec["probability"] = likelihood.choice_probability(correct, pert)
            else:
                rec["probability"] = likelihood.norm_prob(cache.nll_of(backend, prompt, r["answer"]))
                correct = cache.nll_of(backend, prompt, r["paraphrased_answer"])
                pert = [cache.nll_of(backend, prompt, a) for a in r["perturbed_answer"]]
            rec["truth_ratio"] = likelihood.truth_ratio(correct, pert)
        recs.append(rec)
    return recs


def tofu_split_metrics(recs: Sequence[dict], split: str) -> dict[str, Any]:
    m: dict[str, Any] = {"n": len(recs)}
    if recs and "generated_response" in recs[0]:
        m["rougeL_recall"] = float(np.mean([rouge_l(r["ground_truth"], r["generated_response"])["recall"] for r in recs]))
        m["trigger_rate"] = float(np.mean([bool(r["triggered"]) for r in recs]))
    if recs and "probability" in recs[0]:
        m["probability"] = float(np.mean([r["probability"] for r in recs]))
        m["truth_ratio"] = _truth_ratio_aggregate([r["truth_ratio"] for r in recs], split)
    return m


def tofu_utility(metrics: dict[str, dict]) -> float | None:
    """Model utility over retain, real authors and world facts; ``None`` when a part is missing."""
    vals = []
    for s in ("retain", "real_authors", "world_facts"):
        m = metrics.get(s, {})
        for k in ("probability", "truth_ratio", "rougeL_recall"):
            if k not in m:
                return None
            vals.append(m[k])
    return _model_utility(vals)


def generation_metrics(result: dict, recs_by: dict[str, list[dict]], root, comp_opts: dict, backend) -> None:
    """KFR / KRR, CS, RQ of the forget and retain splits, and DS when both ran."""
    if "forget" not in recs_by and "retain" not in recs_by:
        return
    emb, templates, comp = scoring_setup(root, backend, comp_opts, result)
    for s in ("forget", "retain"):
        if s in recs_by:
            sc = score_records(recs_by[s], s, emb, templates, comp)
            result["metrics"][s].update({k: v for k, v in sc.items() if k != "n"})
    if "forget" in recs_by and "retain" in recs_by:
        m = result["metrics"]
        m["ds"] = _ds(m["forget"]["rougeL_recall"], m["retain"]["rougeL_recall"])


@TASKS.register("tofu")
class TofuTask(Task):
    """TOFU splits; ``reference``: a results file of the reference model's run, for forget quality."""

    name = "tofu"

    def __init__(self, *, forget_split: str = "forget05", limit: int | None = None, retain_limit: int | None = None,
                 probs: bool = True, splits: Sequence[str] = SPLITS, reference: str | None = None,
                 comp_opts: dict | None = None, max_tokens: int = 200) -> None:
        self.forget_split, self.limit, self.retain_limit = forget_split, limit, retain_limit
        self.probs, self.splits, self.reference = probs, list(splits), reference
        self.comp_opts, self.max_tokens = comp_opts or {}, max_tokens

    def load(self, root, seed: int) -> None:
        self.root, self.seed = root, seed
        self.forget_rows = D.load_tofu(f"{self.forget_split}_perturbed", root)
        self.retain_rows = D.load_tofu("retain_perturbed", root)[:300]

    def targets(self) -> list[ForgetTarget]:
        return tofu_targets(self.forget_rows, 20, D.load_tofu("retain90", self.root)[-200:], self.seed)

    def config(self) -> dict[str, Any]:
        return {"forget_split": self.forget_split, "limit": self.limit, "retain_limit": self.retain_limit,
                "probs": self.probs, "splits": self.splits, "reference": self.reference}

    def _sets(self) -> dict[str, list[dict]]:
        root, seed, limit, rl = self.root, self.seed, self.limit, self.retain_limit
        return {
            "forget": D.stratified_sample(self.forget_rows, limit, seed, key=lambda d: d["id"].rsplit("-", 1)[0]),
            "retain": D.stratified_sample(self.retain_rows, rl if rl is not None else limit, seed, key=lambda d: 0),
            "real_authors": D.stratified_sample(D.load_tofu("real_authors_perturbed", root), rl or limit, seed,
                                                key=lambda d: 0),
            "world_facts": D.stratified_sample(D.load_tofu("world_facts_perturbed", root), rl or limit, seed,
                                               key=lambda d: 0),
        }

    def run(self, run: Run) -> None:
        sets, cache = self._sets(), Cache()
        split_names = {"forget": f"{self.forget_split}_perturbed", "retain": "retain_perturbed",
                       "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed"}
        recs_by: dict[str, list[dict]] = {}
        for off, s in enumerate(self.splits):
            recs_by[s] = run_tofu_split(sets[s], split_names[s], run.method, run.backend, is_forget=(s == "forget"),
                                        attack=run.attack if s == "forget" else None, probs=self.probs, generate=True,
                                        cache=cache, max_tokens=self.max_tokens,
                                        desc=f"tofu-{s} [{run.method.name}]", offset=off * 10000)
            run.metrics[s] = tofu_split_metrics(recs_by[s], split_names[s])
        generation_metrics(run.result, recs_by, run.root, self.comp_opts, run.backend)
        mu = tofu_utility(run.metrics)
        if mu is not None:
            run.metrics["model_utility"] = mu
        if "forget" in recs_by and self.probs:
            run.metrics["forget_truth_ratios"] = [r["truth_ratio"] for r in recs_by["forget"]]
            if self.reference:
                ref_tr = json.loads(Path(self.reference).read_text())["metrics"].get("forget_truth_ratios")
                if not ref_tr:
                    raise ConfigError(f"reference run {self.reference} has no forget truth ratios")
                run.metrics["forget_quality"] = _forget_quality(run.metrics["forget_truth_ratios"], ref_tr)
                run.metrics["forget_quality_reference"] = str(self.reference)
        run.items = dict(recs_by)
