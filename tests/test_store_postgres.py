"""PostgreSQL store against a real server (``.ci/start_postgres.sh`` exports LETHE_TEST_PG_DSN)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from lethe.errors import StoreError
from lethe.store.base import STORES, ForgetRequest, NegativeSample
from lethe.store.keys import KeySource

DSN = os.environ.get("LETHE_TEST_PG_DSN")
pytestmark = pytest.mark.skipif(
    not DSN, reason="LETHE_TEST_PG_DSN not set (run: eval \"$(.ci/start_postgres.sh)\")"
)
DIM = 16


@pytest.fixture()
def schema():
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    from lethe.store.postgres import PostgresStore

    s = PostgresStore(DSN, dim=DIM, schema=name, listen=False)
    s.drop_all()
    s.close()


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _request(seed: int, n: int = 3, hard: int = 1) -> tuple[ForgetRequest, list[NegativeSample]]:
    req = ForgetRequest(kind="privacy", subject=f"s{seed}", n_prompts=n, entities=[{"h": f"x{seed}"}])
    samples = [NegativeSample(request_id="", embedding=_vec(seed * 100 + i), text=f"rewrite {seed}.{i}")
               for i in range(n)]
    samples += [NegativeSample(request_id="", embedding=_vec(seed * 100 + 50 + i), role="hard_negative")
                for i in range(hard)]
    return req, samples


def _wait(cond, timeout: float) -> float:
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.005)
    return time.perf_counter() - t0


def test_registered_and_roundtrip(schema, tmp_path):
    from lethe.store.postgres import PostgresStore

    assert STORES.get("postgres") is PostgresStore
    key = KeySource(env=None, file=tmp_path / "store.key")
    s = PostgresStore(DSN, dim=DIM, schema=schema, key=key)
    try:
        assert s.schema_version() == 3 and s.ping()
        req, samples = _request(1)
        assert s.add_request(req, samples) == req.id
        got = s.get_request(req.id)
        assert got is not None and got.kind == "privacy" and got.entities == [{"h": "x1"}] and got.live
        assert [r.id for r in s.list_requests()] == [req.id]
        assert len(s.samples()) == 4 and all(x.request_id == req.id for x in s.samples())
        hits = s.search(samples[0].embedding[None], k=3)[0]
        assert hits[0].sample.text == "rewrite 1.0" and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert all(h.sample.role != "hard_negative" for h in hits)
        v0 = s.version()
        with pytest.raises(StoreError):
            s.add_request(req, [])  # duplicate id
        assert s.revoke(req.id) and not s.revoke(req.id) and not s.revoke("nope")
        assert s.version() > v0
        assert s.search(samples[0].embedding[None], k=3) == [[]]
        assert s.list_requests() == [] and len(s.list_requests(include_revoked=True)) == 1
        secret = s.secret()
    finally:
        s.close()
    again = PostgresStore(DSN, dim=DIM, schema=schema, listen=False, key=key)  # migrations are idempotent
    try:
        assert again.secret() == secret and again.schema_version() == 3
        # the key lives in the key file (owner-only), never in the database
        assert (tmp_path / "store.key").stat().st_mode & 0o777 == 0o600
        assert {r[0] for r in again._read("SELECT key FROM {s}.meta")} == {"dim", "key_check"}
        assert again.get_request(req.id).revoked_at is not None  # type: ignore[union-attr]
    finally:
        again.close()
    with pytest.raises(StoreError, match="16-d"):
        PostgresStore(DSN, dim=DIM + 1, schema=schema, listen=False)


def test_concurrent_first_open_runs_migrations_once(schema, tmp_path):
    from lethe.store.postgres import PostgresStore

    stores, errors = [], []
    key = KeySource(env=None, file=tmp_path / "store.key")

    def open_one() -> None:
        try:
            stores.append(PostgresStore(DSN, dim=DIM, schema=schema, listen=False, key=key))
        except Exception as exc:  # pragma: no cover - the assertion reports it
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(stores) == 4
    assert len({s.secret() for s in stores}) == 1  # one key file, created once
    rows = stores[0]._read("SELECT version FROM {s}.migrations ORDER BY version")
    assert [r[0] for r in rows] == [1, 2, 3]
    for s in stores:
        s.close()


def test_two_replicas_see_adds_and_revokes_within_one_second(schema):
    from lethe.store.postgres import PostgresStore

    a = PostgresStore(DSN, dim=DIM, schema=schema)
    b = PostgresStore(DSN, dim=DIM, schema=schema)
    events: list[int] = []
    b.subscribe(lambda: events.append(1))
    try:
        for seed in range(5):
            req, samples = _request(seed + 10)
            a.add_request(req, samples)
            q = samples[1].embedding[None]
            dt = _wait(lambda q=q: bool(b.search(q, k=1)[0]), 1.0)
            assert dt < 1.0
            assert b.search(q, k=1)[0][0].sample.request_id == req.id
            assert b.get_request(req.id) is not None
            b.revoke(req.id)  # and back the other way
            _wait(lambda q=q: not a.search(q, k=1)[0], 1.0)
        assert events, "subscribers are told about remote changes"
    finally:
        a.close()
        b.close()


def test_reconcile_catches_missed_notifications(schema):
    from lethe.store.postgres import PostgresStore

    a = PostgresStore(DSN, dim=DIM, schema=schema)
    deaf = PostgresStore(DSN, dim=DIM, schema=schema, listen=False)
    try:
        req, samples = _request(3)
        a.add_request(req, samples)
        assert deaf.search(samples[0].embedding[None], k=1) == [[]]
        assert deaf.reconcile()
        assert deaf.search(samples[0].embedding[None], k=1)[0][0].sample.request_id == req.id
        a.revoke(req.id)
        assert deaf.reconcile() and deaf.search(samples[0].embedding[None], k=1) == [[]]
    finally:
        a.close()
        deaf.close()


def test_missing_dsn_and_bad_schema_are_one_line_errors(monkeypatch):
    from lethe.store.postgres import PostgresStore

    monkeypatch.delenv("LETHE_STORE_DSN", raising=False)
    with pytest.raises(StoreError, match="needs a DSN"):
        PostgresStore(None, dim=DIM)
    with pytest.raises(StoreError, match="schema name"):
        PostgresStore(DSN, dim=DIM, schema="Robert'); DROP")
    with pytest.raises(StoreError, match="cannot connect"):
        PostgresStore("postgresql://nobody@127.0.0.1:1/none", dim=DIM)


_WRITER = r"""
import sys, numpy as np
from lethe.store.postgres import PostgresStore
from lethe.store.base import ForgetRequest, NegativeSample
s = PostgresStore(sys.argv[1], dim=int(sys.argv[3]), schema=sys.argv[2])
rng = np.random.default_rng(0)
i = 0
while True:
    req = ForgetRequest(kind="copyright", subject=f"w{i}", n_prompts=8)
    v = rng.normal(size=(8, s.dim)).astype(np.float32)
    s.add_request(req, [NegativeSample(request_id="", embedding=x / np.linalg.norm(x), text="r") for x in v])
    print(req.id, flush=True)  # acknowledged: the transaction has committed
    i += 1
