"""``lethe report results*.json --out report.html``: one self-contained HTML page per set of runs.

Runs are grouped by result type (TOFU, WMDP/MMLU, MUSE, continual, scored generations, and the
detection benchmarks of ``benchmarks/``); each group gets a table with human column names whose
better direction is marked (↑ higher, ↓ lower, → 25 % or → 0.5 closer to chance) and the plots that
say more than the table: forget vs utility across runs, per-attack bars, detector ROC, continual
trajectories. Every metric the files hold stays available in a collapsed table, and the raw
configuration of each run in a collapsed JSON block. Plots are matplotlib PNGs embedded as base64,
so the page needs no network and no other file.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lethe.errors import ConfigError

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


# -- figures -----------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _img(fig, alt: str, caption: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return (f"<figure><img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _scatter(points: list[tuple[str, float, float]], xlabel: str, ylabel: str, title: str,
             chance_x: float | None = None, top: float = 1.0) -> Any:
    """One point per run on fixed axes [0, top]: the metrics are bounded, and autoscaling would blow
    a 0.01 difference up to the full height of the plot."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for i, (lab, x, y) in enumerate(points):
        ax.scatter([x], [y], s=40, color=f"C{i % 10}", label=lab, zorder=3)
    if chance_x is not None:
        ax.axvline(chance_x, ls="--", c="grey", lw=0.8)
    ax.set_xlim(0.0, top * 1.03)
    ax.set_ylim(0.0, top * 1.03)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(points) <= 12:
        ax.legend(fontsize=7, loc="best")
    return fig


def _bars(groups: list[str], series: dict[str, list[float | None]], ylabel: str, title: str,
          ylim: tuple[float, float] | None = None, hline: float | None = None) -> Any:
    """Grouped bars: one group per entry of ``groups``, one bar per series."""
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) * max(1, len(series)) ** 0.5 + 2), 4.2))
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(series.items()):
        ys = [float("nan") if v is None else v for v in vals]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, ys, width, label=name, color=f"C{i % 10}")
    if hline is not None:
        ax.axhline(hline, ls="--", c="grey", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=25 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center",
                       fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if ylim:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=7)
    return fig


def _roc_data(r: dict) -> tuple[list[int], list[float]] | None:
    """Detector scores of a run's items: forget items positive, retain / MMLU items negative."""
    items = r.get("items")
    if not items:
        return None
    y, s = [], []
    if isinstance(items, list):  # MC runs: WMDP items are positives, MMLU negatives
        for it in items:
            if it.get("score") is not None:
                y.append(0 if str(it["id"]).startswith("mmlu") else 1)
                s.append(float(it["score"]))
    else:
        for split, recs in items.items():
            for it in recs:
                if it.get("score") is not None:
                    y.append(1 if "forget" in split else 0)
                    s.append(float(it["score"]))
    return (y, s) if len(set(y)) == 2 else None


