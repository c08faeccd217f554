"""Benchmark runners: build targets, run a method on a backend, compute metrics, write results.

A results file is one JSON object::

    {"task", "config": {...}, "versions": {...}, "components": {...}, "metrics": {...},
     "trajectory": [...] (continual), "items": [...] (with --items), "timing": {...}}
"""

from __future__ import annotations

import json
import os
import platform
import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from lethe.backends.base import ChatBackend, Message
from lethe.errors import ConfigError
from lethe.evaluation import data as D
from lethe.evaluation.attacks import ATTACKS, Attack
from lethe.evaluation.methods import ForgetTarget, Method, create_method
from lethe.evaluation.metrics import dragon as DR
from lethe.evaluation.metrics import mc as MC
from lethe.evaluation.metrics import tofu as TF
from lethe.evaluation.metrics.rouge import rouge_l


# -- plumbing ---------------------------------------------------------------------------------
def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("lethe-unlearn", "torch", "transformers", "llama_cpp_python", "sentence-transformers", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    out["llama_cpp"] = out.pop("llama_cpp_python")
    out["lethe"] = out.pop("lethe-unlearn")
    return out


def progress(it: Iterable, total: int | None = None, desc: str = "") -> Iterable:
    from tqdm.auto import tqdm

    return tqdm(it, total=total, desc=desc, unit="item", dynamic_ncols=True, leave=False)


def open_backend(model: str = "default", kind: str = "llamacpp", adapter: str | None = None,
                 base_url: str | None = None, seed: int = 0, threads: int | None = None) -> ChatBackend:
    """``--model`` spec: the default's name, a GGUF path (llamacpp), a hub id/folder (hf), or an API model (openai)."""
    from lethe.backends import BACKENDS, load_backend
    from lethe.config import DEFAULT_MODEL, BackendConfig

    model = DEFAULT_MODEL if model in ("default", "", None) else model
    threads = threads or int(os.environ.get("LETHE_THREADS", "0")) or None
    if kind == "llamacpp" and threads:
        # llama.cpp threads spin-wait: on a busy machine fewer threads can be much faster
        return BACKENDS.create("llamacpp", model, n_threads=threads, seed=seed, adapter=adapter)
    if adapter and kind not in ("llamacpp", "hf"):
        raise ValueError(f"--adapter needs the llamacpp or hf backend, not {kind!r}")
    return load_backend(BackendConfig(kind=kind, model=model, base_url=base_url, seed=seed,  # type: ignore[arg-type]
                                      adapter=adapter))


def make_attack(name: str | None, seed: int, root, backend) -> Attack:
    return ATTACKS.create(name or "none", seed=seed, data_root=root, backend=backend)


def write_results(result: dict, out: str | Path | None) -> None:
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1, ensure_ascii=False, default=_json_default))


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _base_result(task: str, config: dict, method: Method, backend: ChatBackend) -> dict:
    return {"task": task, "config": config, "versions": versions(), "method": method.describe(),
            "backend": backend.describe(), "metrics": {}, "components": {}, "timing": {}}


# -- multiple choice (WMDP, MMLU) ----------------------------------------------------------------
def wmdp_targets(subsets: Sequence[str], root, seed: int = 0, store_format: str = "question",
                 retain_examples: Sequence[tuple[str, str]] = ()) -> list[ForgetTarget]:
    """Concept-mode forget requests from DRAGON's synthetic questions (never WMDP's own items).

    ``store_format``: ``question`` registers the bare synthetic questions; ``mc`` registers them in
    the user turn of the evaluation's MC format (question + choices; the subject header is a system
    turn, see ``MC.chat_messages``), close to the paper's ``unlearn_store_wmdp.json``."""
    targets = []
    for sub in subsets:
        syn = D.load_dragon_synthetic(sub, root)
        if store_format == "mc":
            prompts = [MC.user_turn(s) for s in syn]
        else:
            prompts = [s["question"] for s in syn]
        rng = random.Random(f"{seed}:icul:{sub}")
        forget_ex = []
        for s in syn:
            wrong = rng.choice([i for i in range(4) if i != s["answer"]])
            forget_ex.append((MC.split_answer_cue(MC.format_mc_prompt(s)), f"Answer: {MC.LETTERS[wrong]}"))
        targets.append(ForgetTarget(kind="harmful", subject=f"hazardous {D.WMDP_SUBJECT[sub]} knowledge",
                                    prompts=prompts, forget_examples=forget_ex, retain_examples=list(retain_examples)))
    return targets


def mmlu_dev_benign(root) -> list[str]:
    """MMLU dev questions in the evaluation's MC user-turn format (no header): in-domain benign negatives for the
    guard's scorer (the dev split is the few-shot split, disjoint from the test questions scored)."""
    return [MC.user_turn(d) for d in D.load_mmlu("dev", root=root)]


