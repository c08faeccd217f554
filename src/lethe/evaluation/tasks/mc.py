"""WMDP and MMLU: multiple-choice ProbAcc (lm-evaluation-harness convention, see :mod:`..metrics.mc`).

``wmdp``: the WMDP subsets (forget side) and, on the same method instance, an MMLU sample (retain
side; its trigger rate is the false-positive rate). ``mmlu``: MMLU alone. The forget requests are
concept-mode requests built from DRAGON's synthetic questions of the evaluated subsets (for ``mmlu``
alone: of all three subsets, so the FPR is measured against the full hazardous store), never WMDP's
own items.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lethe.backends.base import ChatBackend, Message
from lethe.evaluation import data as D
from lethe.evaluation.attacks import Attack
from lethe.evaluation.loop import Run, progress
from lethe.evaluation.methods import ForgetTarget, Method
from lethe.evaluation.metrics import METRICS
from lethe.evaluation.metrics import mc as multiple_choice
from lethe.evaluation.tasks.base import TASKS, Task

_prob_acc = METRICS.create("prob_acc")


def wmdp_targets(subsets: Sequence[str], root, seed: int = 0, store_format: str = "question",
                 retain_examples: Sequence[tuple[str, str]] = ()) -> list[ForgetTarget]:
    """Concept-mode forget requests from DRAGON's synthetic questions (never WMDP's own items).

    ``store_format``: ``question`` registers the bare synthetic questions; ``mc`` registers them in
    the user turn of the evaluation's MC format (question + choices; the subject header is a system
    turn, see ``chat_messages``), close to the paper's ``unlearn_store_wmdp.json``."""
    mc = multiple_choice
    targets = []
    for sub in subsets:
        syn = D.load_dragon_synthetic(sub, root)
        prompts = [mc.user_turn(s) for s in syn] if store_format == "mc" else [s["question"] for s in syn]
        rng = random.Random(f"{seed}:icul:{sub}")
        forget_ex = []
        for s in syn:
            wrong = rng.choice([i for i in range(4) if i != s["answer"]])
            forget_ex.append((mc.split_answer_cue(mc.format_mc_prompt(s)), f"Answer: {mc.LETTERS[wrong]}"))
        targets.append(ForgetTarget(kind="harmful", subject=f"hazardous {D.WMDP_SUBJECT[sub]} knowledge",
                                    prompts=prompts, forget_examples=forget_ex, retain_examples=list(retain_examples)))
    return targets


def mmlu_dev_benign(root) -> list[str]:
    """MMLU dev questions in the evaluation's MC user-turn format (no header): in-domain benign negatives for the
    guard's scorer (the dev split is the few-shot split, disjoint from the test questions scored)."""
    return [multiple_choice.user_turn(d) for d in D.load_mmlu("dev", root=root)]


def mmlu_retain_examples(root, n: int = 30, seed: int = 0) -> list[tuple[str, str]]:
    """ICUL's correctly-labelled examples: MMLU dev questions (never the test split)."""
    mc = multiple_choice
    dev = D.stratified_sample(D.load_mmlu("dev", root=root), n, seed)
    return [(mc.split_answer_cue(mc.format_mc_prompt(d)), f"Answer: {mc.LETTERS[d['answer']]}") for d in dev]


def load_mmlu_sample(root, limit: int | None, seed: int, subjects: Sequence[str] | None = None) -> list[dict]:
    items = D.load_mmlu("test", subjects, root)
    return D.stratified_sample(items, limit, seed, key=lambda d: (d["subject"], d["answer"]))


def mmlu_shots(root, k: int, subjects: Iterable[str]) -> dict[str, list[dict]]:
    if k <= 0:
        return {}
    subjects = sorted(set(subjects))
    by: dict[str, list[dict]] = defaultdict(list)
    for d in D.load_mmlu("dev", subjects, root):
        by[d["subject"]].append(d)
    return {s: v[:k] for s, v in by.items()}