def _roc_figure(runs: list[dict]) -> str | None:
    # runs without a detector (method none) carry constant scores: no curve to draw
    rocs = [(r, d) for r in runs if (d := _roc_data(r)) and len(set(d[1])) > 1]
    if not rocs:
        return None
    from sklearn.metrics import auc, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for r, (y, s) in rocs:
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{_label(r)} (AUC {auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set_xlabel("false positive rate (retain / MMLU items caught)")
    ax.set_ylabel("detection rate (forget items caught)")
    ax.set_title("detector ROC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _img(fig, "detector ROC curves", "Detector ROC from the per-item scores: the closer to the top "
                "left corner, the better the detector separates forget items from the rest.")


def _attack_bars(runs: list[dict], key: str, ylabel: str, title: str, caption: str, **kw: Any) -> str | None:
    """Per-attack bars of one metric, one bar per method; drawn when runs differ by attack."""
    attacks = sorted({_attack(r) for r in runs}, key=lambda a: (a != "none", a))
    if len(attacks) < 2:
        return None
    # methods measured under at least two attacks (a method run only once has nothing to compare)
    methods = sorted(m for m in {_method(r) for r in runs} if len({_attack(r) for r in runs if _method(r) == m}) > 1)
    if not methods:
        return None
    series: dict[str, list[float | None]] = {m: [] for m in methods}
    for m in methods:
        for a in attacks:
            vals = [_flatten(r.get("metrics", {})).get(key) for r in runs if _method(r) == m and _attack(r) == a]
            vals = [v for v in vals if v is not None]
            series[m].append(sum(vals) / len(vals) if vals else None)
    return _img(_bars(attacks, series, ylabel, title, **kw), title, caption)


# -- tables ------------------------------------------------------------------------------------------
def _table(runs: list[dict], cols: list[Col], extra: Callable[[dict], list[tuple[str, str]]] | None = None) -> str:
    """Runs as rows, the columns any run has as columns, the best value per column in bold."""
    flat = [_flatten(r.get("metrics", {})) for r in runs]
    cols = [c for c in cols if any(c.key in f for f in flat)]
    lead = [("run", lambda r: _label(r))]
    models = {str(r.get("backend", {}).get("model") or "") for r in runs}
    if len(models) > 1:  # one model for all runs is said once, above the table
        lead.append(("model", lambda r: str(r.get("backend", {}).get("model") or "")))
    head = "".join(f"<th class='l'>{h}</th>" for h, _ in lead)
    extras = extra(runs[0]) if extra else []
    head += "".join(f"<th class='l'>{html.escape(h)}</th>" for h, _ in extras)
    for c in cols:
        tip = _BETTER_TEXT.get(c.better or "", "no better direction")
        arrow = f" <span class='dir'>{c.better}</span>" if c.better else ""
        head += f"<th title='{tip}'>{html.escape(c.name)}{arrow}</th>"
    best: dict[str, float] = {}
    for c in cols:
        vals = [f[c.key] for f in flat if c.key in f and not math.isnan(f[c.key])]
        if c.better and len(set(vals)) > 1:  # a column where every run ties marks nothing
            best[c.key] = min(vals, key=c.rank_key)
    rows = []
    for r, f in zip(runs, flat, strict=True):
        cells = "".join(f"<td class='l'>{html.escape(fn(r))}</td>" for _, fn in lead)
        cells += "".join(f"<td class='l'>{html.escape(v)}</td>" for _, v in (extra(r) if extra else []))
        for c in cols:
            v = f.get(c.key)
            cls = " class='best'" if v is not None and best.get(c.key) == v else ""
            cells += f"<td{cls}>{c.fmt(v)}</td>"
        rows.append(f"<tr>{cells}</tr>")
    above = f"<p class='legend'>model: {html.escape(models.pop())}</p>" if len(models) == 1 and "" not in models else ""
    return f"{above}<div class='scroll'><table><tr>{head}</tr>{''.join(rows)}</table></div>"


def _all_metrics(runs: list[dict]) -> str:
    """Every numeric metric of the runs, raw names, collapsed."""
    flat = [_flatten(r.get("metrics", {})) for r in runs]
    keys = sorted({k for f in flat for k in f})
    if not keys:
        return ""
    head = "<tr><th class='l'>metric</th>" + "".join(f"<th>{html.escape(_label(r))}</th>" for r in runs) + "</tr>"
    body = "".join("<tr><td class='l'>" + html.escape(k) + "</td>"
                   + "".join(f"<td>{f[k]:.4g}</td>" if k in f else "<td></td>" for f in flat) + "</tr>"
                   for k in keys)
    return (f"<details><summary>all metrics ({len(keys)})</summary><div class='scroll'><table>{head}{body}"
            "</table></div></details>")


def _run_extra(r: dict) -> list[tuple[str, str]]:
    c = r.get("config", {})
    return [("method", _method(r)), ("attack", _attack(r))] + (
        [("split", str(c["forget_split"]))] if c.get("forget_split") else [])


# -- sections ----------------------------------------------------------------------------------------
def _tofu(runs: list[dict]) -> list[str]:
    out = [_table(runs, TOFU_COLS, _run_extra)]
    pts_mu, pts_rr = [], []
    for r in runs:
        f = _flatten(r.get("metrics", {}))
        if "forget.rougeL_recall" in f and "model_utility" in f:
            pts_mu.append((_label(r), f["forget.rougeL_recall"], f["model_utility"]))
        if "forget.rougeL_recall" in f and "retain.rougeL_recall" in f:
            pts_rr.append((_label(r), f["forget.rougeL_recall"], f["retain.rougeL_recall"]))
    if pts_mu:
        out.append(_img(_scatter(pts_mu, "forget answers: ROUGE-L recall ↓", "model utility ↑",
                                 "TOFU: forget vs utility"), "TOFU forget vs model utility",
                        "Each run is a point; top left is best (little of the forget answers reproduced, "
                        "utility kept)."))
    elif pts_rr:
        out.append(_img(_scatter(pts_rr, "forget answers: ROUGE-L recall ↓", "retain answers: ROUGE-L recall ↑",
                                 "TOFU: forget vs retain"), "TOFU forget vs retain ROUGE-L",
                        "Each run is a point; top left is best (forget answers not reproduced, retain answers "
                        "kept). Model utility needs --probs."))
    splits = ["forget", "retain", "real_authors", "world_facts"]
    series = {}
    for r in runs:
        f = _flatten(r.get("metrics", {}))
        vals = [f.get(f"{s}.rougeL_recall") for s in splits]
        if any(v is not None for v in vals):
            series[_label(r)] = vals
    if series:
        out.append(_img(_bars(splits, series, "ROUGE-L recall", "TOFU: answers' ROUGE-L recall per split",
                              ylim=(0, 1.05)),
                        "TOFU ROUGE-L per split", "Lower is better on forget, higher on the other splits."))
    bar = _attack_bars(runs, "forget.rougeL_recall", "forget ROUGE-L recall ↓", "TOFU: forget ROUGE-L per attack",
                       "Per attack, one bar per method: how much of the forget answers each attack recovers "
                       "(lower is better).", ylim=(0, 1.05))
    if bar:
        out.append(bar)
    bar = _attack_bars(runs, "forget.trigger_rate", "forget queries caught ↑", "TOFU: detection rate per attack",
                       "Per attack, one bar per method: the share of forget queries the detector caught.",
                       ylim=(0, 1.05))
    if bar:
        out.append(bar)
    return out


def _mc(runs: list[dict]) -> list[str]:
    out = [_table(runs, _mc_cols(runs), _run_extra)]
    pts = []
    for r in runs:
        m = r.get("metrics", {})
        wm = m.get("wmdp") or next((v for k, v in sorted(m.items()) if k.startswith("wmdp_")), None)
        if wm and "prob_acc" in wm and "prob_acc" in m.get("mmlu", {}):
            pts.append((_label(r), wm["prob_acc"], m["mmlu"]["prob_acc"]))
    if pts:
        out.append(_img(_scatter(pts, "WMDP accuracy (%) → 25", "MMLU accuracy (%) ↑", "WMDP vs MMLU",
                                 chance_x=25.0, top=100.0), "WMDP vs MMLU accuracy",
                        "Each run is a point; best is on the dashed chance line (25 %) and high up "
                        "(MMLU kept)."))
    key = "wmdp.prob_acc" if any("wmdp" in r.get("metrics", {}) for r in runs) else next(
        (c.key for c in _mc_cols(runs) if c.key.startswith("wmdp_")), None)
    if key:
        bar = _attack_bars(runs, key, "WMDP accuracy (%) → 25", "WMDP accuracy per attack",
                           "Per attack, one bar per method; the dashed line is chance (25 %).", ylim=(0, 100),
                           hline=25.0)
        if bar:
            out.append(bar)
    return out


def _muse(runs: list[dict]) -> list[str]:
    out = [_table(runs, MUSE_COLS, _run_extra)]
    pts = []
    for r in runs:
        f = _flatten(r.get("metrics", {}))
        if "knowmem_forget_qa.rougeL_f1" in f and "knowmem_retain_qa.rougeL_f1" in f:
            pts.append((_label(r), f["knowmem_forget_qa.rougeL_f1"], f["knowmem_retain_qa.rougeL_f1"]))
    if pts:
        out.append(_img(_scatter(pts, "KnowMem forget ROUGE-L F1 ↓", "KnowMem retain ROUGE-L F1 ↑",
                                 "MUSE: forget vs retain knowledge"), "MUSE KnowMem forget vs retain",
                        "Each run is a point; top left is best."))
    parts = [("knowmem_forget_qa.rougeL_f1", "KnowMem forget ↓"), ("knowmem_retain_qa.rougeL_f1", "KnowMem retain ↑"),
             ("verbmem_forget.rougeL_f1", "VerbMem forget ↓")]
    series = {_label(r): [_flatten(r.get("metrics", {})).get(k) for k, _ in parts] for r in runs}
    if any(v is not None for vals in series.values() for v in vals):
        out.append(_img(_bars([n for _, n in parts], series, "ROUGE-L F1", "MUSE per part", ylim=(0, 1.05)),
                        "MUSE ROUGE-L per part", "ROUGE-L F1 per MUSE part and run."))
    bar = _attack_bars(runs, "knowmem_forget_qa.rougeL_f1", "KnowMem forget ROUGE-L F1 ↓", "MUSE: forget per attack",
                       "Per attack, one bar per method (lower is better).", ylim=(0, 1.05))
    if bar:
        out.append(bar)
    return out


def _continual(runs: list[dict]) -> list[str]:
    out = [_table(runs, CONTINUAL_COLS, _run_extra)]
    cont = [r for r in runs if r.get("trajectory")]
    if cont:
        from matplotlib.ticker import MaxNLocator

        plt = _plt()
        panels = [("ds", "deviation score ↓", 100.0), ("mu", "model utility ↑", 1.0),
                  ("detection", "forget detection rate ↑", 1.0), ("fpr_retain", "retain false positives ↓", 1.0)]
        panels = [p for p in panels if any(p[0] in pt for r in cont for pt in r["trajectory"])]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
        for r in cont:
            t = r["trajectory"]
            steps = [p["step"] for p in t]
            for ax, (k, _title, _top) in zip(axes[0], panels, strict=True):
                ax.plot(steps, [p.get(k) if p.get(k) is not None else float("nan") for p in t], marker="o",
                        label=_label(r))
        # fixed scales: the metrics are bounded, and autoscaling blows a 0.03-point wobble up to full height
        for ax, (_k, title, top) in zip(axes[0], panels, strict=True):
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(0.0, top * 1.05)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=7)
        out.append(_img(fig, "continual unlearning trajectories",
                        "After each step of forget requests: DS, model utility, detection and false positives."))
    return out


def _score(runs: list[dict]) -> list[str]:
    out = [_table(runs, SCORE_COLS)]
    keys = [("forget.rougeL_recall", "forget ROUGE-L ↓"), ("forget.kfr", "KFR ↑"),
            ("retain.rougeL_recall", "retain ROUGE-L ↑"), ("retain.krr", "KRR ↑")]
    series = {_label(r): [_flatten(r.get("metrics", {})).get(k) for k, _ in keys] for r in runs}
    keys_present = [i for i, _ in enumerate(keys) if any(v[i] is not None for v in series.values())]
    if keys_present:
        groups = [keys[i][1] for i in keys_present]
        series = {k: [v[i] for i in keys_present] for k, v in series.items()}
        out.append(_img(_bars(groups, series, "rate / recall", "scored generations", ylim=(0, 1.05)),
                        "scored generations", "The generation-level metrics of each scored file."))
    return out


def _detection_tofu(runs: list[dict]) -> list[str]:
    out = []
    rows = []
    for r in runs:
        for which in ("at_default_tau", "at_calibrated_tau"):
            d = r.get(which)
            if d:
                rows.append((r, which, d))
    if rows:
        head = ("<tr><th class='l'>run</th><th class='l'>threshold</th><th>τ</th>"
                f"<th title='{_BETTER_TEXT[UP]}'>forget queries caught (TPR) <span class='dir'>↑</span></th>"
                f"<th title='{_BETTER_TEXT[DOWN]}'>others caught (FPR) <span class='dir'>↓</span></th></tr>")
        body = "".join(f"<tr><td class='l'>{html.escape(_label(r))}</td><td class='l'>"
                       f"{'default' if w == 'at_default_tau' else 'calibrated'}</td><td>{d['tau']:.3f}</td>"
                       f"<td>{100 * d['tpr']:.1f} %</td><td>{100 * d['fpr']:.2f} %</td></tr>" for r, w, d in rows)
        out.append(f"<div class='scroll'><table>{head}{body}</table></div>")
        r, w, d = rows[0]
        sets = list(d.get("per_set", {}))
        series = {f"{_label(rr)} · {'default' if ww == 'at_default_tau' else 'calibrated'} τ={dd['tau']:.2f}":
                  [dd.get("per_set", {}).get(s) for s in sets] for rr, ww, dd in rows}
        if sets:
            out.append(_img(_bars(sets, series, "share of queries caught", "TOFU detection per query set",
                                  ylim=(0, 1.05)), "TOFU detection per query set",
                            "High on the forget sets (↑), low on retain, real authors and world facts (↓)."))
    return out


def _detection_attacks(runs: list[dict]) -> list[str]:
    out = []
    for r in runs:
        rates = r.get("rates", {})
        if not rates:
            continue
        names = list(rates)
        head = (f"<tr><th class='l'>query form</th><th title='{_BETTER_TEXT[UP]}'>forget queries caught "
                f"<span class='dir'>↑</span></th><th title='{_BETTER_TEXT[DOWN]}'>benign queries caught "
                "<span class='dir'>↓</span></th></tr>")
        body = "".join(f"<tr><td class='l'>{html.escape(n)}</td><td>{_pct(rates[n].get('tpr'))}</td>"
                       f"<td>{_pct(rates[n].get('fpr'))}</td></tr>" for n in names)
        out.append(f"<h3>{html.escape(_label(r))}</h3><div class='scroll'><table>{head}{body}</table></div>")
        out.append(_img(_bars(names, {"forget queries caught (TPR) ↑": [rates[n].get("tpr") for n in names],
                                      "benign queries caught (FPR) ↓": [rates[n].get("fpr") for n in names]},
                              "share of queries caught", f"detection per attack — {_label(r)}", ylim=(0, 1.05)),
                        "detection per attack", "Per attack form: the detection rate of forget queries (high is "
                        "better) and of benign ones (low is better)."))
    return out


def _detection_wmdp(runs: list[dict]) -> list[str]:
    out = []
    for r in runs:
        rates = r.get("rates_at_tau", {})
        tau = r.get("config", {}).get("tau")
        names = list(rates)
        head = (f"<tr><th class='l'>query set</th><th>caught at τ={tau}</th>"
                + "".join(f"<th title='{_BETTER_TEXT[UP]}'>caught at MMLU FPR {int(100 * float(f))} % "
                          "<span class='dir'>↑</span></th>" for f in ("0.01", "0.02", "0.05")) + "</tr>")
        at = r.get("tpr_at_mmlu_fpr", {})
        body = "".join(f"<tr><td class='l'>{html.escape(n)}{' (benign, ↓)' if n == 'mmlu' else ' (↑)'}</td>"
                       f"<td>{_pct(rates[n])}</td>"
                       + "".join(f"<td>{_pct(at.get(n, {}).get(f, at.get(n, {}).get(str(f))))}</td>"
                                 for f in ("0.01", "0.02", "0.05")) + "</tr>" for n in names)
        out.append(f"<h3>{html.escape(_label(r))}</h3><div class='scroll'><table>{head}{body}</table></div>")
        if names:
            out.append(_img(_bars(names, {f"caught at τ={tau}": [rates[n] for n in names]},
                                  "share of questions caught", f"WMDP / MMLU detection — {_label(r)}",
                                  ylim=(0, 1.05)), "WMDP and MMLU detection rates",
                            "High on the WMDP subsets, low on MMLU (false positives)."))
    return out


def _pct(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.1f} %"


def _other(runs: list[dict]) -> list[str]:
    return ["<p>Files without a known result type; their numeric values:</p>"]


_SECTIONS: dict[str, Callable[[list[dict]], list[str]]] = {
    "tofu": _tofu, "mc": _mc, "muse": _muse, "continual": _continual, "score": _score,
    "detection_tofu": _detection_tofu, "detection_attacks": _detection_attacks, "detection_wmdp": _detection_wmdp,
    "other": _other,
}


# -- page --------------------------------------------------------------------------------------------
_CSS = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}"
        "h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}"
        "table{border-collapse:collapse;font-size:13px;margin:.6em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}"
        "th{background:#f3f3f3;font-weight:600;max-width:11em}td.l,th.l{text-align:left}"
        "td.best{font-weight:700;background:#eef7ee}.dir{color:#1a6;font-weight:700;white-space:nowrap}"
        ".scroll{overflow-x:auto}figure{display:inline-block;margin:.8em 1.2em .8em 0;vertical-align:top}"
        "figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:12px;color:#555;max-width:640px}"
        "details{margin:.6em 0}summary{cursor:pointer;color:#345}pre{font-size:11px;background:#f8f8f8;"
        "padding:.8em;overflow-x:auto}.legend{font-size:13px;color:#444}")


