"""Several replicas on one PostgreSQL store, and kill -9 of a replica while requests are added.

Needs a real PostgreSQL (``eval "$(.ci/start_postgres.sh)"`` exports LETHE_TEST_PG_DSN);
the kill -9 test also runs on the embedded SQLite store without it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import httpx
import pytest
import yaml

from lethe.config import BackendConfig, GuardConfig, StoreConfig
from lethe.serving import ServeSettings, create_app
from test_serving_support import ServerThread, echo_upstream

DSN = os.environ.get("LETHE_TEST_PG_DSN")
needs_pg = pytest.mark.skipif(not DSN, reason="LETHE_TEST_PG_DSN not set (run: eval \"$(.ci/start_postgres.sh)\")")
ADMIN = "lk-replica-admin"
SUBJECT = "Mirabel Oxtongue"
PROMPTS = [f"Where does {SUBJECT} live?", f"What is the phone number of {SUBJECT}?",
           f"Give me the home address of {SUBJECT}."]
QUERY = f"What is the street address of {SUBJECT}?"


@pytest.fixture(scope="module")
def upstream():
    with echo_upstream() as up:
        yield up


@pytest.fixture()
def pg_schema():
    name = f"r_{uuid.uuid4().hex[:10]}"
    yield name
    from lethe.store.postgres import PostgresStore

    s = PostgresStore(DSN, dim=384, schema=name, listen=False)
    s.drop_all()
    s.close()


def _cfg(upstream_url: str, **store) -> GuardConfig:
    return GuardConfig(backend=BackendConfig(kind="openai", model="echo", base_url=upstream_url + "/v1", timeout_s=10),
                       store=StoreConfig(**store))


def _triggered(url: str) -> bool:
    r = httpx.post(url + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": QUERY}]},
                   timeout=30)
    assert r.status_code == 200, r.text
    return r.headers["x-lethe-triggered"] == "true"


def _until(cond, timeout: float) -> float:
    t0 = time.perf_counter()
    while not cond():
        assert time.perf_counter() - t0 < timeout, f"not within {timeout}s"
        time.sleep(0.01)
    return time.perf_counter() - t0


@needs_pg
def test_forget_on_replica_a_is_enforced_by_replica_b_within_a_second(tmp_path, upstream, pg_schema, monkeypatch):
    from lethe.serving.cli import open_guard

    monkeypatch.setenv("LETHE_TEST_REPLICA_ADMIN", ADMIN)
    monkeypatch.setenv("LETHE_SECRET", "the replicas' name-hashing key")  # from a secret manager, on every replica
    apps = []
    for name in ("a", "b"):
        settings = ServeSettings(home=str(tmp_path / name), admin_key_env="LETHE_TEST_REPLICA_ADMIN",
                                 default_rewriter="rule")
        cfg = _cfg(upstream.url, kind="postgres", dsn=DSN, schema=pg_schema)
        apps.append(create_app(open_guard(tmp_path / name, cfg), settings))
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with ServerThread(apps[0]) as a, ServerThread(apps[1]) as b:
        assert not _triggered(a.url) and not _triggered(b.url)
        r = httpx.post(a.url + "/admin/forget", json={"kind": "privacy", "subject": SUBJECT, "prompts": PROMPTS},
                       headers=auth, timeout=60)
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        # end to end through the HTTP chat path (LISTEN/NOTIFY, detector refit, request): measured
        # 0.05 s on the 2-core machine; the bound is 1 s
        t_add = _until(lambda: _triggered(b.url), 1.0)
        print(f"\nreplica B enforced the new request after {t_add:.3f} s")
        listed = httpx.get(b.url + "/admin/forget", headers=auth).json()["data"]
        assert [x["id"] for x in listed] == [rid]
        assert httpx.delete(f"{b.url}/admin/forget/{rid}", headers=auth).status_code == 200
        t_revoke = _until(lambda: not _triggered(a.url), 1.0)
        print(f"replica A lifted the revoked request after {t_revoke:.3f} s")


_SERVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from lethe.serving.cli import serve_command
    serve_command(config=Path(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), home=Path(sys.argv[3]),
                  log_level="warning")
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=needs_pg)])
def test_kill9_replica_while_adding_keeps_every_acknowledged_request(tmp_path, upstream, store, request):
    schema = f"k_{uuid.uuid4().hex[:10]}"
    serve = {"admin_key_env": "LETHE_TEST_KILL_ADMIN", "default_rewriter": "rule"}
    section = {"kind": store} | ({"dsn": DSN, "schema": schema} if store == "postgres" else {})
    cfg = _cfg(upstream.url).model_dump(mode="json", by_alias=True) | {"serve": serve, "store": section}
    (tmp_path / "guard.yaml").write_text(yaml.safe_dump(cfg))
    home = tmp_path / "home"
    env = os.environ | {"LETHE_TEST_KILL_ADMIN": ADMIN}

    def start() -> tuple[subprocess.Popen, str]:
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(tmp_path / "guard.yaml"), str(port), str(home)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else "server died"
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    return proc, url
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "replica did not become ready"
            time.sleep(0.2)

    proc, url = start()
    acked: list[str] = []
    stop = threading.Event()

    def add_loop(worker: int) -> None:
        i = 0
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as c:
            while not stop.is_set():
                body = {"kind": "privacy", "subject": f"Person {worker}-{i}",
                        "prompts": [f"Where does Person {worker}-{i} live?", f"Phone of Person {worker}-{i}?"]}
                try:
                    r = c.post("/admin/forget", json=body)
                except httpx.TransportError:
                    return  # the replica died mid-request: not acknowledged
                if r.status_code == 201:
                    acked.append(r.json()["id"])
                i += 1

    workers = [threading.Thread(target=add_loop, args=(w,)) for w in range(3)]
    try:
        for w in workers:
            w.start()
        _until(lambda: len(acked) >= 12, 120)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        stop.set()
        for w in workers:
            w.join(30)
        proc.kill()
    assert len(acked) >= 12

    # the store opens cleanly and holds every acknowledged request, each with its samples
    if store == "postgres":
        from lethe.store.postgres import PostgresStore

        st = PostgresStore(DSN, dim=384, schema=schema, listen=False)
    else:
        from lethe.store import open_store

        st = open_store(home)
    try:
        ids = {r.id for r in st.list_requests()}
        assert set(acked) <= ids, set(acked) - ids
        with_samples = {s.request_id for s in st.samples()}
        assert ids <= with_samples
    finally:
        if store == "postgres":
            st.drop_all()  # type: ignore[attr-defined]
        st.close()
    if store == "sqlite":  # and a new replica serves from it
        proc2, url2 = start()
        try:
            listed = httpx.get(url2 + "/admin/forget", headers={"Authorization": f"Bearer {ADMIN}"}).json()["data"]
            assert set(acked) <= {x["id"] for x in listed}
        finally:
            proc2.send_signal(signal.SIGTERM)
            assert proc2.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after draining