def mmlu_retain_examples(root, n: int = 30, seed: int = 0) -> list[tuple[str, str]]:
    """ICUL's correctly-labelled examples: MMLU dev questions (never the test split)."""
    dev = D.stratified_sample(D.load_mmlu("dev", root=root), n, seed)
    return [(MC.split_answer_cue(MC.format_mc_prompt(d)), f"Answer: {MC.LETTERS[d['answer']]}") for d in dev]


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
    import threading
    from concurrent.futures import ThreadPoolExecutor

    plan_lock = threading.Lock()

    def one(j: int, item: dict) -> dict:
        idx = offset + j
        q = item["question"]
        if attack is not None and attack.target == "question":
            q = attack.apply(q, idx)
        prompt = MC.format_mc_prompt(item, (shots or {}).get(item["subject"], []), question=q)
        msgs: list[Message] = MC.chat_messages(prompt)
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
                lps = MC.letter_logprobs(backend, MC.letter_prompt(backend, plan.messages, plan.prefill, fmt))
                rec["logprobs"] = [round(x, 4) for x in lps]
                rec["pred"] = MC.predict_logprob(lps)
            except NotImplementedError:
                use = "generate"
        if use in ("generate", "both") and plan.response is None:
            gp, text = MC.generate_and_parse(backend, plan.messages, plan.prefill)
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
        out = []
        for f, _ in zip(futures, bar, strict=True):
            out.append(f.result())
        return out


def mc_aggregate(recs: Sequence[dict]) -> dict[str, Any]:
    if not recs:
        return {}
    agg: dict[str, Any] = {"n": len(recs), "prob_acc": MC.prob_acc([r.get("pred") for r in recs], [r["answer"] for r in recs]),
                           "trigger_rate": float(np.mean([bool(r["triggered"]) for r in recs]))}
    if "plan_s" in recs[0]:
        agg["mean_plan_s"] = float(np.mean([r["plan_s"] for r in recs]))
        agg["mean_score_s"] = float(np.mean([r.get("score_s", 0.0) for r in recs]))
    trig = [r for r in recs if r["triggered"]]
    untrig = [r for r in recs if not r["triggered"]]
    if trig and untrig:
        agg["prob_acc_triggered"] = MC.prob_acc([r["pred"] for r in trig], [r["answer"] for r in trig])
        agg["prob_acc_untriggered"] = MC.prob_acc([r["pred"] for r in untrig], [r["answer"] for r in untrig])
    gen = [r for r in recs if "gen_pred" in r]
    if gen:
        agg["gen_acc"] = MC.prob_acc([r["gen_pred"] for r in gen], [r["answer"] for r in gen])
        agg["gen_parse_fail"] = float(np.mean([r["gen_pred"] is None for r in gen]))
        both = [r for r in gen if "logprobs" in r]
        if both:
            agg["gen_logprob_agreement"] = float(np.mean([r["gen_pred"] == MC.predict_logprob(r["logprobs"]) for r in both]))
    by: dict[str, list[dict]] = defaultdict(list)
    for r in recs:
        by[r["subject"]].append(r)
    if len(by) > 1:
        agg["per_subject"] = {s: MC.prob_acc([r["pred"] for r in rs], [r["answer"] for r in rs]) for s, rs in sorted(by.items())}
    return agg


def load_mmlu_sample(root, limit: int | None, seed: int, subjects: Sequence[str] | None = None) -> list[dict]:
    items = D.load_mmlu("test", subjects, root)
    return D.stratified_sample(items, limit, seed, key=lambda d: (d["subject"], d["answer"]))


def mmlu_shots(root, k: int, subjects: Iterable[str]) -> dict[str, list[dict]]:
    if k <= 0:
        return {}
    subjects = sorted(set(subjects))
    dev = D.load_mmlu("dev", subjects, root)
    by: dict[str, list[dict]] = defaultdict(list)
    for d in dev:
        by[d["subject"]].append(d)
    return {s: v[:k] for s, v in by.items()}