def _config_block(r: dict) -> str:
    keep = {k: r.get(k) for k in ("task", "benchmark", "config", "versions", "components", "method", "backend",
                                  "timing") if r.get(k) is not None}
    return (f"<details><summary>configuration of {html.escape(_label(r))} ({html.escape(Path(r['_file']).name)})"
            f"</summary><pre>{html.escape(json.dumps(keep, indent=1, ensure_ascii=False, default=str))}</pre>"
            "</details>")


def build_report(paths: list[Path]) -> str:
    runs = []
    for p in paths:
        try:
            r = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read results file {p}: {exc}") from None
        if not isinstance(r, dict):
            raise ConfigError(f"results file {p} does not hold a JSON object")
        r["_file"] = str(p)
        runs.append(r)
    if not runs:
        raise ConfigError("no results files given")
    _disambiguate(runs)
    by: dict[str, list[dict]] = {}
    for r in runs:
        by.setdefault(run_type(r), []).append(r)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Lethe evaluation report</title>"
             f"<style>{_CSS}</style></head><body><h1>Lethe evaluation report</h1>",
             f"<p class='legend'>{len(runs)} results file{'s' if len(runs) != 1 else ''}, generated {when}. "
             "Column marks: <span class='dir'>↑</span> higher is better, <span class='dir'>↓</span> lower is "
             "better, <span class='dir'>→ 25</span> / <span class='dir'>→ 0.5</span> closer to chance is better; "
             "the best value of a column is in bold.</p>"]
    toc = [f"<a href='#{k}'>{_TITLES[k]}</a> ({len(v)})" for k, v in by.items()]
    parts.append("<p>" + " · ".join(toc) + "</p>")
    for kind, group in by.items():
        parts.append(f"<h2 id='{kind}'>{_TITLES[kind]}</h2>")
        parts += _SECTIONS[kind](group)
        if kind in ("tofu", "mc", "muse"):
            roc = _roc_figure(group)
            if roc:
                parts.append(roc)
        parts.append(_all_metrics(group))
        parts += [_config_block(r) for r in group]
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def write_report(paths: list[Path], out: Path) -> Path:
    out.write_text(build_report(paths), encoding="utf-8")
    return out