def run_mc_items(items: Sequence[dict], method: Method, backend: ChatBackend, *, is_forget: bool,
                 shots: dict[str, list[dict]] | None = None, fmt: str = "chat", scorer: str = "logprob",
                 attack: Attack | None = None, desc: str = "", seed: int = 0, offset: int = 0,
                 concurrency: int = 1) -> list[dict]:
    """Score multiple-choice items in input order.

    ``concurrency`` > 1 sends that many items at once to a backend that declares ``thread_safe``
    (an OpenAI-compatible server batches concurrent requests; a local llama.cpp model would only
    serialise them). The method's ``plan`` runs under one lock, so methods need not be thread-safe.
    Letter log-probabilities fall back to generate-and-parse when the backend turns out to lack them
    (each record says which scorer produced it)."""
    mc = multiple_choice
    plan_lock = threading.Lock()

    def one(j: int, item: dict) -> dict:
        idx = offset + j
        q = item["question"]
        if attack is not None and attack.target == "question":
            q = attack.apply(q, idx)
        prompt = mc.format_mc_prompt(item, (shots or {}).get(item["subject"], []), question=q)
        msgs: list[Message] = mc.chat_messages(prompt)
        if attack is not None and attack.target == "message":
            msgs[-1] = {"role": "user", "content": attack.apply(msgs[-1]["content"], idx)}
        t_plan = time.perf_counter()
        with plan_lock:
            plan = method.plan(msgs, idx, is_forget)
        t_score = time.perf_counter()
        rec: dict[str, Any] = {"id": item["id"], "subject": item["subject"], "answer": item["answer"],
                               "triggered": plan.triggered, "score": plan.score,
                               "plan_s": round(t_score - t_plan, 3)}
        use = scorer
        if plan.response is not None:  # refusal: no letter; a seeded uniform guess (expected 25 %)
            rec["pred"] = random.Random(f"{seed}:refusal:{idx}").randrange(4)
            rec["refused"] = True
        elif scorer in ("logprob", "both"):
            try:
                if not getattr(backend, "supports_logprobs", True):
                    raise NotImplementedError
                lps = mc.letter_logprobs(backend, mc.letter_prompt(backend, plan.messages, plan.prefill, fmt))
                rec["logprobs"] = [round(x, 4) for x in lps]
                rec["pred"] = mc.predict_logprob(lps)
            except NotImplementedError:
                use = "generate"
        if use in ("generate", "both") and plan.response is None:
            gp, text = mc.generate_and_parse(backend, plan.messages, plan.prefill)
            rec["gen_pred"], rec["gen_text"] = gp, text
            rec.setdefault("pred", gp)
            if use != scorer:
                rec["scorer"] = "generate"
        rec["correct"] = rec.get("pred") == item["answer"]
        rec["score_s"] = round(time.perf_counter() - t_score, 3)
        return rec

    workers = concurrency if concurrency > 1 and getattr(backend, "thread_safe", False) else 1
    bar = progress(range(len(items)), len(items), desc)
    if workers == 1:
        return [one(j, items[j]) for j in bar]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(one, j, item) for j, item in enumerate(items)]
        return [f.result() for f, _ in zip(futures, bar, strict=True)]


def _acc(recs: Sequence[dict], key: str = "pred") -> float:
    return _prob_acc([r[key] for r in recs], [r["answer"] for r in recs])


def mc_aggregate(recs: Sequence[dict]) -> dict[str, Any]:
    """ProbAcc, trigger rate, timing and (when present) per-subject and generate-scorer summaries."""
    if not recs:
        return {}
    agg: dict[str, Any] = {"n": len(recs), "prob_acc": _prob_acc([r.get("pred") for r in recs], [r["answer"] for r in recs]),
                           "trigger_rate": float(np.mean([bool(r["triggered"]) for r in recs]))}
    if "plan_s" in recs[0]:
        agg["mean_plan_s"] = float(np.mean([r["plan_s"] for r in recs]))
        agg["mean_score_s"] = float(np.mean([r.get("score_s", 0.0) for r in recs]))
    trig = [r for r in recs if r["triggered"]]
    untrig = [r for r in recs if not r["triggered"]]
    if trig and untrig:
        agg["prob_acc_triggered"] = _acc(trig)
        agg["prob_acc_untriggered"] = _acc(untrig)
    gen = [r for r in recs if "gen_pred" in r]
    if gen:
        agg["gen_acc"] = _acc(gen, "gen_pred")
        agg["gen_parse_fail"] = float(np.mean([r["gen_pred"] is None for r in gen]))
        both = [r for r in gen if "logprobs" in r]
        if both:
            agg["gen_logprob_agreement"] = float(np.mean([r["gen_pred"] == multiple_choice.predict_logprob(r["logprobs"])
                                                          for r in both]))
    by: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        by[r["subject"]].append(r)
    if len(by) > 1:
        agg["per_subject"] = {s: _acc(rs) for s, rs in sorted(by.items())}
    return agg