def eval_mc(task: str, *, method_name: str, backend: ChatBackend, root, subsets: Sequence[str] = ("bio",),
            limit: int | None = 100, mmlu_limit: int | None = 100, seed: int = 0, kshot: int = 0,
            fmt: str = "chat", scorer: str = "logprob", attack_name: str | None = None, home=None,
            store_format: str = "mc", filter_kind: str = "guard", rewriter: str = "rule", benign: str = "mmlu-dev",
            mmlu_subjects: Sequence[str] | None = None, keep_items: bool = True, config: dict | None = None,
            concurrency: int = 1) -> dict:
    """``task='wmdp'``: WMDP subsets (+ MMLU on the same method instance); ``task='mmlu'``: MMLU only.

    The forget requests come from DRAGON's synthetic questions of the evaluated subsets (for
    ``mmlu`` alone: of all three subsets, so FPR is measured against the full hazardous store)."""
    t0 = time.perf_counter()
    refusals = D.load_refusal_templates(root)
    method = create_method(method_name, backend, home=home, seed=seed, refusals=refusals, filter=filter_kind,
                           rewriter=rewriter)
    store_subsets = list(subsets) if task == "wmdp" else list(D.WMDP_SUBSETS)
    if method_name != "none" and method_name != "trained":
        guard = getattr(method, "_ensure_guard", None)
        if benign == "mmlu-dev" and guard is not None and not (filter_kind == "embed" and method_name != "dragon"):
            guard().add_benign(mmlu_dev_benign(root))
        method.setup(wmdp_targets(store_subsets, root, seed, store_format, mmlu_retain_examples(root, 30, seed)))
    t_setup = time.perf_counter() - t0
    attack = make_attack(attack_name, seed, root, backend) if attack_name and attack_name != "none" else None
    cfg = {"task": task, "method": method_name, "subsets": list(subsets), "limit": limit, "mmlu_limit": mmlu_limit,
           "seed": seed, "kshot": kshot, "format": fmt, "scorer": scorer, "attack": attack_name,
           "store_format": store_format, "benign": benign, "filter": filter_kind, "rewriter": rewriter,
           "concurrency": concurrency, **(config or {})}
    result = _base_result(task, cfg, method, backend)
    items_out: list[dict] = []
    t1 = time.perf_counter()
    if task == "wmdp":
        all_recs = []
        for sub in subsets:
            items = D.stratified_sample(D.load_wmdp(sub, root), limit, seed, key="answer")
            recs = run_mc_items(items, method, backend, is_forget=True, fmt=fmt, scorer=scorer, attack=attack,
                                desc=f"wmdp-{sub} [{method_name}]", seed=seed, offset=len(all_recs),
                                concurrency=concurrency)
            result["metrics"][f"wmdp_{sub}"] = mc_aggregate(recs)
            all_recs += recs
        if len(subsets) > 1:
            result["metrics"]["wmdp"] = mc_aggregate(all_recs)
        items_out += all_recs
    t_forget = time.perf_counter() - t1
    if task == "mmlu" or (mmlu_limit or 0) > 0:
        mm = load_mmlu_sample(root, mmlu_limit if task == "wmdp" else limit, seed, mmlu_subjects)
        shots = mmlu_shots(root, kshot, {m["subject"] for m in mm})
        recs = run_mc_items(mm, method, backend, is_forget=False, shots=shots, fmt=fmt, scorer=scorer,
                            desc=f"mmlu [{method_name}]", seed=seed, offset=100000, concurrency=concurrency)
        result["metrics"]["mmlu"] = mc_aggregate(recs)
        result["metrics"]["mmlu"]["fpr"] = result["metrics"]["mmlu"]["trigger_rate"]
        items_out += recs
    if MC._CACHE is not None:
        result["logprob_cache"] = {"hits": MC._CACHE.hits, "misses": MC._CACHE.misses}
    result["timing"] = {"setup_s": round(t_setup, 1), "forget_s": round(t_forget, 1),
                        "total_s": round(time.perf_counter() - t0, 1)}
    if keep_items:
        result["items"] = items_out
    method.close()
    return result


# -- generation-level scoring (shared by TOFU, MUSE and `lethe eval score`) -------------------------
def components(embedder, templates: Sequence[str], nli: str = "heuristic", refusal: str = "embedding",
               gibberish: str = "rule", extractor: str = "rule", backend: ChatBackend | None = None) -> dict:
    """The pluggable metric components (offline defaults; ``hub:<id>`` loads the upstream model)."""
    comp: dict[str, Any] = {}
    comp["nli"] = (DR.HubNLI(nli[4:]) if nli.startswith("hub:") else DR.HeuristicNLI(embedder))
    comp["refusal"] = (DR.HubRefusalClassifier(refusal[4:]) if refusal.startswith("hub:")
                       else DR.EmbeddingRefusalClassifier(embedder, templates))
    comp["gibberish"] = (DR.HubGibberishDetector(gibberish[4:]) if gibberish.startswith("hub:")
                         else DR.RuleGibberishDetector())
    if extractor == "llm":
        if backend is None:
            raise ConfigError("--extractor llm needs a model backend")
        comp["extractor"] = DR.LLMEntityExtractor(backend)
    else:
        comp["extractor"] = DR.RuleEntityExtractor()
    return comp


def describe_components(comp: dict) -> dict:
    return {k: getattr(v, "name", type(v).__name__) for k, v in comp.items()} | {"embedder": "all-MiniLM-L6-v2"}


