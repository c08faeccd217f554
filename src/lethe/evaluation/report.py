"""``lethe report results*.json --out report.html``: a comparison table and plots (matplotlib,
PNG embedded as base64): forget-vs-utility scatter, continual trajectories, detector ROC."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from lethe.errors import ConfigError

_SKIP = {"per_subject", "forget_truth_ratios", "forget_quality_reference"}


def _flatten(metrics: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if k in _SKIP:
            continue
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = v
    return out


def _label(r: dict) -> str:
    if "_label" in r:
        return r["_label"]
    c = r.get("config", {})
    bits = [r.get("task", "?"), c.get("method", "?")]
    if c.get("attack") and c["attack"] != "none":
        bits.append(f"attack={c['attack']}")
    if c.get("subsets"):
        bits.append("+".join(c["subsets"]))
    return " ".join(bits)


def _disambiguate(runs: list[dict]) -> None:
    """Runs whose task/method/attack label collides are told apart by their file name."""
    labels = [_label(r) for r in runs]
    for r, lab in zip(runs, labels, strict=True):
        r["_label"] = f"{lab} ({Path(r['_file']).stem})" if labels.count(lab) > 1 else lab


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _forget_utility_points(runs: list[dict]) -> list[tuple[str, float, float, str, str]]:
    pts = []
    for r in runs:
        m = r.get("metrics", {})
        wm = m.get("wmdp") or next((v for k, v in m.items() if k.startswith("wmdp_")), None)
        if wm and "mmlu" in m:
            pts.append((_label(r), wm["prob_acc"], m["mmlu"]["prob_acc"], "WMDP ProbAcc (%)", "MMLU ProbAcc (%)"))
        elif "ds" in m and "model_utility" in m:
            pts.append((_label(r), m["ds"], m["model_utility"], "TOFU DS (lower better)", "model utility"))
    return pts


def _roc_data(r: dict) -> tuple[list[int], list[float]] | None:
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


def build_report(paths: list[Path]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for p in paths:
        try:
            r = json.loads(Path(p).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read results file {p}: {exc}") from None
        r["_file"] = str(p)
        runs.append(r)
    if not runs:
        raise ConfigError("no results files given")
    _disambiguate(runs)
    flat = [_flatten(r.get("metrics", {})) for r in runs]
    cols = sorted({k for f in flat for k in f})
    parts = ["<html><head><meta charset='utf-8'><title>Lethe report</title><style>"
             "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#eee}"
             "td.l{text-align:left}</style></head><body><h1>Lethe evaluation report</h1>"]
    parts.append("<h2>Runs</h2><table><tr><th>run</th><th>file</th><th>model</th>"
                 + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
    for r, f in zip(runs, flat, strict=True):
        model = r.get("backend", {}).get("model", "")
        cells = "".join(f"<td>{f[c]:.4g}</td>" if c in f else "<td></td>" for c in cols)
        parts.append(f"<tr><td class='l'>{html.escape(_label(r))}</td><td class='l'>{html.escape(Path(r['_file']).name)}"
                     f"</td><td class='l'>{html.escape(str(model))}</td>{cells}</tr>")
    parts.append("</table>")

    pts = _forget_utility_points(runs)
    if pts:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for lab, x, y, _xl, _yl in pts:
            ax.scatter([x], [y])
            ax.annotate(lab, (x, y), fontsize=7)
        ax.set_xlabel(pts[0][3])
        ax.set_ylabel(pts[0][4])
        if "WMDP" in pts[0][3]:
            ax.axvline(25, ls="--", c="grey", lw=0.8)
        ax.set_title("forget vs utility")
        parts.append(f"<h2>Forget vs utility</h2><img src='data:image/png;base64,{_png(fig)}'>")
        plt.close(fig)

    cont = [r for r in runs if r.get("trajectory")]
    if cont:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for r in cont:
            t = r["trajectory"]
            steps = [p["step"] for p in t]
            axes[0].plot(steps, [p["ds"] for p in t], marker="o", label=_label(r))
            axes[1].plot(steps, [p["mu"] if p["mu"] is not None else float("nan") for p in t], marker="o")
            axes[2].plot(steps, [p["detection"] for p in t], marker="o")
        # fixed scales: the metrics are bounded, and autoscaling blows a 0.03-point wobble up to full height
        for ax, title, top in zip(axes, ("DS per step", "model utility per step", "forget detection rate"),
                                  (100.0, 1.0, 1.0), strict=True):
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.set_ylim(0.0, top * 1.05)
        axes[0].legend(fontsize=7)
        parts.append(f"<h2>Continual unlearning</h2><img src='data:image/png;base64,{_png(fig)}'>")
        plt.close(fig)

    rocs = [(r, _roc_data(r)) for r in runs]
    rocs = [(r, d) for r, d in rocs if d]
    if rocs:
        from sklearn.metrics import auc, roc_curve

        fig, ax = plt.subplots(figsize=(5, 4.5))
        for r, (y, s) in rocs:
            fpr, tpr, _ = roc_curve(y, s)
            ax.plot(fpr, tpr, label=f"{_label(r)} (AUC {auc(fpr, tpr):.3f})")
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("detection rate")
        ax.legend(fontsize=7)
        ax.set_title("detector ROC (forget vs retain/MMLU items)")
        parts.append(f"<h2>Detector ROC</h2><img src='data:image/png;base64,{_png(fig)}'>")
        plt.close(fig)

    parts.append("<h2>Configurations</h2>")
    for r in runs:
        parts.append(f"<h3>{html.escape(_label(r))}</h3><pre>{html.escape(json.dumps({k: r.get(k) for k in ('config', 'versions', 'components', 'method', 'backend', 'timing')}, indent=1))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(paths: list[Path], out: Path) -> Path:
    out.write_text(build_report(paths), encoding="utf-8")
    return out
