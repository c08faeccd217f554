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

import datetime as dt
import html
import json
from pathlib import Path

from lethe.errors import ConfigError
from lethe.evaluation.report.columns import _TITLES, _disambiguate, _flatten, _label, run_type
from lethe.evaluation.report.figures import _roc_figure
from lethe.evaluation.report.sections import _SECTIONS, _all_metrics

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



__all__ = ["_flatten", "build_report", "run_type", "write_report"]