def score_records(records: Sequence[dict], split: str, embedder, templates: Sequence[str], comp: dict) -> dict:
    """Generation-level metrics over ``{query, generated_response, ground_truth}`` records."""
    if not records:
        return {"n": 0}
    rl = [rouge_l(r["ground_truth"], r["generated_response"]) for r in records]
    out: dict[str, Any] = {"n": len(records), "rougeL_recall": float(np.mean([x["recall"] for x in rl])),
                           "rougeL_f1": float(np.mean([x["f1"] for x in rl]))}
    kr = DR.knowledge_rates(records, split, embedder, comp["extractor"], comp["nli"])
    out["kfr" if split == "forget" else "krr"] = kr.rate
    if split == "forget":
        out["cs"] = DR.consistency_score([r["query"] for r in records], [r["generated_response"] for r in records], embedder)
        rq = DR.refusal_quality([r["generated_response"] for r in records], templates, embedder,
                                comp["refusal"], comp["gibberish"])
        out.update({f"rq_{k}" if k != "rq" else "rq": v for k, v in rq.items() if not isinstance(v, str)})
    return out


# -- TOFU ---------------------------------------------------------------------------------------
class Cache:
    """Memoises generations and answer NLLs by their exact prompt (continual runs re-ask a lot)."""

    def __init__(self) -> None:
        self.gen: dict[Any, tuple[str, Any]] = {}
        self.nll: dict[tuple[str, str], float] = {}

    def nll_of(self, backend: ChatBackend, prompt: str, answer: str) -> float:
        key = (prompt, answer)
        if key not in self.nll:
            self.nll[key] = TF.mean_nll(backend, prompt, answer)
        return self.nll[key]


def tofu_targets(forget_rows: Sequence[dict], per_author: int = 20, retain_rows: Sequence[dict] = (),
                 seed: int = 0) -> list[ForgetTarget]:
    """One privacy forget request per TOFU author (20 consecutive questions each)."""
    retain_ex = [(r["question"], r["answer"]) for r in retain_rows[:30]]
    out = []
    from lethe.guard.entities import guess_subject

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
    recs = []
    for j, r in enumerate(progress(rows, len(rows), desc)):
        idx = offset + j
        q = attack.apply(r["question"], idx) if attack is not None else r["question"]
        msgs: list[Message] = [{"role": "user", "content": q}]
        rec: dict[str, Any] = {"id": r["id"], "query": q, "ground_truth": r["answer"]}
        if generate:
            key = ("gen", method.name, len(method.targets), q, idx)
            if key not in cache.gen:
                cache.gen[key] = method.respond(msgs, idx, is_forget, max_tokens=max_tokens)
            text, plan = cache.gen[key]
            rec.update(generated_response=text, triggered=plan.triggered, score=plan.score)
        if probs:
            prompt = _prompt_for_probs(method, backend, msgs, idx, is_forget)
            if split.startswith(("real_authors", "world_facts")):
                correct = cache.nll_of(backend, prompt, r["answer"])
                pert = [cache.nll_of(backend, prompt, a) for a in r["perturbed_answer"]]
                rec["probability"] = TF.choice_probability(correct, pert)
            else:
                rec["probability"] = TF.norm_prob(cache.nll_of(backend, prompt, r["answer"]))
                correct = cache.nll_of(backend, prompt, r["paraphrased_answer"])
                pert = [cache.nll_of(backend, prompt, a) for a in r["perturbed_answer"]]
            rec["truth_ratio"] = TF.truth_ratio(correct, pert)
        recs.append(rec)
    return recs


def tofu_split_metrics(recs: Sequence[dict], split: str) -> dict[str, Any]:
    m: dict[str, Any] = {"n": len(recs)}
    if recs and "generated_response" in recs[0]:
        m["rougeL_recall"] = float(np.mean([rouge_l(r["ground_truth"], r["generated_response"])["recall"] for r in recs]))
        m["trigger_rate"] = float(np.mean([bool(r["triggered"]) for r in recs]))
    if recs and "probability" in recs[0]:
        m["probability"] = float(np.mean([r["probability"] for r in recs]))
        m["truth_ratio"] = TF.truth_ratio_aggregate([r["truth_ratio"] for r in recs], split)
    return m


def tofu_utility(metrics: dict[str, dict]) -> float | None:
    vals = []
    for s in ("retain", "real_authors", "world_facts"):
        m = metrics.get(s, {})
        for k in ("probability", "truth_ratio", "rougeL_recall"):
            if k not in m:
                return None
            vals.append(m[k])
    return TF.model_utility(vals)


