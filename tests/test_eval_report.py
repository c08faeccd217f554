"""The HTML report renders tables and embedded plots from results files."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from lethe.evaluation.cli import eval_app, report_command


def _write(path, task, method, metrics, **extra):
    path.write_text(json.dumps({"task": task, "config": {"method": method}, "metrics": metrics, **extra}))
    return path


def test_report_html(tmp_path):
    a = _write(tmp_path / "a.json", "wmdp", "none", {"wmdp_bio": {"prob_acc": 50.0}, "mmlu": {"prob_acc": 45.0}},
               items=[{"id": "wmdp-bio-1", "score": 0.9}, {"id": "mmlu-x-1", "score": 0.1}, {"id": "mmlu-x-2", "score": 0.3}])
    b = _write(tmp_path / "b.json", "continual", "dragon", {"dds": 0.2, "dus": 0.9},
               trajectory=[{"step": 1, "ds": 20.0, "mu": 0.5, "detection": 1.0}, {"step": 2, "ds": 22.0, "mu": 0.49, "detection": 1.0}])
    import typer

    app = typer.Typer()
    app.command()(report_command)
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, [str(a), str(b), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert text.count("data:image/png;base64") == 3  # scatter, trajectories, ROC
    assert "wmdp_bio.prob_acc" in text and "dds" in text
    c = _write(tmp_path / "c.json", "continual", "dragon", {"dds": 0.3, "dus": 1.0}, trajectory=[])
    res = CliRunner().invoke(app, [str(b), str(c), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "continual dragon (b)" in out.read_text() and "continual dragon (c)" in out.read_text()


def test_eval_app_commands():
    names = {c.name for c in eval_app.registered_commands}
    assert {"tofu", "wmdp", "mmlu", "muse", "continual", "score"} <= names
