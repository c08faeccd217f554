"""Metric functions and the METRICS registry (name -> function)."""

from __future__ import annotations

from lethe.evaluation.metrics import dragon, mc, rouge, tofu
from lethe.registry import Registry

METRICS: Registry = Registry("metric")
for _name, _fn in {
    "rougeL_recall": rouge.rouge_l_recall,
    "probability": tofu.norm_prob,
    "truth_ratio": tofu.truth_ratio,
    "truth_ratio_aggregate": tofu.truth_ratio_aggregate,
    "forget_quality": tofu.forget_quality,
    "model_utility": tofu.model_utility,
    "ds": dragon.deviation_score,
    "dds": dragon.dynamic_deviation_score,
    "dus": dragon.dynamic_utility_score,
    "kfr_krr": dragon.knowledge_rates,
    "cs": dragon.consistency_score,
    "rq": dragon.refusal_quality,
    "prob_acc": mc.prob_acc,
}.items():
    METRICS.register(_name)(_fn)  # type: ignore[arg-type]

__all__ = ["METRICS", "dragon", "mc", "rouge", "tofu"]