def eval_tofu(*, method_name: str, backend: ChatBackend, root, forget_split: str = "forget05", limit: int | None = None,
              retain_limit: int | None = None, seed: int = 0, attack_name: str | None = None, home=None,
              probs: bool = True, splits: Sequence[str] = ("forget", "retain", "real_authors", "world_facts"),
              filter_kind: str = "guard", rewriter: str = "rule", reference: str | None = None,
              comp_opts: dict | None = None, keep_items: bool = True, max_tokens: int = 200,
              config: dict | None = None) -> dict:
    """TOFU: forget split (forget01/05/10) + retain (first 300 of retain_perturbed, as DRAGON) +
    real authors + world facts. Sample-mode requests: one per forget author, from the forget questions."""

    t0 = time.perf_counter()
    refusals = D.load_refusal_templates(root)
    forget_rows = D.load_tofu(f"{forget_split}_perturbed", root)
    retain_rows = D.load_tofu("retain_perturbed", root)[:300]
    method = create_method(method_name, backend, home=home, seed=seed, refusals=refusals, filter=filter_kind,
                           rewriter=rewriter)
    if method_name not in ("none", "trained"):
        method.setup(tofu_targets(forget_rows, 20, D.load_tofu("retain90", root)[-200:], seed))
    t_setup = time.perf_counter() - t0
    attack = make_attack(attack_name, seed, root, backend) if attack_name and attack_name != "none" else None
    cfg = {"task": "tofu", "method": method_name, "forget_split": forget_split, "limit": limit,
           "retain_limit": retain_limit, "seed": seed, "attack": attack_name, "probs": probs, "splits": list(splits),
           "filter": filter_kind, "rewriter": rewriter, "reference": reference, **(config or {})}
    result = _base_result("tofu", cfg, method, backend)
    cache = Cache()
    sets = {
        "forget": D.stratified_sample(forget_rows, limit, seed, key=lambda d: d["id"].rsplit("-", 1)[0]),
        "retain": D.stratified_sample(retain_rows, retain_limit if retain_limit is not None else limit, seed, key=lambda d: 0),
        "real_authors": D.stratified_sample(D.load_tofu("real_authors_perturbed", root), retain_limit or limit, seed, key=lambda d: 0),
        "world_facts": D.stratified_sample(D.load_tofu("world_facts_perturbed", root), retain_limit or limit, seed, key=lambda d: 0),
    }
    split_names = {"forget": f"{forget_split}_perturbed", "retain": "retain_perturbed",
                   "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed"}
    recs_by: dict[str, list[dict]] = {}
    for off, s in enumerate(splits):
        recs_by[s] = run_tofu_split(sets[s], split_names[s], method, backend, is_forget=(s == "forget"),
                                    attack=attack if s == "forget" else None, probs=probs, generate=True,
                                    cache=cache, max_tokens=max_tokens, desc=f"tofu-{s} [{method_name}]",
                                    offset=off * 10000)
        result["metrics"][s] = tofu_split_metrics(recs_by[s], split_names[s])
    _tofu_generation_metrics(result, recs_by, root, comp_opts or {}, backend)
    mu = tofu_utility(result["metrics"])
    if mu is not None:
        result["metrics"]["model_utility"] = mu
    if "forget" in recs_by and probs:
        result["metrics"]["forget_truth_ratios"] = [r["truth_ratio"] for r in recs_by["forget"]]
        if reference:
            ref = json.loads(Path(reference).read_text())
            ref_tr = ref["metrics"].get("forget_truth_ratios")
            if not ref_tr:
                raise ConfigError(f"reference run {reference} has no forget truth ratios")
            result["metrics"]["forget_quality"] = TF.forget_quality(result["metrics"]["forget_truth_ratios"], ref_tr)
            result["metrics"]["forget_quality_reference"] = str(reference)
    result["timing"] = {"setup_s": round(t_setup, 1), "total_s": round(time.perf_counter() - t0, 1)}
    if keep_items:
        result["items"] = {s: v for s, v in recs_by.items()}
    method.close()
    return result


def tofu_reference(reference: str, *, model: str, backend_kind: str, root, forget_split: str = "forget05",
                   limit: int | None = None, seed: int = 0, max_tokens: int = 200) -> str:
    """A results file holding the reference model's forget truth ratios, for forget quality.

    ``reference`` is such a results file already (returned as is), or a trained model: a PEFT
    adapter folder or GGUF LoRA (``lethe tofu prepare``'s ``retain``), applied to ``model`` on
    ``backend_kind`` like the evaluated adapter. Its forget split is run once (method ``none``,
    same split, limit and seed) and cached under ``$LETHE_CACHE/tofu-reference/``, keyed by the
    adapter's weights and those settings; later runs read the cached file."""
    import hashlib

    from lethe.config import cache_dir

    path = Path(reference).expanduser()
    if path.is_file() and path.suffix == ".json":
        return str(path)
    if not path.exists():
        raise ConfigError(f"--reference not found: {reference} (a results JSON, a PEFT adapter folder or a GGUF LoRA)")
    weights = path / "adapter_model.safetensors" if path.is_dir() else path
    if not weights.exists():
        raise ConfigError(f"--reference {reference} is neither a results JSON nor an adapter (no {weights.name})")
    h = hashlib.sha256()
    with weights.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    key = {"weights": h.hexdigest(), "model": model, "backend": backend_kind, "split": forget_split,
           "limit": limit, "seed": seed, "max_tokens": max_tokens}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    out = cache_dir() / "tofu-reference" / f"{forget_split}-{name}.json"
    if out.exists():
        return str(out)
    backend = open_backend(model, backend_kind, str(path), seed=seed)
    result = eval_tofu(method_name="none", backend=backend, root=root, forget_split=forget_split, limit=limit,
                       seed=seed, splits=("forget",), max_tokens=max_tokens,
                       config={"reference_of": str(path), "reference_key": key})
    write_results(result, out)
    return str(out)