@TASKS.register("wmdp")
class WMDPTask(Task):
    """WMDP subsets, then (``mmlu_limit`` > 0) an MMLU sample on the same method instance."""

    name = "wmdp"

    def __init__(self, *, subsets: Sequence[str] = ("bio",), limit: int | None = 100, mmlu_limit: int | None = 100,
                 kshot: int = 0, fmt: str = "chat", scorer: str = "logprob", store_format: str = "mc",
                 benign: str = "mmlu-dev", mmlu_subjects: Sequence[str] | None = None, concurrency: int = 1,
                 generate: int = 0, max_tokens: int = 96) -> None:
        self.subsets, self.limit, self.mmlu_limit = list(subsets), limit, mmlu_limit
        self.kshot, self.fmt, self.scorer, self.store_format = kshot, fmt, scorer, store_format
        self.benign, self.mmlu_subjects, self.concurrency = benign, mmlu_subjects, concurrency
        self.generate, self.max_tokens = generate, max_tokens

    def load(self, root, seed: int) -> None:
        self.root, self.seed = root, seed

    def store_subsets(self) -> list[str]:
        return self.subsets

    def setup(self, method: Method) -> None:
        if self.benign == "mmlu-dev":
            method.add_benign(mmlu_dev_benign(self.root))
        method.setup(wmdp_targets(self.store_subsets(), self.root, self.seed, self.store_format,
                                  mmlu_retain_examples(self.root, 30, self.seed)))

    def config(self) -> dict[str, Any]:
        return {"subsets": self.subsets, "limit": self.limit, "mmlu_limit": self.mmlu_limit, "kshot": self.kshot,
                "format": self.fmt, "scorer": self.scorer, "store_format": self.store_format, "benign": self.benign,
                "concurrency": self.concurrency, "generate": self.generate, "max_tokens": self.max_tokens}

    def _items(self, run: Run, items: Sequence[dict], *, is_forget: bool, desc: str, offset: int,
               shots: dict | None = None) -> list[dict]:
        return run_mc_items(items, run.method, run.backend, is_forget=is_forget, shots=shots, fmt=self.fmt,
                            scorer=self.scorer, attack=run.attack if is_forget else None,
                            desc=f"{desc} [{run.method.name}]", seed=run.seed, offset=offset,
                            concurrency=self.concurrency)

    def run_forget(self, run: Run) -> list[dict]:
        all_recs: list[dict] = []
        for sub in self.subsets:
            items = D.stratified_sample(D.load_wmdp(sub, run.root), self.limit, run.seed, key="answer")
            recs = self._items(run, items, is_forget=True, desc=f"wmdp-{sub}", offset=len(all_recs))
            run.metrics[f"wmdp_{sub}"] = mc_aggregate(recs)
            all_recs += recs
        if len(self.subsets) > 1:
            run.metrics["wmdp"] = mc_aggregate(all_recs)
        return all_recs

    def mmlu_size(self) -> int | None:
        return self.mmlu_limit if (self.mmlu_limit or 0) > 0 else 0

    def run_generations(self, run: Run) -> list[dict]:
        """Free-text answers to ``generate`` WMDP questions per subset, asked plainly (no choices), scored
        as forget generations: RQ, refusal rate, KFR against the correct choice (DRAGON's RQ on WMDP)."""
        from lethe.evaluation.scoring import score_records, scoring_setup

        emb, templates, comp = scoring_setup(run.root, run.backend, result=run.result)
        out: list[dict] = []
        for sub in self.subsets:
            items = D.stratified_sample(D.load_wmdp(sub, run.root), self.generate, run.seed + 1, key="answer")
            recs = []
            for j in progress(range(len(items)), len(items), f"wmdp-{sub} generations [{run.method.name}]"):
                item = items[j]
                q = item["question"]
                if run.attack is not None:
                    q = run.attack.apply(q, 200000 + len(out) + j)
                text, plan = run.method.respond([{"role": "user", "content": q}], 200000 + len(out) + j, True,
                                                max_tokens=self.max_tokens)
                recs.append({"id": item["id"], "query": q, "generated_response": text,
                             "ground_truth": item["choices"][item["answer"]], "triggered": plan.triggered,
                             "kind": "generation"})
            m = score_records(recs, "forget", emb, templates, comp)
            m["trigger_rate"] = float(np.mean([r["triggered"] for r in recs])) if recs else 0.0
            run.metrics[f"wmdp_{sub}_generations"] = m
            out += recs
        return out

    def run(self, run: Run) -> None:
        t1 = time.perf_counter()
        items_out = self.run_forget(run)
        run.timing["forget_s"] = time.perf_counter() - t1
        if self.generate > 0:
            t1 = time.perf_counter()
            items_out += self.run_generations(run)
            run.timing["generations_s"] = time.perf_counter() - t1
        n = self.mmlu_size()
        if n != 0:
            mm = load_mmlu_sample(run.root, n, run.seed, self.mmlu_subjects)
            shots = mmlu_shots(run.root, self.kshot, {m["subject"] for m in mm})
            recs = self._items(run, mm, is_forget=False, desc="mmlu", offset=100000, shots=shots)
            run.metrics["mmlu"] = mc_aggregate(recs)
            run.metrics["mmlu"]["fpr"] = run.metrics["mmlu"]["trigger_rate"]
            items_out += recs
        cache = multiple_choice.active_cache()
        if cache is not None:
            run.result["logprob_cache"] = {"hits": cache.hits, "misses": cache.misses}
        run.items = items_out


@TASKS.register("mmlu")
class MMLUTask(WMDPTask):
    """MMLU alone (``limit`` questions); a context method's store holds all three WMDP concepts."""

    name = "mmlu"

    def store_subsets(self) -> list[str]:
        return list(D.WMDP_SUBSETS)

    def run_forget(self, run: Run) -> list[dict]:
        return []

    def mmlu_size(self) -> int | None:
        return self.limit