"""


def test_kill9_while_adding_loses_no_acknowledged_request(schema):
    from lethe.store.postgres import PostgresStore

    proc = subprocess.Popen([sys.executable, "-c", _WRITER, DSN, schema, str(DIM)],
                            stdout=subprocess.PIPE, text=True)
    acked: list[str] = []
    assert proc.stdout is not None
    try:
        while len(acked) < 40:
            line = proc.stdout.readline()
            assert line, "writer died early"
            acked.append(line.strip())
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: the next add is in flight
        rest = proc.stdout.read()  # anything printed before the kill was acknowledged too
        acked += [x for x in rest.split() if x]
    finally:
        proc.kill()
        proc.wait()
    s = PostgresStore(DSN, dim=DIM, schema=schema, listen=False)
    try:
        ids = {r.id for r in s.list_requests()}
        assert set(acked) <= ids
        per_req: dict[str, int] = {}
        for x in s.samples():
            per_req[x.request_id] = per_req.get(x.request_id, 0) + 1
        assert set(per_req) == ids and set(per_req.values()) == {8}  # no half-written request
        assert len(s.search(np.ones((1, DIM), dtype=np.float32) / np.sqrt(DIM), k=5)[0]) == 5
    finally:
        s.close()


def test_key_moves_out_of_the_database_and_replicas_need_it(schema, tmp_path, monkeypatch):
    from lethe.config import StoreConfig
    from lethe.store import open_store
    from lethe.store.postgres import PostgresStore

    monkeypatch.delenv("LETHE_SECRET", raising=False)
    legacy = bytes(range(32))
    old = PostgresStore(DSN, dim=DIM, schema=schema, listen=False)  # a store written by an older Lethe:
    old._meta_put("secret", legacy)  # its hashing key in the database
    old.close()
    cfg = StoreConfig(kind="postgres", dsn=DSN, schema=schema)
    s = open_store(cfg, tmp_path / "a", dim=DIM)
    try:
        assert s.secret() == legacy  # names hashed with it still match
        assert (tmp_path / "a" / "store.key").read_text().strip() == legacy.hex()
        assert {r[0] for r in s._read("SELECT key FROM {s}.meta")} == {"dim", "key_check"}
    finally:
        s.close()
    # a replica without the key is refused in one line (no new key, no silent mismatch)
    with pytest.raises(StoreError, match="needs its name-hashing key"):
        open_store(cfg, tmp_path / "b", dim=DIM)
    monkeypatch.setenv("LETHE_SECRET", "a different passphrase")
    with pytest.raises(StoreError, match="different name-hashing key"):
        open_store(cfg, tmp_path / "b", dim=DIM)
    monkeypatch.setenv("LETHE_SECRET", legacy.hex())  # the key from a secret manager: any replica
    s = open_store(cfg, tmp_path / "b", dim=DIM)
    try:
        assert s.secret() == legacy and not (tmp_path / "b" / "store.key").exists()
    finally:
        s.close()


def test_open_store_builds_the_configured_kind(schema, tmp_path, monkeypatch):
    from lethe.config import GuardConfig, StoreConfig
    from lethe.store import open_store
    from lethe.store.postgres import PostgresStore

    monkeypatch.setenv("LETHE_TEST_DSN_VAR", DSN)
    cfg = GuardConfig(store=StoreConfig(kind="postgres", dsn_env="LETHE_TEST_DSN_VAR", schema=schema))
    s = open_store(cfg, tmp_path, dim=DIM)
    try:
        assert isinstance(s, PostgresStore) and s.schema == schema and s.dim == DIM
    finally:
        s.close()
    s = open_store(cfg, tmp_path, dim=None)  # list/revoke: the size comes from the store
    try:
        assert s.dim == DIM
    finally:
        s.close()
    monkeypatch.delenv("LETHE_TEST_DSN_VAR")
    with pytest.raises(StoreError, match=r"\$LETHE_TEST_DSN_VAR"):
        open_store(cfg, tmp_path, dim=DIM)