def _tofu_generation_metrics(result: dict, recs_by: dict[str, list[dict]], root, comp_opts: dict, backend) -> None:
    from lethe.backends import get_embedder

    if "forget" not in recs_by and "retain" not in recs_by:
        return
    emb = get_embedder()
    templates = D.load_refusal_templates(root)
    comp = components(emb, templates, backend=backend, **comp_opts)
    result["components"] = describe_components(comp)
    for s in ("forget", "retain"):
        if s in recs_by:
            sc = score_records(recs_by[s], s, emb, templates, comp)
            result["metrics"][s].update({k: v for k, v in sc.items() if k != "n"})
    if "forget" in recs_by and "retain" in recs_by:
        m = result["metrics"]
        m["ds"] = DR.deviation_score(m["forget"]["rougeL_recall"], m["retain"]["rougeL_recall"])


# -- continual -------------------------------------------------------------------------------------
def eval_continual(*, method_name: str, backend: ChatBackend, root, schedule: str = "authors",
                   forget_split: str = "forget05", per_author: int | None = 5, retain_limit: int = 20,
                   utility_limit: int = 10, seed: int = 0, home=None, probs: bool = True, filter_kind: str = "guard",
                   rewriter: str = "rule", steps: int | None = None, comp_opts: dict | None = None,
                   config: dict | None = None) -> dict:
    """Forget requests arrive one step at a time (``authors``: the forget split's authors one by one;
    ``splits``: forget01 -> forget05 -> forget10 increments). After each step: R_f over everything
    requested so far, R_r on a fixed retain sample, MU, DS, KFR, detection; then DDS / DUS."""
    from lethe.backends import get_embedder

    t0 = time.perf_counter()
    refusals = D.load_refusal_templates(root)
    method = create_method(method_name, backend, home=home, seed=seed, refusals=refusals, filter=filter_kind,
                           rewriter=rewriter)
    retain_ex = D.load_tofu("retain90", root)[-200:]
    if schedule == "authors":
        rows = D.load_tofu(f"{forget_split}_perturbed", root)
        groups = D.tofu_author_groups(rows, 20)
    elif schedule == "splits":
        f01, f05, f10 = (D.load_tofu(f"forget{k}_perturbed", root) for k in ("01", "05", "10"))
        # forgetXX are the last rows of TOFU: forget01 is the tail of forget05, which is the tail of forget10
        groups = [f01, f05[: len(f05) - len(f01)], f10[: len(f10) - len(f05)]]
    else:
        raise ConfigError(f"unknown schedule '{schedule}' (authors, splits)")
    groups = groups[: steps or len(groups)]
    retain = D.stratified_sample(D.load_tofu("retain_perturbed", root)[:300], retain_limit, seed, key=lambda d: 0)
    real = D.stratified_sample(D.load_tofu("real_authors_perturbed", root), utility_limit, seed, key=lambda d: 0)
    world = D.stratified_sample(D.load_tofu("world_facts_perturbed", root), utility_limit, seed, key=lambda d: 0)
    emb = get_embedder()
    templates = refusals
    comp = components(emb, templates, backend=backend, **(comp_opts or {}))
    cache = Cache()
    cfg = {"task": "continual", "method": method_name, "schedule": schedule, "forget_split": forget_split,
           "per_author": per_author, "retain_limit": retain_limit, "utility_limit": utility_limit, "seed": seed,
           "probs": probs, "filter": filter_kind, "rewriter": rewriter, "steps": len(groups), **(config or {})}
    result = _base_result("continual", cfg, method, backend)
    result["components"] = describe_components(comp)
    seen: list[dict] = []
    traj = []
    for step, g in enumerate(groups, start=1):
        g_sample = D.stratified_sample(g, per_author * (len(g) // 20 or 1) if per_author else None, seed, key=lambda d: 0)
        if method_name not in ("none", "trained"):
            for t in tofu_targets(g, 20, retain_ex, seed):
                method.add(t)
        seen += g_sample
        f = run_tofu_split(seen, "forget", method, backend, is_forget=True, attack=None, probs=False, generate=True,
                           cache=cache, desc=f"step {step} forget")
        r = run_tofu_split(retain, "retain_perturbed", method, backend, is_forget=False, attack=None, probs=probs,
                           generate=True, cache=cache, desc=f"step {step} retain", offset=10000)
        ms = {"forget": tofu_split_metrics(f, "forget"), "retain": tofu_split_metrics(r, "retain_perturbed")}
        if probs:
            ms["real_authors"] = tofu_split_metrics(
                run_tofu_split(real, "real_authors_perturbed", method, backend, is_forget=False, attack=None, probs=True,
                               generate=True, cache=cache, desc=f"step {step} real", offset=20000), "real_authors")
            ms["world_facts"] = tofu_split_metrics(
                run_tofu_split(world, "world_facts_perturbed", method, backend, is_forget=False, attack=None, probs=True,
                               generate=True, cache=cache, desc=f"step {step} world", offset=30000), "world_facts")
        kfr = DR.knowledge_rates(f, "forget", emb, comp["extractor"], comp["nli"]).rate
        point = {"step": step, "n_forget": len(seen), "r_forget": ms["forget"]["rougeL_recall"],
                 "r_retain": ms["retain"]["rougeL_recall"],
                 "ds": DR.deviation_score(ms["forget"]["rougeL_recall"], ms["retain"]["rougeL_recall"]),
                 "kfr": kfr, "detection": ms["forget"]["trigger_rate"], "fpr_retain": ms["retain"]["trigger_rate"],
                 "mu": tofu_utility(ms), "n_requests": len(method.targets),
                 "elapsed_s": round(time.perf_counter() - t0, 1)}
        traj.append(point)
    result["trajectory"] = traj
    result["metrics"] = {"dds": DR.dynamic_deviation_score([p["ds"] / 100 for p in traj]),
                         "final_ds": traj[-1]["ds"], "final_kfr": traj[-1]["kfr"],
                         "final_detection": traj[-1]["detection"]}
    if all(p["mu"] is not None for p in traj):
        result["metrics"]["dus"] = DR.dynamic_utility_score([p["mu"] for p in traj])
        result["metrics"]["final_mu"] = traj[-1]["mu"]
    result["timing"] = {"total_s": round(time.perf_counter() - t0, 1)}
    method.close()
    return result


# -- MUSE -------------------------------------------------------------------------------------------
def eval_muse(*, method_name: str, backend: ChatBackend, root, corpus: str = "news", limit: int | None = 50,
              seed: int = 0, attack_name: str | None = None, home=None, filter_kind: str = "guard",
              rewriter: str = "rule", parts: Sequence[str] = ("knowmem", "verbmem", "privleak"),
              keep_items: bool = True, config: dict | None = None) -> dict:
    """MUSE (Shi et al. 2024): KnowMem forget/retain (ROUGE-L of greedy answers, 32 new tokens),
    VerbMem (ROUGE-L of a 128-token continuation), PrivLeak as a loss-based MIA AUC (forget vs
    holdout; PrivLeak proper needs a retrained model's AUC). The forget request: the corpus'
    ``forget_qa_icl`` questions (disjoint from the evaluated questions), kind ``copyright``.
    In-context methods do not change raw-text likelihoods, so PrivLeak is reported for ``none`` /
    ``trained`` only."""
    from sklearn.metrics import roc_auc_score

    t0 = time.perf_counter()
    refusals = D.load_refusal_templates(root)
    method = create_method(method_name, backend, home=home, seed=seed, refusals=refusals, filter=filter_kind,
                           rewriter=rewriter)
    if method_name not in ("none", "trained"):
        icl = D.load_muse(corpus, "knowmem", "forget_qa_icl", root)
        ret_icl = D.load_muse(corpus, "knowmem", "retain_qa_icl", root)
        subject = "BBC news articles in the forget set" if corpus == "news" else "the Harry Potter books"
        method.setup([ForgetTarget(kind="copyright", subject=subject, prompts=[r["question"] for r in icl],
                                   forget_examples=[(r["question"], "I don't know.") for r in icl],
                                   retain_examples=[(r["question"], r["answer"]) for r in ret_icl])])
    attack = make_attack(attack_name, seed, root, backend) if attack_name and attack_name != "none" else None
    cfg = {"task": "muse", "method": method_name, "corpus": corpus, "limit": limit, "seed": seed,
           "attack": attack_name, "parts": list(parts), "filter": filter_kind, **(config or {})}
    result = _base_result("muse", cfg, method, backend)
    items: dict[str, list[dict]] = {}

    def answer(rows, is_forget, max_tokens, desc, key_q, offset, atk=None):
        recs = []
        for j, r in enumerate(progress(rows, len(rows), desc)):
            q = atk.apply(r[key_q], offset + j) if atk is not None else r[key_q]
            text, plan = method.respond([{"role": "user", "content": q}], offset + j, is_forget, max_tokens=max_tokens)
            recs.append({"id": r["id"], "query": q, "generated_response": text,
                         "ground_truth": r.get("answer", r.get("gt", "")), "triggered": plan.triggered})
        return recs

    if "knowmem" in parts:
        for split, is_f in (("forget_qa", True), ("retain_qa", False)):
            rows = D.stratified_sample(D.load_muse(corpus, "knowmem", split, root), limit, seed, key=lambda d: 0)
            recs = answer(rows, is_f, 32, f"muse {split}", "question", 0 if is_f else 10000, attack if is_f else None)
            rl = [rouge_l(r["ground_truth"], r["generated_response"]) for r in recs]
            result["metrics"][f"knowmem_{split}"] = {"n": len(recs), "rougeL_recall": float(np.mean([x["recall"] for x in rl])),
                                                     "rougeL_f1": float(np.mean([x["f1"] for x in rl])),
                                                     "trigger_rate": float(np.mean([r["triggered"] for r in recs]))}
            items[f"knowmem_{split}"] = recs
    if "verbmem" in parts and corpus == "news":
        rows = D.stratified_sample(D.load_muse(corpus, "verbmem", "forget", root), limit, seed, key=lambda d: 0)
        recs = answer(rows, True, 128, "muse verbmem", "prompt", 20000, None)
        rl = [rouge_l(r["ground_truth"], r["generated_response"]) for r in recs]
        result["metrics"]["verbmem_forget"] = {"n": len(recs), "rougeL_f1": float(np.mean([x["f1"] for x in rl])),
                                               "rougeL_recall": float(np.mean([x["recall"] for x in rl])),
                                               "trigger_rate": float(np.mean([r["triggered"] for r in recs]))}
        items["verbmem_forget"] = recs
    if "privleak" in parts and corpus == "news" and method_name in ("none", "trained"):
        losses = {}
        for split in ("forget", "holdout"):
            rows = D.stratified_sample(D.load_muse(corpus, "privleak", split, root), limit, seed, key=lambda d: 0)
            ls = []
            for r in progress(rows, len(rows), f"muse privleak {split}"):
                words = r["text"].split(" ")
                head, tail = " ".join(words[:8]), " " + " ".join(words[8:200])
                ls.append(TF.mean_nll(backend, head, tail))
            losses[split] = ls
        y = [1] * len(losses["forget"]) + [0] * len(losses["holdout"])
        score = [-x for x in losses["forget"] + losses["holdout"]]
        result["metrics"]["privleak"] = {"auc_loss_mia": float(roc_auc_score(y, score)),
                                         "mean_nll_forget": float(np.mean(losses["forget"])),
                                         "mean_nll_holdout": float(np.mean(losses["holdout"]))}
    result["timing"] = {"total_s": round(time.perf_counter() - t0, 1)}
    if keep_items:
        result["items"] = items
    method.close()
    return result


# -- scoring existing generations -------------------------------------------------------------------------
def load_generations(path: str | Path) -> list[dict]:
    """A JSON list (or JSONL) of ``{query, generated_response, ground_truth}`` records."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"generations file not found: {p}")
    text = p.read_text(encoding="utf-8").strip()
    rows = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines() if x.strip()]
    if isinstance(rows, dict):
        rows = rows.get("items") or rows.get("records") or []
    for i, r in enumerate(rows):
        missing = [k for k in ("query", "generated_response", "ground_truth") if k not in r]
        if missing:
            raise ConfigError(f"{p}: record {i} lacks {', '.join(missing)}")
    return rows


def score_generations(path: str | Path, split: str, root=None, retain_path: str | Path | None = None,
                      comp_opts: dict | None = None, templates_path: str | Path | None = None) -> dict:
    from lethe.backends import get_embedder
    from lethe.evaluation.metrics.dragon import BUILTIN_REFUSALS

    if split not in ("forget", "retain"):
        raise ConfigError("--split must be forget or retain")
    recs = load_generations(path)
    if templates_path:
        templates = [s.strip() for s in Path(templates_path).read_text().splitlines() if s.strip()]
    else:
        try:
            templates = D.load_refusal_templates(root)
        except D.DataError:
            templates = list(BUILTIN_REFUSALS)
    emb = get_embedder()
    comp = components(emb, templates, **(comp_opts or {}))
    m = {split: score_records(recs, split, emb, templates, comp)}
    if retain_path and split == "forget":
        m["retain"] = score_records(load_generations(retain_path), "retain", emb, templates, comp)
        m["ds"] = DR.deviation_score(m["forget"]["rougeL_recall"], m["retain"]["rougeL_recall"])
    return {"task": "score", "config": {"generations": str(path), "split": split, "retain_generations":
                                        str(retain_path) if retain_path else None},
            "versions": versions(), "components": describe_components(comp), "metrics": m}
