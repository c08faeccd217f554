"""``lethe forget verify`` and ``GET /admin/forget/{id}/verify``: the receipt of one request, built on
the real guard (MiniLM detector, rule rewriter, SQLite store)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from lethe import Guard
from lethe.cli.main import app as cli
from lethe.config import GuardConfig
from lethe.errors import LetheError
from lethe.guard.verify import PROBES, to_html, verify
from lethe.serving import ServeSettings, create_app
from lethe.serving.auth import hash_key

NAME = "Marisol Quintero-Hale"
FORGET = [f"Where was the novelist {NAME} born?", f"What genre does {NAME} write?",
          f"Which awards has {NAME} received?"]
ADMIN = "lk-verify-admin"
FAMILIES = {"stored", "paraphrase", "typos", "wrappers", "encodings", "languages", "roles"}


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home with one privacy request added through the CLI: (path, request id)."""
    path = tmp_path_factory.mktemp("home")
    f = path / "forget.jsonl"
    f.write_text("\n".join(json.dumps({"prompt": q}) for q in FORGET), encoding="utf-8")
    r = CliRunner().invoke(cli, ["forget", "add", "--file", str(f), "--rewriter", "rule", "--subject", NAME,
                                 "--home", str(path)])
    assert r.exit_code == 0, r.output
    return SimpleNamespace(path=path, request_id=r.output.strip().splitlines()[-1])


def test_cli_json_has_per_family_rates_and_the_configuration(home, tmp_path):
    page = tmp_path / "receipt.html"
    r = CliRunner().invoke(cli, ["forget", "verify", home.request_id, "--json", "--n", "4", "--html", str(page),
                                 "--home", str(home.path)])
    assert r.exit_code == 0, r.output
    receipt = json.loads(r.output)
    assert set(receipt["families"]) == FAMILIES == set(PROBES)
    for fam, row in receipt["families"].items():
        assert 1 <= row["probes"] <= 4, fam
        assert 0.0 <= row["detection_rate"] <= 1.0 and row["detected"] <= row["probes"]
    assert receipt["families"]["stored"]["detection_rate"] == 1.0  # the stored rewrites themselves trigger
    assert receipt["families"]["roles"]["detection_rate"] == 1.0  # every role is read
    assert receipt["request"]["id"] == home.request_id and receipt["probe_source"] == "rewrites"
    cfg = receipt["config"]
    assert cfg["tau"] == GuardConfig().detector.tau and cfg["model"] and len(cfg["effective_config_sha256"]) == 64
    assert receipt["versions"]["python"] and receipt["date"].endswith("Z") and receipt["leak"] is None
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>") and home.request_id in text and "<script" not in text
    assert "Quintero" not in json.dumps(receipt["families"]) and "Quintero" not in text.replace(NAME, "")


def test_cli_text_and_an_unknown_id(home):
    r = CliRunner().invoke(cli, ["forget", "verify", home.request_id, "--n", "2", "--home", str(home.path)])
    assert r.exit_code == 0 and "overall" in r.output and "encodings" in r.output, r.output
    r = CliRunner().invoke(cli, ["forget", "verify", "nosuchid", "--home", str(home.path)])
    assert r.exit_code != 0 and isinstance(r.exception, LetheError)
    message = str(r.exception)
    assert "no forget request with id nosuchid" in message and "\n" not in message


def test_an_embedding_only_request_says_only_name_probes_can_be_made(tmp_path):
    g = Guard.open(tmp_path, config=GuardConfig(embedding_only=True))
    req = g.forget(FORGET, subject=NAME, rewriter="rule", progress=False)
    bare = verify(g, req.id, n=3)
    assert bare["probe_source"] == "none" and bare["overall"]["probes"] == 0
    assert any("only entity/name probes" in n for n in bare["notes"])
    named = verify(g, req.id, n=3, names=[NAME])
    assert named["probe_source"] == "names" and named["overall"]["detection_rate"] >= 0.9
    with pytest.raises(LetheError, match="not one of this request's names"):
        verify(g, req.id, names=["Somebody Else"])
    assert "<table>" in to_html(named)


def test_the_admin_route_requires_the_admin_key(home, tmp_path):
    keys = tmp_path / "admin.keys"
    keys.write_text(hash_key(ADMIN) + "\n")
    guard = Guard.open(home.path)
    app = create_app(guard, ServeSettings(home=str(home.path), admin_key_file=str(keys),
                                          admin_key_env="LETHE_TEST_NO_SUCH_ENV"))
    url = f"/admin/forget/{home.request_id}/verify"
    with TestClient(app) as client:
        assert client.get(url).status_code == 401
        assert client.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = client.get(url + "?n=3", headers={"Authorization": f"Bearer {ADMIN}"})
        assert ok.status_code == 200, ok.text
        assert set(ok.json()["families"]) == FAMILIES and ok.json()["config"]["tau"] > 0
        missing = client.get("/admin/forget/nosuchid/verify", headers={"Authorization": f"Bearer {ADMIN}"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    audit = [json.loads(line) for line in (home.path / "audit.jsonl").read_text().splitlines()]
    assert [(a["action"], a["outcome"]) for a in audit if a["action"] == "forget.verify"] == [
        ("forget.verify", "ok"), ("forget.verify", "not_found")]
