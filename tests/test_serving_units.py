"""Serving pieces that need no server: keys, settings, the CLI entry point."""

from __future__ import annotations

import hashlib

import pytest
import typer
from typer.testing import CliRunner

from lethe.config import load_config
from lethe.errors import ConfigError
from lethe.serving.auth import KeySet, bearer, fingerprint, hash_key, new_key
from lethe.serving.cli import serve_command
from lethe.serving.settings import ServeSettings, with_overrides


def test_keys_env_and_hashed_file(tmp_path, monkeypatch):
    monkeypatch.setenv("K_ENV", "alpha")
    monkeypatch.setenv("K_LIST", "one, two ,,")
    f = tmp_path / "keys"
    f.write_text(f"# comment\n{hash_key('beta')}\n\n")
    ks = KeySet.from_sources("K_ENV", str(f))
    assert ks.enabled and ks.check("alpha") and ks.check("beta") and not ks.check("gamma") and not ks.check("")
    lst = KeySet.from_sources("K_LIST", split=True)
    assert lst.check("one") and lst.check("two") and not lst.check("")
    assert not KeySet.from_sources("K_UNSET_XYZ").enabled
    assert "beta" not in f.read_text() and hash_key("beta").endswith(hashlib.sha256(b"beta").hexdigest())
    f.write_text("md5:abc\n")
    with pytest.raises(ConfigError, match="sha256"):
        KeySet.from_sources(None, str(f))
    with pytest.raises(ConfigError, match="not found"):
        KeySet.from_sources(None, str(tmp_path / "missing"))
    assert new_key() != new_key() and fingerprint("x") == fingerprint("x") and "x" not in fingerprint("x")[4:5]


def test_bearer_parsing():
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer(None) is None and bearer("Basic abc") is None and bearer("Bearer ") is None


def test_settings_from_the_serve_section(tmp_path):
    p = tmp_path / "guard.yaml"
    p.write_text("backend: {kind: openai}\nserve:\n  port: 9000\n  fail_mode: open\n  store: postgres\n")
    cfg = load_config(path=p)
    s = with_overrides(cfg.serve, host="0.0.0.0", port=None)
    assert isinstance(s, ServeSettings)
    # serve.store is the deprecated spelling of store.kind
    assert (s.port, s.fail_mode, cfg.store.kind, s.host) == (9000, "open", "postgres", "0.0.0.0")
    assert load_config(path=tmp_path / "none.yaml", missing_ok=True).serve.port == 8000
    p.write_text("serve:\n  fail_mode: sideways\n")
    with pytest.raises(ConfigError, match="serve.fail_mode"):
        load_config(path=p)
    with pytest.raises(ConfigError, match="serve.port"):
        with_overrides(cfg.serve, port=70000)


def test_serve_command_is_a_typer_command(tmp_path):
    app = typer.Typer()
    app.command("serve")(serve_command)
    app.command("other")(lambda: None)
    res = CliRunner().invoke(app, ["serve", "--help"])
    assert res.exit_code == 0
    for opt in ("--config", "--host", "--port", "--home"):
        assert opt in res.output
    res = CliRunner().invoke(app, ["serve", "--config", str(tmp_path / "missing.yaml"), "--home", str(tmp_path)])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)


def test_bench_proxy_latency_schedule_pairs_every_prompt_once_per_arm():
    """Regression: an off-by-two schedule once left proxy[0:2] at 0 s and biased added p50 down."""
    import importlib.util
    from collections import Counter
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_proxy.py"
    spec = importlib.util.spec_from_file_location("bench_proxy", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for n in (2, 5, 24):
        sched = mod._latency_schedule(n)
        assert Counter(sched) == Counter([("direct", k) for k in range(n)] + [("proxy", k) for k in range(n)])
        assert all(a[1] != b[1] for a, b in zip(sched, sched[1:], strict=False))
