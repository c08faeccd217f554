"""MUSE (Shi et al. 2024, arXiv 2407.06460): KnowMem, VerbMem and a loss-based PrivLeak.

KnowMem forget / retain: ROUGE-L of greedy answers (32 new tokens); VerbMem: ROUGE-L of a 128-token
continuation (news); PrivLeak: a loss-based membership-inference AUC, forget vs holdout (PrivLeak
proper needs a retrained model's AUC). The forget request: the corpus' ``forget_qa_icl`` questions
(disjoint from the evaluated questions), kind ``copyright``. Methods that act on the context do not
change raw-text likelihoods, so PrivLeak is reported only for methods that do not
(``Method.in_context`` false: the model as is, a trained adapter).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lethe.evaluation import data as D
from lethe.evaluation.loop import Run
from lethe.evaluation.methods import ForgetTarget
from lethe.evaluation.metrics import tofu as likelihood
from lethe.evaluation.metrics.rouge import rouge_l
from lethe.evaluation.tasks.base import TASKS, Task

PARTS = ("knowmem", "verbmem", "privleak")


def _rouge_summary(recs: Sequence[dict], *keys: str) -> dict[str, Any]:
    rl = [rouge_l(r["ground_truth"], r["generated_response"]) for r in recs]
    out: dict[str, Any] = {"n": len(recs)}
    for k in keys:
        out[f"rougeL_{k}"] = float(np.mean([x[k] for x in rl]))
    out["trigger_rate"] = float(np.mean([r["triggered"] for r in recs]))
    return out


@TASKS.register("muse")
class MuseTask(Task):
    name = "muse"

    def __init__(self, *, corpus: str = "news", limit: int | None = 50, parts: Sequence[str] = PARTS) -> None:
        self.corpus, self.limit, self.parts = corpus, limit, list(parts)

    def load(self, root, seed: int) -> None:
        self.root, self.seed = root, seed

    def _rows(self, part: str, split: str) -> list[dict]:
        rows = D.load_muse(self.corpus, part, split, self.root)
        return D.stratified_sample(rows, self.limit, self.seed, key=lambda d: 0)

    def targets(self) -> list[ForgetTarget]:
        icl = D.load_muse(self.corpus, "knowmem", "forget_qa_icl", self.root)
        ret_icl = D.load_muse(self.corpus, "knowmem", "retain_qa_icl", self.root)
        subject = "BBC news articles in the forget set" if self.corpus == "news" else "the Harry Potter books"
        return [ForgetTarget(kind="copyright", subject=subject, prompts=[r["question"] for r in icl],
                             forget_examples=[(r["question"], "I don't know.") for r in icl],
                             retain_examples=[(r["question"], r["answer"]) for r in ret_icl])]

    def config(self) -> dict[str, Any]:
        return {"corpus": self.corpus, "limit": self.limit, "parts": self.parts}

    def run(self, run: Run) -> None:
        method = run.method
        items: dict[str, list[dict]] = {}

        def answer(rows, is_forget, max_tokens, desc, key_q, offset, atk=None):
            recs = []
            for j, r in enumerate(run.progress(rows, len(rows), desc)):
                q = atk.apply(r[key_q], offset + j) if atk is not None else r[key_q]
                text, plan = method.respond([{"role": "user", "content": q}], offset + j, is_forget,
                                            max_tokens=max_tokens)
                recs.append({"id": r["id"], "query": q, "generated_response": text,
                             "ground_truth": r.get("answer", r.get("gt", "")), "triggered": plan.triggered})
            return recs

        if "knowmem" in self.parts:
            for split, is_f in (("forget_qa", True), ("retain_qa", False)):
                recs = answer(self._rows("knowmem", split), is_f, 32, f"muse {split}", "question",
                              0 if is_f else 10000, run.attack if is_f else None)
                run.metrics[f"knowmem_{split}"] = _rouge_summary(recs, "recall", "f1")
                items[f"knowmem_{split}"] = recs
        if "verbmem" in self.parts and self.corpus == "news":
            recs = answer(self._rows("verbmem", "forget"), True, 128, "muse verbmem", "prompt", 20000, None)
            run.metrics["verbmem_forget"] = _rouge_summary(recs, "f1", "recall")
            items["verbmem_forget"] = recs
        if "privleak" in self.parts and self.corpus == "news" and not method.in_context:
            run.metrics["privleak"] = self._privleak(run)
        run.items = items

    def _privleak(self, run: Run) -> dict[str, float]:
        from sklearn.metrics import roc_auc_score

        losses = {}
        for split in ("forget", "holdout"):
            rows = self._rows("privleak", split)
            ls = []
            for r in run.progress(rows, len(rows), f"muse privleak {split}"):
                words = r["text"].split(" ")
                head, tail = " ".join(words[:8]), " " + " ".join(words[8:200])
                ls.append(likelihood.mean_nll(run.backend, head, tail))
            losses[split] = ls
        y = [1] * len(losses["forget"]) + [0] * len(losses["holdout"])
        score = [-x for x in losses["forget"] + losses["holdout"]]
        return {"auc_loss_mia": float(roc_auc_score(y, score)), "mean_nll_forget": float(np.mean(losses["forget"])),
                "mean_nll_holdout": float(np.mean(losses["holdout"]))}
