"""The service against abuse and leaks: rate limits, audited admin refusals, upstream errors and load
errors without their text, bad Unicode as the client's error, fail-closed answers labelled.

Real parts: the real Guard (MiniLM detector, SQLite store) behind uvicorn, a real loopback
OpenAI-compatible upstream reached through lethe's ``openai`` backend, the official client.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from lethe.config import BackendConfig, GuardConfig
from lethe.serving import ServeSettings, create_app
from lethe.serving.auth import hash_key
from lethe.serving.ratelimit import Buckets, retry_after
from test_serving_support import ServerThread, echo_upstream

ADMIN = "lk-hardening-admin-key"
CLIENT_A, CLIENT_B = "lk-hardening-client-a", "lk-hardening-client-b"


@pytest.fixture(scope="module")
def upstream():
    with echo_upstream() as up:
        yield up


def _guard(home, upstream_url: str):
    from lethe import Guard

    cfg = GuardConfig(backend=BackendConfig(kind="openai", model="echo", base_url=upstream_url + "/v1", timeout_s=10))
    return Guard.open(home=home, config=cfg)


def _serve(tmp_path, upstream, **settings):
    home = tmp_path / "home"
    keys = tmp_path / "admin.keys"
    keys.write_text(hash_key(ADMIN) + "\n")
    st = ServeSettings(home=str(home), admin_key_file=str(keys), admin_key_env="LETHE_TEST_NO_SUCH_ENV",
                       client_keys_env="LETHE_TEST_NO_SUCH_ENV", default_rewriter="rule", **settings)
    guard = _guard(home, upstream.url)
    return ServerThread(create_app(guard, st)), guard, home


def _chat(url: str, key: str | None = None, content: str = "hello") -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": content}]},
                      headers=headers, timeout=30)


def test_buckets_refill_and_stay_bounded():
    now = [0.0]
    b = Buckets(per_minute=60, burst=2, max_entries=3, clock=lambda: now[0])
    assert b.take("a") == 0 and b.take("a") == 0
    wait = b.take("a")
    assert 0.9 < wait <= 1.0 and retry_after(wait) == "1"
    now[0] += 1.0
    assert b.take("a") == 0  # one request's worth refilled
    for k in "bcde":
        b.take(k)
    assert len(b._state) == 3 and "a" not in b._state  # least recently used dropped
    assert not Buckets(per_minute=0).enabled and Buckets(per_minute=0).take("x") == 0


def test_rate_limit_per_client_address(tmp_path, upstream):
    srv, _, _ = _serve(tmp_path, upstream, rate_limit_per_client=6, rate_limit_burst=3)
    with srv:
        codes = [_chat(srv.url).status_code for _ in range(3)]
        refused = _chat(srv.url)
        assert httpx.get(srv.url + "/healthz").status_code == 200  # health checks are never limited
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0, timeout=30)
        with pytest.raises(openai.RateLimitError):
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        metrics = httpx.get(srv.url + "/metrics").text
    assert codes == [200, 200, 200]
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert "client address" in refused.json()["error"]["message"]
    assert 'lethe_rate_limited_total{scope="client"} 2.0' in metrics


def test_rate_limit_per_key(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv("LETHE_TEST_CLIENT_KEYS", f"{CLIENT_A},{CLIENT_B}")
    home = tmp_path / "home"
    st = ServeSettings(home=str(home), client_keys_env="LETHE_TEST_CLIENT_KEYS", admin_key_env="LETHE_TEST_NO_SUCH",
                       rate_limit_per_key=6, rate_limit_burst=2)
    with ServerThread(create_app(_guard(home, upstream.url), st)) as srv:
        a = [_chat(srv.url, CLIENT_A).status_code for _ in range(3)]
        b = [_chat(srv.url, CLIENT_B).status_code for _ in range(2)]
        unknown = [_chat(srv.url, "lk-not-a-key").status_code for _ in range(4)]  # no bucket of its own
    assert a == [200, 200, 429] and b == [200, 200] and unknown == [401] * 4


def test_failed_admin_authentications_are_audited(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv("LETHE_TEST_CLIENT_KEYS", CLIENT_A)
    srv, _, home = _serve(tmp_path, upstream)
    srv.app = None
    with srv:
        bad = httpx.get(srv.url + "/admin/forget", headers={"Authorization": "Bearer lk-wrong"})
        missing = httpx.get(srv.url + "/admin/forget")
        ok = httpx.get(srv.url + "/admin/forget", headers={"Authorization": f"Bearer {ADMIN}"})
    assert (bad.status_code, missing.status_code, ok.status_code) == (401, 401, 200)
    text = (home / "audit.jsonl").read_text()
    entries = [json.loads(line) for line in text.splitlines() if json.loads(line)["action"] == "auth.admin"]
    assert [(e["outcome"], e["error"], e["status"]) for e in entries] == [
        ("denied", "invalid_api_key", 401), ("denied", "missing_api_key", 401)]
    assert entries[0]["actor"].startswith("key:") and entries[1]["actor"] == "anonymous"
    assert all(e["client"] == "127.0.0.1" for e in entries)
    assert "lk-wrong" not in text  # a fingerprint, never the key


def test_upstream_errors_carry_no_upstream_text(tmp_path, upstream):
    srv, _, _ = _serve(tmp_path, upstream)
    with srv:
        r = _chat(srv.url, content="please [[fail]]")
        s = httpx.post(srv.url + "/v1/chat/completions", timeout=30, json={
            "stream": True, "messages": [{"role": "user", "content": "please [[fail]]"}]})
    for resp in (r, s):
        body = resp.json()["error"]
        assert resp.status_code == 502 and body["code"] == "upstream_error"
        assert "asked to fail" not in body["message"] and "127.0.0.1" not in body["message"]
        assert body["message"].startswith("the upstream model failed (")
    assert "(HTTP 500;" in r.json()["error"]["message"]  # the status is a summary a client may see


def test_bad_unicode_is_the_clients_error(tmp_path, upstream):
    srv, _, _ = _serve(tmp_path, upstream)
    with srv:
        lone = b'{"messages": [{"role": "user", "content": "who is \\ud800 here?"}]}'
        r = httpx.post(srv.url + "/v1/chat/completions", content=lone, headers={"content-type": "application/json"})
        named = httpx.post(srv.url + "/v1/chat/completions", headers={"content-type": "application/json"}, content=(
            b'{"messages": [{"role": "user", "content": "hi", "name": "x\\udfff"}]}'))
        raw = httpx.post(srv.url + "/v1/chat/completions", headers={"content-type": "application/json"},
                         content=b'{"messages": [{"role": "user", "content": "caf\xe9 \xff"}]}')
        admin = httpx.post(srv.url + "/admin/forget", headers={"Authorization": f"Bearer {ADMIN}",
                                                               "content-type": "application/json"},
                           content=b'{"kind": "privacy", "prompts": ["Where does Jo \\ud800 live?"]}')
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_encoding"
    assert r.json()["error"]["param"] == "messages.0.content"
    assert named.status_code == 400 and named.json()["error"]["param"] == "messages.0"
    assert raw.status_code == 400, raw.text
    assert admin.status_code == 400 and admin.json()["error"]["code"] == "invalid_encoding", admin.text
    assert admin.json()["error"]["param"] == "prompts.0"


def test_fail_closed_answers_are_labelled(tmp_path, upstream, monkeypatch):
    srv, guard, _ = _serve(tmp_path, upstream)

    def broken(*a, **k):
        raise RuntimeError("detector exploded")

    monkeypatch.setattr(guard, "plan", broken)
    with srv:
        r = _chat(srv.url)
        s = httpx.post(srv.url + "/v1/chat/completions", timeout=30, json={
            "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    for resp in (r, s):
        assert resp.status_code == 200
        assert resp.headers["x-lethe-decision"] == "fail_closed" and resp.headers["x-lethe-fail-mode"] == "closed"
        assert resp.headers["x-lethe-triggered"] == "unknown"  # the guard decided nothing


def test_readyz_and_not_ready_errors_hold_no_internal_paths(tmp_path):
    secret = str(tmp_path / "internal" / "cache" / "model.onnx")

    def factory():
        raise OSError(f"Load model from {secret} failed: Protobuf parsing failed")

    app = create_app(factory, ServeSettings(home=str(tmp_path / "h")))
    with ServerThread(app) as srv:
        app.state.service.wait_loaded(30)
        ready = httpx.get(srv.url + "/readyz")
        chat = _chat(srv.url)
    assert ready.status_code == 503 and ready.json()["status"] == "error" and ready.json()["error"] == "OSError"
    assert chat.status_code == 503 and chat.json()["error"]["code"] == "not_ready"
    for text in (ready.text, chat.text):
        assert secret not in text and str(tmp_path) not in text and "Protobuf" not in text
