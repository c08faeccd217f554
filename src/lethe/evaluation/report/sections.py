"""Report tables and the section of each run type."""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from typing import Any

from lethe.evaluation.report.columns import (
    _BETTER_TEXT,
    CONTINUAL_COLS,
    DOWN,
    MUSE_COLS,
    SCORE_COLS,
    TOFU_COLS,
    UP,
    Col,
    _attack,
    _flatten,
    _label,
    _mc_cols,
    _method,
)
from lethe.evaluation.report.figures import _attack_bars, _bars, _img, _plt, _scatter


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


