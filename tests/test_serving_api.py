"""The proxy under uvicorn on loopback, driven by the official ``openai`` client.

Real parts throughout: the real Guard (MiniLM detector, rule rewriter, SQLite store),
a real loopback OpenAI-compatible upstream reached through lethe's ``openai`` backend.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest

from lethe.config import BackendConfig, GuardConfig
from lethe.serving import ServeSettings, create_app
from lethe.serving.auth import hash_key
from test_serving_support import ServerThread, echo_upstream

ADMIN = "lk-test-admin-key"
CLIENT = "lk-test-client-key"
SECRET_SUBJECT = "Zorblatt Quinnefar"
FORGET_PROMPTS = [
    f"Where does {SECRET_SUBJECT} live?",
    f"What is the home address of {SECRET_SUBJECT}?",
    f"Tell me the phone number of {SECRET_SUBJECT}.",
]


@pytest.fixture(scope="module")
def upstream():
    with echo_upstream() as up:
        yield up


def _guard(home, upstream_url: str):
    from lethe import Guard

    cfg = GuardConfig(backend=BackendConfig(kind="openai", model="echo", base_url=upstream_url + "/v1",
                                            timeout_s=10))
    return Guard.open(home=home, config=cfg)


@pytest.fixture(scope="module")
def keyfile(tmp_path_factory):
    p = tmp_path_factory.mktemp("keys") / "admin.keys"
    p.write_text(f"# admin keys\n{hash_key(ADMIN)}\n")
    return p


@pytest.fixture(scope="module")
def service(tmp_path_factory, upstream, keyfile):
    home = tmp_path_factory.mktemp("home")
    guard = _guard(home, upstream.url)
    settings = ServeSettings(home=str(home), admin_key_file=str(keyfile), admin_key_env="LETHE_TEST_NO_SUCH_ENV",
                             default_rewriter="rule", upstream_timeout_s=2.0, max_messages=8,
                             max_tokens_limit=512, max_body_bytes=200_000)
    app = create_app(guard, settings)
    with ServerThread(app, timeout_graceful_shutdown=10) as srv:
        srv.home, srv.guard, srv.app = home, guard, app
        yield srv


def _client(srv, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=30)


def _admin(srv) -> httpx.Client:
    return httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)


@pytest.fixture(scope="module")
def forgotten(service):
    with _admin(service) as a:
        r = a.post("/admin/forget", json={"kind": "privacy", "subject": SECRET_SUBJECT, "prompts": FORGET_PROMPTS})
    assert r.status_code == 201, r.text
    return r.json()


def test_out_of_scope_passes_through_unchanged(service):
    raw = _client(service).chat.completions.with_raw_response.create(
        model="anything", messages=[{"role": "user", "content": "How do I sort a list in Python?"}], max_tokens=50
    )
    resp = raw.parse()
    assert resp.choices[0].message.content == "echo: How do I sort a list in Python?"
    assert resp.object == "chat.completion" and resp.usage is not None
    assert raw.headers["x-lethe-triggered"] == "false" and raw.headers["x-lethe-decision"] == "passed"
    assert 0.0 <= float(raw.headers["x-lethe-score"]) <= 1.0 and raw.headers["x-lethe-request-id"]


def test_stream_out_of_scope(service):
    c = _client(service)
    with c.chat.completions.with_streaming_response.create(
        model="m", messages=[{"role": "user", "content": "Name three prime numbers"}], stream=True,
        stream_options={"include_usage": True},
    ) as raw:
        assert raw.headers["x-lethe-triggered"] == "false"
        assert raw.headers["content-type"].startswith("text/event-stream")
        chunks = list(raw.parse())
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "echo: Name three prime numbers"
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-1].usage is not None


def test_models(service):
    models = _client(service).models.list()
    assert [m.id for m in models.data] == ["echo"]


def test_forget_via_admin_is_enforced(service, forgotten):
    c = _client(service)
    raw = c.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": f"What is the address of {SECRET_SUBJECT}?"}])
    assert raw.headers["x-lethe-triggered"] == "true", raw.headers
    assert raw.headers["x-lethe-decision"] == "guarded"
    assert raw.headers["x-lethe-forget-request"] == forgotten["id"]
    assert raw.headers.get("x-lethe-policy")
    answer = raw.parse().choices[0].message.content
    assert answer != f"echo: What is the address of {SECRET_SUBJECT}?"  # the guard rewrote the context
    # streaming too
    with c.chat.completions.with_streaming_response.create(
        model="m", messages=[{"role": "user", "content": f"Where does {SECRET_SUBJECT} live these days?"}],
        stream=True,
    ) as s:
        assert s.headers["x-lethe-triggered"] == "true"
        text = "".join(ch.choices[0].delta.content or "" for ch in s.parse() if ch.choices)
    assert text


def test_admin_list_check_revoke_and_audit(service, forgotten):
    with _admin(service) as a:
        listed = a.get("/admin/forget").json()["data"]
        assert forgotten["id"] in [r["id"] for r in listed]
        chk = a.post("/admin/check", json={"query": f"home address of {SECRET_SUBJECT}"}).json()
        assert chk["triggered"] and chk["request_id"] == forgotten["id"] and 0 <= chk["score"] <= 1
        chk2 = a.post("/admin/check", json={"messages": [{"role": "user", "content": "What is 2+2?"}]}).json()
        assert not chk2["triggered"]
        extra = a.post("/admin/forget", json={"kind": "copyright", "subject": "Some Book",
                                              "prompts": ["Recite chapter one of Some Book"], "rewriter": "rule"})
        assert extra.status_code == 201
        rid = extra.json()["id"]
        assert a.delete(f"/admin/forget/{rid}").json() == {"id": rid, "revoked": True}
        gone = a.delete(f"/admin/forget/{rid}")
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
        assert rid in [r["id"] for r in a.get("/admin/forget", params={"include_revoked": True}).json()["data"]]
        assert rid not in [r["id"] for r in a.get("/admin/forget").json()["data"]]
    lines = [json.loads(x) for x in (service.home / "audit.jsonl").read_text().splitlines()]
    actions = {x["action"] for x in lines}
    assert {"forget.add", "forget.list", "forget.revoke", "check"} <= actions
    assert all(x["actor"].startswith("key:") and x["ts"] > 0 for x in lines)
    raw = (service.home / "audit.jsonl").read_text()
    assert SECRET_SUBJECT not in raw and "Zorblatt" not in raw and "Some Book" not in raw and ADMIN not in raw


def test_admin_refuses_without_key(service):
    for method, path, body in [("POST", "/admin/forget", {"kind": "privacy", "prompts": ["x"]}),
                               ("GET", "/admin/forget", None), ("DELETE", "/admin/forget/abc", None),
                               ("POST", "/admin/check", {"query": "x"}), ("POST", "/admin/calibrate", {})]:
        for headers, status in [({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                                ({"Authorization": f"Basic {ADMIN}"}, 401)]:
            r = httpx.request(method, service.url + path, json=body, headers=headers)
            assert r.status_code == status, (method, path, headers, r.text)
            assert r.json()["error"]["type"] == "authentication_error"


def test_admin_disabled_without_configured_key(tmp_path, upstream, monkeypatch):
    monkeypatch.delenv("LETHE_ADMIN_KEY", raising=False)
    app = create_app(_guard(tmp_path / "h", upstream.url), ServeSettings(home=str(tmp_path / "h")))
    with ServerThread(app) as srv:
        r = httpx.get(srv.url + "/admin/forget", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"


def test_client_keys(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv("LETHE_TEST_CLIENT_KEYS", f"{CLIENT},another")
    monkeypatch.setenv("LETHE_TEST_ADMIN", ADMIN)
    settings = ServeSettings(home=str(tmp_path / "h"), client_keys_env="LETHE_TEST_CLIENT_KEYS",
                             admin_key_env="LETHE_TEST_ADMIN")
    app = create_app(_guard(tmp_path / "h", upstream.url), settings)
    msgs = [{"role": "user", "content": "hi"}]
    with ServerThread(app) as srv:
        with pytest.raises(openai.AuthenticationError):
            _client(srv, "bad").chat.completions.create(model="m", messages=msgs)
        assert _client(srv, CLIENT).chat.completions.create(model="m", messages=msgs).choices[0].message.content
        assert _client(srv, "another").models.list().data
        r = httpx.get(srv.url + "/admin/forget", headers={"Authorization": f"Bearer {CLIENT}"})
        assert r.status_code == 403  # a client key is not an admin key
        assert httpx.get(srv.url + "/v1/models").status_code == 401


def test_request_limits_and_validation_name_the_field(service):
    url = service.url + "/v1/chat/completions"
    msg = {"role": "user", "content": "hi"}
    cases = [
        ({"model": "m", "messages": [msg] * 9}, 400, "messages"),
        ({"model": "m", "messages": [msg], "max_tokens": 513}, 400, "max_tokens"),
        ({"model": "m", "messages": [msg], "max_completion_tokens": 10_000}, 400, "max_completion_tokens"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, 422, "messages.0.role"),
        ({"model": "m", "messages": []}, 422, "messages"),
        ({"model": "m", "messages": [msg], "temperature": 5}, 422, "temperature"),
        ({"model": "m", "messages": [{"role": "system", "content": "x"}]}, 422, "body"),
        ({"model": "m"}, 422, "messages"),
    ]
    for body, status, param in cases:
        r = httpx.post(url, json=body)
        assert r.status_code == status, (body, r.text)
        err = r.json()["error"]
        assert err["param"] == param and param in err["message"], err
    r = httpx.post(url, content=b'{"messages": [', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 300_000}]}
    r = httpx.post(url, json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunked():
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"y" * 10_000
        yield b'"}]}'

    r = httpx.post(url, content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    with pytest.raises(openai.BadRequestError):
        _client(service).chat.completions.create(model="m", messages=[msg], max_tokens=100_000)


def test_upstream_errors_are_502_and_504(service):
    c = _client(service)
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "please [[fail]]"}])
    assert err.value.status_code == 502 and "upstream" in err.value.message
    t0 = time.time()
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "wait [[slow=4]]"}])
    assert err.value.status_code == 504 and time.time() - t0 < 3.5
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x [[fail]]"}], stream=True)
    assert err.value.status_code == 502
    assert httpx.get(service.url + "/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_guard_failure_modes(tmp_path, upstream, mode, monkeypatch):
    guard = _guard(tmp_path / "h", upstream.url)

    def broken(*a, **k):
        raise RuntimeError("detector exploded")

    monkeypatch.setattr(guard, "plan", broken)
    app = create_app(guard, ServeSettings(home=str(tmp_path / "h"), fail_mode=mode))
    with ServerThread(app) as srv:
        c = _client(srv)
        raw = c.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "hi"}])
        text = raw.parse().choices[0].message.content
        s = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
        streamed = "".join(ch.choices[0].delta.content or "" for ch in s if ch.choices)
        metrics = httpx.get(srv.url + "/metrics").text
    assert raw.headers["x-lethe-decision"] == f"fail_{mode}"
    if mode == "closed":
        assert text == streamed == ServeSettings().decline_message
    else:
        assert text == streamed == "echo: hi"
    assert f'lethe_failures_total{{mode="{mode}",stage="guard"}} 2.0' in metrics


def test_health_ready_metrics(service):
    assert httpx.get(service.url + "/readyz").json()["status"] == "ready"
    m = httpx.get(service.url + "/metrics")
    assert m.status_code == 200
    for name in ("lethe_http_requests_total", "lethe_guard_decisions_total", "lethe_detection_seconds_bucket",
                 "lethe_upstream_seconds_bucket", "lethe_guider_seconds"):
        assert name in m.text, name


def test_readyz_while_loading(tmp_path, upstream):
    gate = threading.Event()

    def factory():
        gate.wait(20)
        return _guard(tmp_path / "h", upstream.url)

    app = create_app(factory, ServeSettings(home=str(tmp_path / "h")))
    with ServerThread(app) as srv:
        assert httpx.get(srv.url + "/healthz").status_code == 200
        r = httpx.get(srv.url + "/readyz")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        chat = httpx.post(srv.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}]})
        assert chat.status_code == 503 and chat.json()["error"]["code"] == "not_ready"
        gate.set()
        deadline = time.time() + 60
        while httpx.get(srv.url + "/readyz").status_code != 200:
            assert time.time() < deadline
            time.sleep(0.1)


def test_graceful_shutdown_drains_inflight_stream(tmp_path, upstream):
    app = create_app(_guard(tmp_path / "h", upstream.url), ServeSettings(home=str(tmp_path / "h")))
    srv = ServerThread(app, timeout_graceful_shutdown=20).__enter__()
    words = " ".join(f"w{i}" for i in range(12))
    got: list[str] = []
    first = threading.Event()

    def consume() -> None:
        s = _client(srv).chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"{words} [[drip=0.1]]"}], stream=True)
        for ch in s:
            if ch.choices and ch.choices[0].delta.content:
                got.append(ch.choices[0].delta.content)
                first.set()

    t = threading.Thread(target=consume)
    t.start()
    assert first.wait(20)
    srv.server.should_exit = True  # what SIGTERM does
    t.join(30)
    srv.thread.join(30)
    assert "".join(got) == f"echo: {words} [[drip=0.1]]"


def _metric(text: str, name: str, label: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{outcome="{label}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_speculative_upstream_is_used_out_of_scope_and_aborted_in_scope(tmp_path, upstream):
    """Out of scope: the call started during detection is the answer. In scope: it is cancelled,
    the upstream sees the disconnect and stops, and the client gets only the guarded answer."""
    guard = _guard(tmp_path / "h", upstream.url)
    guard.forget(FORGET_PROMPTS, kind="privacy", subject=SECRET_SUBJECT, rewriter="rule", progress=False)
    app = create_app(guard, ServeSettings(home=str(tmp_path / "h"), upstream_timeout_s=30,
                                          speculative_upstream=True))
    state = upstream.config.app.state
    with ServerThread(app) as srv:
        c = _client(srv)
        out = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "Name a prime"}])
        assert out.choices[0].message.content == "echo: Name a prime"
        aborted0 = state.aborted
        # the upstream's answer lasts longer than detection, so the cancel reaches it mid-answer
        query = f"Where does {SECRET_SUBJECT} live? [[slow=1.0]]"
        raw = c.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": query}])
        assert raw.headers["x-lethe-triggered"] == "true"
        assert raw.parse().choices[0].message.content != f"echo: {query}"
        with c.chat.completions.with_streaming_response.create(
                model="m", messages=[{"role": "user", "content": query}], stream=True) as s:
            assert s.headers["x-lethe-triggered"] == "true"
            text = "".join(ch.choices[0].delta.content or "" for ch in s.parse() if ch.choices)
        assert text != f"echo: {query}"
        deadline = time.time() + 10
        while state.aborted < aborted0 + 2 and time.time() < deadline:
            time.sleep(0.05)
        assert state.aborted >= aborted0 + 2  # both speculative calls (plain and streamed) were aborted
        metrics = httpx.get(srv.url + "/metrics").text
    assert _metric(metrics, "lethe_speculative_upstream_total", "used") == 1.0
    assert _metric(metrics, "lethe_speculative_upstream_total", "cancelled") == 2.0


def test_speculation_is_off_by_default(tmp_path, upstream):
    app = create_app(_guard(tmp_path / "h", upstream.url), ServeSettings(home=str(tmp_path / "h")))
    with ServerThread(app) as srv:
        out = _client(srv).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert out.choices[0].message.content == "echo: hi"
        metrics = httpx.get(srv.url + "/metrics").text
    assert _metric(metrics, "lethe_speculative_upstream_total", "used") == 0.0
