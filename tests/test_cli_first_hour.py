"""The first hour with the ``lethe`` command: cheap start-up, users' files, one-line errors,
quiet output, calibration that cannot break the guard, help in one style.

Real code paths throughout: the shipped MiniLM (ONNX engine), the SQLite store, the CLI through
``lethe.cli.main.main`` (its error handling included) or a subprocess where start-up itself is
what is tested. The chat test needs the embedded LLM (``model`` marker).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lethe.cli.main import LAZY_COMMANDS, app, load_lazy, main

FORGET = [
    "Where was the novelist Marisol Quintero-Hale born?",
    "What genre does Marisol Quintero-Hale write?",
    "Which awards has Marisol Quintero-Hale received?",
]
SRC = Path(__file__).resolve().parents[1] / "src"


def run_cli(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """``lethe ARGS`` in this process through ``main()``: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["lethe", *args])
    capsys.readouterr()
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def run_sub(code: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full = dict(os.environ) | (env or {})
    full["PYTHONPATH"] = str(SRC) + os.pathsep + full.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=timeout)


def jsonl(path: Path, prompts: list[str], prefix: bytes = b"", encoding: str = "utf-8") -> Path:
    path.write_bytes(prefix + "".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n"
                                      for p in prompts).encode(encoding))
    return path


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A home with one privacy request (rule rewriter)."""
    from lethe import Guard

    h = tmp_path_factory.mktemp("first-hour") / "home"
    Guard.open(h).forget(FORGET, kind="privacy", subject="Marisol Quintero-Hale", rewriter="rule", progress=False)
    return h


# -- item 1: start-up --------------------------------------------------------------------------

HEAVY = ("torch", "transformers", "sentence_transformers", "sklearn", "scipy", "nltk", "rouge_score",
         "lethe.evaluation", "lethe.training", "lethe.serving", "fastapi")


def _imported(code_before: str) -> set[str]:
    probe = code_before + "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] if not m.startswith('lethe.') " \
        "else '.'.join(m.split('.')[:2]) for m in sys.modules})))"
    r = run_sub(probe)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout.strip().splitlines()[-1]))


def test_import_lethe_and_help_load_nothing_heavy():
    mods = _imported("import lethe\nassert lethe.__version__\n"
                     "from lethe.cli.main import app\n"
                     "from typer.testing import CliRunner\n"
                     "r = CliRunner().invoke(app, ['--help'])\nassert r.exit_code == 0 and 'serve' in r.output")
    assert not mods & set(HEAVY), mods & set(HEAVY)
    assert "onnxruntime" not in mods and "lethe.guard" not in mods


def test_check_on_a_warm_cache_imports_no_torch_nor_sklearn(home):
    code = ("import sys\nfrom lethe.cli.main import main\n"
            f"sys.argv = ['lethe', 'check', 'Where was Marisol Quintero-Hale born?', '--home', {str(home)!r}]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n")
    run_sub(code)  # fills the caches (ONNX export, benign embeddings, scorer fit) if a test before did not
    mods = _imported(code)
    assert not mods & set(HEAVY), mods & set(HEAVY)


@pytest.mark.parametrize("args,expect", [(["check", "hello"], "the unlearn store is empty"),
                                         (["calibrate"], "the unlearn store is empty"),
                                         (["forget", "add", "--kind", "person", "--file", "x.jsonl"], "unknown kind")])
def test_errors_come_before_any_model_loads(tmp_path, args, expect):
    code = ("import sys, io, contextlib\nfrom lethe.cli.main import main\n"
            f"sys.argv = ['lethe', *{args!r}, '--home', {str(tmp_path / 'h')!r}]\n"
            "err = io.StringIO()\n"
            "with contextlib.redirect_stderr(err):\n"
            "    try:\n        main()\n    except SystemExit as e:\n        assert e.code == 2, e.code\n"
            f"assert {expect!r} in err.getvalue(), err.getvalue()\n")
    mods = _imported(code)  # (onnxruntime itself loads with the store: usearch needs it first)
    assert not mods & {"tokenizers", "llama_cpp", *HEAVY}, mods & {"tokenizers", "llama_cpp", *HEAVY}
    assert "lethe.guard" not in mods  # no detector, no embedder


def test_lazy_commands_show_their_modules_help_and_run():
    for name, spec in LAZY_COMMANDS.items():
        cmd = load_lazy(name)
        first = (cmd.help or "").strip().splitlines()[0]
        assert first == spec.help, (name, first, spec.help)
    from typer.testing import CliRunner

    r = CliRunner().invoke(app, ["eval", "--help"])
    assert r.exit_code == 0 and "tofu" in r.output


def test_fast_tokenizer_matches_transformers():
    from transformers import AutoTokenizer

    from lethe.backends.embeddings import FastTokenizer, Layout, resolve_embedder

    path = resolve_embedder("default")
    layout = Layout.read(path)
    assert layout is not None and layout.pooling == "mean" and layout.dim == 384
    ours, theirs = FastTokenizer(layout.folder, layout.max_length), AutoTokenizer.from_pretrained(path)
    texts = ["Where was Marisol Quintero-Hale born?", "Ünïcödé ÀÉÎ ñ ß", "中文 日本語", "emoji 🎉", "", "x " * 400,
             "  tabs\tand\nnewlines  "]
    a = ours(texts)
    b = theirs(texts, return_tensors="np", padding=True, truncation=True, max_length=layout.max_length,
               return_token_type_ids=True)
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert np.array_equal(a[k], b[k]), k


def test_cached_encode_is_exact_and_re_embeds_only_new_blocks(tmp_path, monkeypatch):
    from lethe.backends.embeddings import cached_encode, get_embedder

    monkeypatch.setenv("LETHE_CACHE", str(tmp_path / "cache"))
    emb = get_embedder()
    texts = [f"benign question number {i} about cooking" for i in range(7)]
    first = cached_encode(emb, texts, block=3)
    assert np.allclose(first, emb.encode(texts), atol=1e-6)
    files = sorted((tmp_path / "cache" / "embeddings").rglob("*.npy"))
    assert len(files) == 3  # blocks of 3, 3, 1
    stamps = {f: f.stat().st_mtime_ns for f in files}
    grown = texts + ["one more"]
    again = cached_encode(emb, grown, block=3)
    assert np.allclose(again[:7], first) and again.shape == (8, emb.dim)
    assert all(f.stat().st_mtime_ns == stamps[f] for f in files)  # nothing rewritten
    assert len(list((tmp_path / "cache" / "embeddings").rglob("*.npy"))) == 4  # only the new last block added
    assert np.allclose(again, emb.encode(grown), atol=1e-6)


def test_scorer_fit_cache_gives_the_fitted_model(tmp_path, monkeypatch):
    from lethe.guard.scorer import LinearFit, LogRegScorer

    monkeypatch.setenv("LETHE_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(0.5, 1, (20, 8)), rng.normal(-0.5, 1, (60, 8))
    x = rng.normal(0, 1, (10, 8))
    fresh = LogRegScorer()
    fresh.fit(pos, neg)
    assert not isinstance(fresh.model, LinearFit)
    cached = LogRegScorer()
    cached.fit(pos, neg)
    assert isinstance(cached.model, LinearFit)
    assert np.allclose(cached.predict(x), fresh.model.predict_proba(x)[:, 1], atol=1e-12)
    assert np.allclose(cached.model.predict_proba(x), fresh.model.predict_proba(x), atol=1e-12)


# -- item 3: users' files and homes ------------------------------------------------------------

@pytest.mark.parametrize("prefix,encoding", [(b"", "utf-8"), (b"\xef\xbb\xbf", "utf-8"),
                                             (b"\xff\xfe", "utf-16-le")])
def test_check_file_accepts_utf8_with_or_without_bom(home, tmp_path, capsys, monkeypatch, prefix, encoding):
    f = jsonl(tmp_path / "q.jsonl", ["Where was Marisol Quintero-Hale born?", "What is the capital of Japan?"],
              prefix, encoding)
    code, out, err = run_cli(["check", "--file", str(f), "--json", "--home", str(home)], capsys, monkeypatch)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["in_scope"] for r in rows] == [True, False]
    assert rows[0]["query"] == "Where was Marisol Quintero-Hale born?"  # no BOM glued to the first prompt


@pytest.mark.parametrize("command", [["check", "--file"], ["forget", "add", "--rewriter", "rule", "--file"]])
def test_undecodable_byte_is_a_one_line_error_naming_file_and_line(home, tmp_path, capsys, monkeypatch, command):
    f = tmp_path / "bad.jsonl"
    f.write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xe9 latin-1"}\n')
    code, out, err = run_cli([*command, str(f), "--home", str(home)], capsys, monkeypatch)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and f"{f}:2:" in lines[0], err
    assert "0xe9" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("content,expect", [(None, "file not found"), ("dir", "is a folder"),
                                            ('{"prompt": "ok"}\n{"prompt": \n', ":2: bad JSON"),
                                            ('{"text": "no prompt"}\n', ":1: each line needs"),
                                            ("\n\n", "no records")])
def test_bad_input_files_are_one_line_errors(home, tmp_path, capsys, monkeypatch, content, expect):
    f = tmp_path / "in.jsonl"
    if content == "dir":
        f.mkdir()
    elif content is not None:
        f.write_text(content, encoding="utf-8")
    code, _, err = run_cli(["check", "--file", str(f), "--home", str(home)], capsys, monkeypatch)
    assert code == 2 and expect in err and len(err.strip().splitlines()) == 1, err


def test_forget_add_reads_a_bom_file(tmp_path, capsys, monkeypatch):
    f = jsonl(tmp_path / "f.jsonl", FORGET, b"\xef\xbb\xbf")
    h = tmp_path / "h"
    code, out, err = run_cli(["forget", "add", "--file", str(f), "--rewriter", "rule", "--home", str(h)],
                             capsys, monkeypatch)
    assert code == 0 and re.fullmatch(r"[0-9a-f]+", out.strip()), err
    assert err == ""  # rule rewriter: no progress bar, no third-party warnings


def test_home_that_cannot_be_created_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for home_arg in (blocker, blocker / "home"):
        code, _, err = run_cli(["forget", "list", "--home", str(home_arg)], capsys, monkeypatch)
        assert code == 2 and err.startswith("error: ") and str(home_arg) in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_home_that_is_not_writable_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    ro = tmp_path / "home"
    ro.mkdir()
    if os.geteuid() == 0:  # root writes through mode bits, not into an immutable folder
        if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("running as root and chattr +i is unavailable: no folder root cannot write")
        undo = ["chattr", "-i", str(ro)]
    else:
        ro.chmod(0o555)
        undo = ["chmod", "755", str(ro)]
    try:
        code, out, err = run_cli(["forget", "list", "--home", str(ro)], capsys, monkeypatch)
    finally:
        subprocess.run(undo, check=True)
    assert code == 2 and out == "", err
    assert err.startswith(f"error: Lethe home {ro} is not writable") and len(err.strip().splitlines()) == 1, err


def test_long_query_is_abbreviated_in_text_but_whole_in_json(home, capsys, monkeypatch):
    q = "Where was Marisol Quintero-Hale born? " + "filler words here " * 300
    code, out, _ = run_cli(["check", q, "--home", str(home)], capsys, monkeypatch)
    assert code == 0 and len(out) < 600 and f"({len(q):,} characters)" in out
    code, out, _ = run_cli(["check", q, "--json", "--home", str(home)], capsys, monkeypatch)
    assert code == 0 and json.loads(out)["query"] == q


# -- item 2: calibration -------------------------------------------------------------------------

OTHERS = ["Maria Gonzalez", "Kenji Watanabe", "Amara Okafor", "Lars Eriksson", "Priya Raman", "Tomasz Nowak",
          "Fatima Haddad", "Liam O'Connor", "Chen Wei", "Sofia Rossi", "Dmitri Volkov", "Aisha Bello",
          "Jonas Weber", "Isabel Duarte", "Mehmet Yilmaz", "Grace Mensah", "Hiroshi Tanaka", "Elena Petrova",
          "Marisol Garcia", "Hale Berry"]
TEMPLATES = ["Where was the novelist {} born?", "What genre does {} write?", "Which awards has {} received?",
             "What are the titles of {}'s best-known books?", "What did {}'s parents do for a living?"]


def _tau(home: Path) -> float:
    import yaml

    cfg = home / "guard.yaml"
    return float(yaml.safe_load(cfg.read_text())["detector"]["tau"]) if cfg.exists() else 0.7


def test_calibrate_refuses_the_shipped_hold_out_and_keeps_tau(tmp_path, capsys, monkeypatch):
    from lethe import Guard

    h = tmp_path / "h"
    Guard.open(h).forget(FORGET, kind="privacy", subject="Marisol Quintero-Hale", rewriter="rule", progress=False)
    before = _tau(h)
    code, out, err = run_cli(["calibrate", "--target-fpr", "0.01", "--home", str(h)], capsys, monkeypatch)
    assert code == 2 and "too few" in err and f"tau stays {before:.3f}" in err, err
    assert len(err.strip().splitlines()) == 1 and _tau(h) == before
    # the whole shipped set is large enough for 0.01 but about other topics
    from lethe.guard.detector import load_benign

    general = jsonl(tmp_path / "general.jsonl", [r["prompt"] for r in load_benign()])
    code, _, err = run_cli(["calibrate", "--file", str(general), "--home", str(h)], capsys, monkeypatch)
    assert code == 2 and "out of domain" in err and _tau(h) == before, err


def test_calibrate_in_domain_reports_fpr_and_tpr_and_keeps_the_floor(tmp_path, capsys, monkeypatch):
    from lethe import Guard
    from lethe.guard.calibration import TAU_FLOOR

    h = tmp_path / "h"
    Guard.open(h).forget(FORGET, kind="privacy", subject="Marisol Quintero-Hale", rewriter="rule", progress=False)
    near = jsonl(tmp_path / "near.jsonl", [t.format(n) for n in OTHERS for t in TEMPLATES])  # 100 queries
    code, out, err = run_cli(["calibrate", "--file", str(near), "--target-fpr", "0.03", "--json", "--home", str(h)],
                             capsys, monkeypatch)
    assert code == 0, err
    cal = json.loads(out)
    assert cal["saved"] and cal["tau"] >= TAU_FLOOR and cal["tau"] == pytest.approx(_tau(h), abs=1e-6)
    assert cal["n_benign"] == 100 and cal["fpr"] <= 0.03 and cal["tpr"] is not None and cal["n_held_out"] > 0
    assert cal["benign_cosine"] >= cal["general_cosine"] + 0.1
    code, out, _ = run_cli(["check", "Where was Marisol Quintero-Hale born?", "--home", str(h)], capsys, monkeypatch)
    assert out.startswith("IN SCOPE")
    # forced onto the general hold-out: refused checks become warnings, tau held at the floor
    code, out, err = run_cli(["calibrate", "--force", "--dry-run", "--target-fpr", "0.2", "--home", str(h)],
                             capsys, monkeypatch)
    assert code == 0 and "warning: " in err and "out of domain" in err, err
    assert "not saved" in out and f"-> {TAU_FLOOR:.3f}" in out and "FPR" in out and "TPR" in out, out


def test_in_scope_explanation_names_what_fired_and_which_request():
    from lethe.guard.detector import Detection

    weak = Detection(0.62, True, {"entity": 0.25, "similarity_raw": 0.8, "similarity": 0.42, "scorer": 0.3},
                     request_id=None, kind="privacy", matched=[{"component": "similarity", "request_id": "abc123"}])
    text = weak.explain()
    assert "strongest similarity=0.420" in text and "request abc123 (privacy)" in text
    strong = Detection(0.99, True, {"entity": 1.0}, request_id="r1", fired=["entity"])
    assert "fired: entity; request r1" in strong.explain()
    assert "fired" not in Detection(0.1, False, {"entity": 0.0}).explain()


# -- item 4 and 7: output and help ---------------------------------------------------------------

def test_first_export_is_quiet(tmp_path):
    """A first ``check`` against an empty cache (ONNX export included) prints no third-party
    warning or progress bar; --verbose would."""
    cache = tmp_path / "cache"
    cache.mkdir()
    shared = Path(os.environ.get("LETHE_CACHE") or Path.home() / ".cache" / "lethe")
    if (shared / "models").exists():
        (cache / "models").symlink_to(shared / "models")
    h = tmp_path / "h"
    f = jsonl(tmp_path / "f.jsonl", FORGET)
    code = ("import sys\nfrom lethe.cli.main import main\n"
            f"sys.argv = ['lethe', 'forget', 'add', '--file', {str(f)!r}, '--rewriter', 'rule', '--home', {str(h)!r}]\n"
            "main()\n")
    r = run_sub(code, {"LETHE_CACHE": str(cache)})
    assert r.returncode == 0, r.stderr
    assert r.stderr == "", r.stderr
    assert list((cache / "onnx").rglob("model.onnx"))


def test_third_party_output_only_under_verbose():
    code = ("import logging, warnings, sys\nfrom lethe.cli.main import configure_output\n"
            "configure_output(sys.argv[1] == 'verbose')\n"
            "logging.getLogger('torch.onnx').warning('THIRD-PARTY-LOG')\n"
            "logging.getLogger('lethe.guard').warning('LETHE-LOG')\n"
            "warnings.warn('THIRD-PARTY-WARNING', UserWarning)\n"
            "from lethe.backends.embeddings import quiet_third_party\n"
            "with quiet_third_party():\n    warnings.warn('DURING-EXPORT', UserWarning)\n")
    full = dict(os.environ, PYTHONPATH=str(SRC))
    full.pop("LETHE_VERBOSE", None)
    quiet = subprocess.run([sys.executable, "-c", code, "quiet"], capture_output=True, text=True, env=full)
    loud = subprocess.run([sys.executable, "-c", code, "verbose"], capture_output=True, text=True, env=full)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert "LETHE-LOG" in quiet.stderr
    assert not {"THIRD-PARTY-LOG", "THIRD-PARTY-WARNING", "DURING-EXPORT"} & set(re.findall(r"[A-Z-]{8,}", quiet.stderr))
    assert {"THIRD-PARTY-LOG", "LETHE-LOG", "THIRD-PARTY-WARNING", "DURING-EXPORT"} <= set(re.findall(r"[A-Z-]{8,}", loud.stderr))


def test_forget_list_empty_and_iso_times(tmp_path, home, capsys, monkeypatch):
    code, out, _ = run_cli(["forget", "list", "--home", str(tmp_path / "empty")], capsys, monkeypatch)
    assert code == 0 and out.startswith("no forget requests")
    code, out, _ = run_cli(["forget", "list", "--json", "--home", str(home)], capsys, monkeypatch)
    row = json.loads(out.splitlines()[0])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row["created_at"]) and row["revoked_at"] is None
    code, out, _ = run_cli(["forget", "list", "--home", str(home)], capsys, monkeypatch)
    assert row["created_at"] in out


def test_version(capsys, monkeypatch):
    import lethe

    code, out, _ = run_cli(["--version"], capsys, monkeypatch)
    assert code == 0 and out.strip() == f"lethe {lethe.__version__}"


def _walk(cmd, path: str):
    yield path, cmd
    for name, sub in getattr(cmd, "commands", {}).items():
        yield from _walk(sub, f"{path} {name}")


def test_help_is_one_style_everywhere():
    import typer

    root = typer.main.get_command(app)
    for name in LAZY_COMMANDS:
        root.commands[name] = load_lazy(name)
    homes = set()
    for path, cmd in _walk(root, "lethe"):
        assert (cmd.help or "").strip(), f"{path} has no description"
        for p in cmd.params:
            if p.name in ("help", "install_completion", "show_completion"):
                continue
            what = f"{path} {p.opts}"
            help_ = getattr(p, "help", None) or ""
            assert help_.strip(), f"{what} has no help"
            assert "(default" not in help_ and "[default" not in help_ and not re.search(r"\\\[[a-z-]+[:\]]", help_), \
                f"{what}: defaults go in show_default, not the text"
            if getattr(p, "param_type_name", "") == "option":
                assert help_[0].isupper() or help_[0] in "'\"-$<", f"{what}: help starts lower case"
            if "--home" in p.opts and path != "lethe demo":  # the demo runs in a throw-away home
                homes.add((p.envvar, p.help, p.show_default, p.metavar))
    assert len(homes) == 1, homes
    envvar, _, default, metavar = homes.pop()
    assert (envvar, default, metavar) == ("LETHE_HOME", "~/.lethe", "DIR")


@pytest.mark.model
def test_chat_without_guard_carries_no_detection_fields(home, capsys, monkeypatch):
    code, out, err = run_cli(["chat", "What is the capital of Japan?", "--no-guard", "--json", "--max-tokens", "4",
                              "--home", str(home)], capsys, monkeypatch)
    assert code == 0, err
    row = json.loads(out)
    assert row["guarded"] is False and isinstance(row["response"], str)
    assert not {"score", "triggered", "components", "policy", "reasoning"} & set(row)
    assert "Loading" not in err and "Warning" not in err
