"""The HTML report: a section per result type, human column names with the better direction, plots,
collapsed raw JSON — and, in a real headless Chromium, figures that actually render."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from lethe.evaluation.cli import eval_app, report_command
from lethe.evaluation.report import build_report, run_type


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def _tofu(method, attack, forget_r, retain_r, mu=None, trig=0.0):
    metrics = {"forget": {"n": 4, "rougeL_recall": forget_r, "trigger_rate": trig, "kfr": 0.5, "rq": 0.7},
               "retain": {"n": 4, "rougeL_recall": retain_r, "trigger_rate": 0.0, "krr": 0.8},
               "real_authors": {"n": 4, "rougeL_recall": 0.9}, "world_facts": {"n": 4, "rougeL_recall": 0.85},
               "ds": 100 * ((forget_r ** 2 + (1 - retain_r) ** 2) ** 0.5)}
    if mu is not None:
        metrics["model_utility"] = mu
    items = {"forget": [{"id": f"f{i}", "score": 0.6 + 0.1 * i} for i in range(4)],
             "retain": [{"id": f"r{i}", "score": 0.1 * i} for i in range(4)]}
    return {"task": "tofu", "config": {"method": method, "attack": attack, "forget_split": "forget05"},
            "backend": {"model": "qwen2.5-coder-0.5b-instruct-q4"}, "metrics": metrics, "items": items}


def _wmdp(method, attack, acc, mmlu):
    return {"task": "wmdp", "config": {"method": method, "attack": attack, "subsets": ["bio"]},
            "backend": {"model": "qwen2.5-coder-0.5b-instruct-q4"},
            "metrics": {"wmdp_bio": {"n": 3, "prob_acc": acc, "trigger_rate": 0.9},
                        "mmlu": {"n": 2, "prob_acc": mmlu, "trigger_rate": 0.0, "fpr": 0.0}},
            "items": [{"id": "wmdp-bio-1", "score": 0.9}, {"id": "wmdp-bio-2", "score": 0.7},
                      {"id": "mmlu-x-1", "score": 0.1}, {"id": "mmlu-x-2", "score": 0.3}]}


@pytest.fixture
def results(tmp_path):
    files = [
        _write(tmp_path / "tofu_none.json", _tofu("none", None, 0.8, 0.85, mu=0.55)),
        _write(tmp_path / "tofu_dragon.json", _tofu("dragon", None, 0.2, 0.84, mu=0.54, trig=1.0)),
        _write(tmp_path / "tofu_dragon_typos.json", _tofu("dragon", "typos", 0.3, 0.84, mu=0.54, trig=0.9)),
        _write(tmp_path / "tofu_gen.json", _tofu("icul", None, 0.5, 0.8)),  # generation-only: no utility
        _write(tmp_path / "wmdp_none.json", _wmdp("none", None, 50.0, 45.0)),
        _write(tmp_path / "wmdp_dragon.json", _wmdp("dragon", None, 27.0, 44.0)),
        _write(tmp_path / "wmdp_dragon_aim.json", _wmdp("dragon", "aim", 30.0, 44.0)),
        _write(tmp_path / "muse.json", {"task": "muse", "config": {"method": "dragon", "corpus": "news"},
                                        "metrics": {"knowmem_forget_qa": {"rougeL_f1": 0.1, "trigger_rate": 0.95},
                                                    "knowmem_retain_qa": {"rougeL_f1": 0.4, "trigger_rate": 0.02},
                                                    "verbmem_forget": {"rougeL_f1": 0.05}}}),
        _write(tmp_path / "b.json", {"task": "continual", "config": {"method": "dragon"},
                                     "metrics": {"dds": 0.2, "dus": 0.9, "final_ds": 22.0},
                                     "trajectory": [{"step": 1, "ds": 20.0, "mu": 0.5, "detection": 1.0},
                                                    {"step": 2, "ds": 22.0, "mu": 0.49, "detection": 1.0}]}),
        _write(tmp_path / "scored.json", {"task": "score", "config": {"generations": "/x/gens.jsonl", "split": "forget",
                                                                      "retain_generations": None},
                                          "metrics": {"forget": {"n": 3, "rougeL_recall": 0.3, "kfr": 0.6,
                                                                 "cs": 0.7, "rq": 0.9}}}),
        _write(tmp_path / "det_tofu.json", {"benchmark": "detection_tofu", "config": {"split": "forget05"},
                                            "at_default_tau": {"tau": 0.7, "tpr": 1.0, "fpr": 0.01, "per_set": {
                                                "forget": 1.0, "retain90": 0.01, "world_facts": 0.0}},
                                            "at_calibrated_tau": {"tau": 0.6, "tpr": 1.0, "fpr": 0.02, "per_set": {
                                                "forget": 1.0, "retain90": 0.02, "world_facts": 0.0}}}),
        _write(tmp_path / "det_attacks.json", {"benchmark": "detection_attacks", "config": {"tau": 0.7},
                                               "rates": {"clean": {"tpr": 1.0, "fpr": 0.0}, "typos": {"tpr": 0.97,
                                                         "fpr": 0.0}, "indirect": {"tpr": 0.4, "n": 10}}}),
        _write(tmp_path / "det_wmdp.json", {"config": {"tau": 0.7}, "rates_at_tau": {"wmdp_bio": 0.9, "mmlu": 0.01},
                                            "tpr_at_mmlu_fpr": {"wmdp_bio": {"0.01": 0.8, "0.02": 0.85, "0.05": 0.9}},
                                            "n": {"wmdp_bio": 3, "mmlu": 2}}),
    ]
    return files


EXPECTED_FIGURES = {
    "tofu": 5,  # forget vs utility, per-split bars, two per-attack bars, ROC
    "mc": 3,  # WMDP vs MMLU, per-attack bars, ROC
    "muse": 2, "continual": 1, "score": 1, "detection_tofu": 1, "detection_attacks": 1, "detection_wmdp": 1,
}


def test_report_sections_names_and_figures(results, tmp_path):
    app = _app()
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, [*map(str, results), "--out", str(out)])
    assert res.exit_code == 0, res.output
    text = out.read_text()
    assert {run_type(json.loads(p.read_text())) for p in results} == set(EXPECTED_FIGURES)
    sections = re.split(r"<h2 id='", text)[1:]
    found = {s.split("'", 1)[0]: s.count("data:image/png;base64,") for s in sections}
    assert found == EXPECTED_FIGURES
    # human column names with their better direction, never the raw dotted key as a main column
    assert "forget answers: ROUGE-L recall <span class='dir'>↓</span>" in text
    assert "model utility <span class='dir'>↑</span>" in text
    assert "WMDP-bio accuracy (%) <span class='dir'>→ 25</span>" in text
    assert "<th title='lower is better'>deviation score (DS)" in text
    main_tables = re.sub(r"<details>.*?</details>", "", text, flags=re.S)
    assert "forget.rougeL_recall" not in main_tables and "wmdp_bio.prob_acc" not in main_tables
    # raw JSON and the long tail of metrics are collapsed
    assert text.count("<details><summary>configuration of") == len(results)
    assert "<details><summary>all metrics" in text and "forget.rougeL_recall" in text
    # a scored-generations run is labelled by its file, not "score ?", and has no empty model column
    assert "scored gens.jsonl (forget)" in text and "score ?" not in text
    score_section = next(s for s in sections if s.startswith("score'"))
    assert "<th class='l'>model</th>" not in score_section
    # best value of a column marked
    assert "class='best'" in text


def test_report_disambiguates_and_errors(tmp_path, results):
    app = _app()
    out = tmp_path / "r.html"
    b = next(p for p in results if p.name == "b.json")
    c = _write(tmp_path / "c.json", {"task": "continual", "config": {"method": "dragon"},
                                     "metrics": {"dds": 0.3, "dus": 1.0}, "trajectory": []})
    res = CliRunner().invoke(app, [str(b), str(c), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "continual dragon (b)" in out.read_text() and "continual dragon (c)" in out.read_text()
    bad = tmp_path / "bad.json"
    bad.write_bytes(b"\xff\xfe not json")
    res = CliRunner().invoke(app, [str(bad), "--out", str(out)])
    assert res.exit_code == 2 and "cannot read results file" in res.output


def test_eval_app_commands():
    names = {c.name for c in eval_app.registered_commands}
    assert {"tofu", "wmdp", "mmlu", "muse", "continual", "score"} <= names


def _app():
    import typer

    app = typer.Typer()
    app.command()(report_command)
    return app


_PROBE = ("<script>window.addEventListener('load',()=>{for(const i of document.images){"
          "i.setAttribute('data-w',i.naturalWidth);i.setAttribute('data-h',i.naturalHeight);"
          "i.setAttribute('data-ok',i.complete&&i.naturalWidth>0)}"
          "document.body.setAttribute('data-details',document.querySelectorAll('details:not([open])').length)})"
          "</script></body>")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium: apt-get install -y chromium (Debian)")
def test_report_renders_in_headless_chromium(results, tmp_path):
    """Load the page in a real headless Chromium; every figure must decode to a real-sized image."""
    page = build_report(results)
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _PROBE), encoding="utf-8")
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000",
           "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    imgs = re.findall(r"<img [^>]*>", dom)
    assert len(imgs) == sum(EXPECTED_FIGURES.values()), dom[:500]
    for tag in imgs:
        w = int(re.search(r'data-w="(\d+)"', tag).group(1))
        h = int(re.search(r'data-h="(\d+)"', tag).group(1))
        assert 'data-ok="true"' in tag and w >= 200 and h >= 150, tag[:200]
    # the raw configurations start collapsed
    assert int(re.search(r'data-details="(\d+)"', dom).group(1)) >= len(results)
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    f"--user-data-dir={tmp_path / 'profile2'}", "--window-size=1280,2000",
                    f"--screenshot={shot}", probe.as_uri()], capture_output=True, timeout=120)
    from PIL import Image

    with Image.open(shot) as im:
        colours = im.convert("RGB").resize((128, 200)).getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 50  # drawn plots, not a blank page
