"""Report figures: matplotlib PNGs embedded as base64 (scatter, bars, detector ROC)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from lethe.evaluation.report.columns import _attack, _flatten, _label, _method


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


