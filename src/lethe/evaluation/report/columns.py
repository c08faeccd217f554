"""Report columns, result flattening and run types: what a results file is and how its metrics are named."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SKIP = {"per_subject", "forget_truth_ratios", "forget_quality_reference"}


def _flatten(metrics: dict, prefix: str = "") -> dict[str, Any]:
    """Numeric leaves of a metrics tree under dotted names (``forget.rougeL_recall``)."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if k in _SKIP:
            continue
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


# -- columns ------------------------------------------------------------------------------------
UP, DOWN, CHANCE, HALF = "↑", "↓", "→ 25", "→ 0.5"
_BETTER_TEXT = {UP: "higher is better", DOWN: "lower is better", CHANCE: "closer to 25 % (chance) is better",
                HALF: "closer to 0.5 is better"}


@dataclass(frozen=True)
class Col:
    """A table column: where its value lives in the flattened metrics, its name, its better direction."""

    key: str
    name: str
    better: str | None = None
    pct: bool = False  # a 0-1 rate shown in percent

    def fmt(self, v: float | None) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        if self.pct:
            return f"{100 * v:.1f} %"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"

    def rank_key(self, v: float) -> float:
        """Smaller is better (for marking the best value of a column)."""
        return {UP: -v, DOWN: v, CHANCE: abs(v - 25.0), HALF: abs(v - 0.5)}.get(self.better or "", 0.0)


TOFU_COLS = [
    Col("forget.rougeL_recall", "forget answers: ROUGE-L recall", DOWN),
    Col("forget.trigger_rate", "forget queries caught", UP, pct=True),
    Col("retain.rougeL_recall", "retain answers: ROUGE-L recall", UP),
    Col("retain.trigger_rate", "retain queries caught (false positives)", DOWN, pct=True),
    Col("ds", "deviation score (DS)", DOWN),
    Col("model_utility", "model utility", UP),
    Col("forget_quality", "forget quality (KS p-value)", UP),
    Col("forget.kfr", "knowledge forgetting rate (KFR)", UP, pct=True),
    Col("retain.krr", "knowledge retention rate (KRR)", UP, pct=True),
    Col("forget.rq", "refusal quality (RQ, 0–2.2)", UP),
]
MUSE_COLS = [
    Col("knowmem_forget_qa.rougeL_f1", "KnowMem forget: ROUGE-L F1", DOWN),
    Col("knowmem_retain_qa.rougeL_f1", "KnowMem retain: ROUGE-L F1", UP),
    Col("verbmem_forget.rougeL_f1", "VerbMem forget: ROUGE-L F1", DOWN),
    Col("knowmem_forget_qa.trigger_rate", "forget questions caught", UP, pct=True),
    Col("knowmem_retain_qa.trigger_rate", "retain questions caught (false positives)", DOWN, pct=True),
    Col("privleak.auc_loss_mia", "PrivLeak: loss-MIA AUC", HALF),
]
CONTINUAL_COLS = [
    Col("dds", "dynamic deviation score (DDS)", DOWN),
    Col("dus", "dynamic utility score (DUS)", UP),
    Col("final_ds", "final deviation score", DOWN),
    Col("final_mu", "final model utility", UP),
    Col("final_kfr", "final KFR", UP, pct=True),
    Col("final_detection", "final forget detection rate", UP, pct=True),
]
SCORE_COLS = [
    Col("forget.rougeL_recall", "forget answers: ROUGE-L recall", DOWN),
    Col("forget.kfr", "knowledge forgetting rate (KFR)", UP, pct=True),
    Col("forget.rq", "refusal quality (RQ, 0–2.2)", UP),
    Col("forget.cs", "consistency with the query (CS)", None),
    Col("retain.rougeL_recall", "retain answers: ROUGE-L recall", UP),
    Col("retain.krr", "knowledge retention rate (KRR)", UP, pct=True),
    Col("ds", "deviation score (DS)", DOWN),
]


def _mc_cols(runs: Sequence[dict]) -> list[Col]:
    subs = sorted({k.split(".")[0] for r in runs for k in _flatten(r.get("metrics", {}))
                   if k.startswith("wmdp_") and k.endswith(".prob_acc")})
    cols = [Col(f"{s}.prob_acc", f"WMDP-{s[5:]} accuracy (%)", CHANCE) for s in subs]
    if any("wmdp" in r.get("metrics", {}) for r in runs):
        cols.append(Col("wmdp.prob_acc", "WMDP accuracy, all subsets (%)", CHANCE))
    cols.append(Col("mmlu.prob_acc", "MMLU accuracy (%)", UP))
    cols += [Col(f"{s}.trigger_rate", f"WMDP-{s[5:]} questions caught", UP, pct=True) for s in subs]
    cols.append(Col("mmlu.fpr", "MMLU questions caught (false positives)", DOWN, pct=True))
    return cols


# -- run types ---------------------------------------------------------------------------------------
def run_type(r: dict) -> str:
    """``tofu``, ``mc`` (WMDP/MMLU), ``muse``, ``continual``, ``score``, ``detection_*`` or ``other``."""
    task = r.get("task")
    if task in ("wmdp", "mmlu"):
        return "mc"
    if task in ("tofu", "muse", "continual", "score"):
        return task
    bench = r.get("benchmark")
    if bench in ("detection_tofu", "detection_attacks"):
        return bench
    if "rates_at_tau" in r and "tpr_at_mmlu_fpr" in r:
        return "detection_wmdp"
    return "other"


_TITLES = {"tofu": "TOFU", "mc": "WMDP / MMLU", "muse": "MUSE", "continual": "Continual unlearning",
           "score": "Scored generations", "detection_tofu": "Detection on TOFU",
           "detection_attacks": "Detection under attacks", "detection_wmdp": "Detection on WMDP / MMLU",
           "other": "Other results"}


def _label(r: dict) -> str:
    if "_label" in r:
        return r["_label"]
    c = r.get("config", {})
    kind = run_type(r)
    if kind == "score":
        src = Path(str(c.get("generations") or r.get("_file", "generations"))).name
        return f"scored {src} ({c.get('split', 'forget')})"
    if kind.startswith("detection") or kind == "other":
        return Path(r.get("_file", "results")).stem
    bits = [r.get("task", "?"), c.get("method", "?")]
    if c.get("attack") and c["attack"] != "none":
        bits.append(f"attack={c['attack']}")
    if c.get("subsets"):
        bits.append("+".join(c["subsets"]))
    return " ".join(bits)


def _disambiguate(runs: list[dict]) -> None:
    """Runs whose label collides are told apart by their file name."""
    labels = [_label(r) for r in runs]
    for r, lab in zip(runs, labels, strict=True):
        r["_label"] = f"{lab} ({Path(r['_file']).stem})" if labels.count(lab) > 1 else lab


def _attack(r: dict) -> str:
    a = r.get("config", {}).get("attack")
    return a if a and a != "none" else "none"


def _method(r: dict) -> str:
    return str(r.get("config", {}).get("method") or "?")


