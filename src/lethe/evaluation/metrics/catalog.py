"""The metrics of the TOFU, DRAGON, TRU and multiple-choice protocols, registered in ``METRICS``.

Definitions live beside their functions (``tofu``, ``dragon``, ``rouge``, ``mc``); each class here
names one, with its direction and aggregation (see :mod:`lethe.evaluation.metrics.base`).
"""

from __future__ import annotations

from typing import Any

from lethe.evaluation.metrics import dragon, mc, rouge, tofu
from lethe.evaluation.metrics.base import METRICS, Metric


def _metric(name: str, fn: Any, direction: str, aggregation: str, description: str) -> None:
    def call(self: Metric, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    cls = type("".join(p.title() for p in name.split("_")) + "Metric", (Metric,), {
        "name": name, "direction": direction, "aggregation": aggregation, "description": description,
        "__call__": call, "__doc__": description, "__module__": __name__,
    })
    METRICS.register(name)(cls)


_metric("rougeL_recall", rouge.rouge_l_recall, "none", "item",
        "ROUGE-L recall of a generation against the ground truth (lower on forget sets, higher on retain)")
_metric("probability", tofu.norm_prob, "none", "item", "length-normalised probability of the answer (TOFU)")
_metric("truth_ratio", tofu.truth_ratio, "none", "item", "perturbed / paraphrased answer likelihood ratio (TOFU)")
_metric("truth_ratio_aggregate", tofu.truth_ratio_aggregate, "none", "set", "TOFU's per-split truth-ratio summary")
_metric("forget_quality", tofu.forget_quality, "higher", "set",
        "KS-test p-value of forget truth ratios against the retain model's (TOFU)")
_metric("model_utility", tofu.model_utility, "higher", "set",
        "harmonic mean of retain / real-author / world-fact probability, ROUGE and truth ratio (TOFU)")
_metric("ds", dragon.deviation_score, "lower", "set", "deviation score: distance from (forget 0, retain 1) (DRAGON)")
_metric("dds", dragon.dynamic_deviation_score, "lower", "sequence", "dynamic deviation score over a sequence (DRAGON)")
_metric("dus", dragon.dynamic_utility_score, "higher", "sequence", "dynamic utility score over a sequence (DRAGON)")
_metric("kfr_krr", dragon.knowledge_rates, "higher", "set", "knowledge forgetting / retention rates (DRAGON)")
_metric("kfr", dragon.knowledge_rates, "higher", "set", "knowledge forgetting rate (DRAGON)")
_metric("krr", dragon.knowledge_rates, "higher", "set", "knowledge retention rate (DRAGON)")
_metric("cs", dragon.consistency_score, "higher", "set", "consistency of answers to paraphrased queries (DRAGON)")
_metric("rq", dragon.refusal_quality, "higher", "set", "refusal quality (DRAGON)")
_metric("prob_acc", mc.prob_acc, "none", "set",
        "multiple-choice accuracy in percent (towards 25 on a forget set, unchanged on retain)")
