"""One configuration tree for every entry point, and one store for the CLI and ``lethe serve``.

The PostgreSQL test needs a real server (``eval "$(.ci/start_postgres.sh)"`` exports
LETHE_TEST_PG_DSN): the CLI adds a forget request and a running ``lethe serve``
subprocess enforces it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from pydantic import BaseModel

from lethe.config import GuardConfig, StoreConfig, load_config
from lethe.errors import ConfigError
from lethe.store import STORES, SQLiteStore, UnlearnStore, open_store
from test_serving_support import echo_upstream

DSN = os.environ.get("LETHE_TEST_PG_DSN")
needs_pg = pytest.mark.skipif(not DSN, reason="LETHE_TEST_PG_DSN not set (run: eval \"$(.ci/start_postgres.sh)\")")
ADMIN = "lk-config-admin"
NAME = "Ottoline Farrisworth"
PROMPTS = [f"Where does {NAME} live?", f"What is the phone number of {NAME}?",
           f"Give me the home address of {NAME}.", f"Who is {NAME} married to?"]
QUERY = f"What is the street address of {NAME}?"


# -- the configuration tree ------------------------------------------------------------------
def _load(tmp_path: Path, text: str) -> GuardConfig:
    (tmp_path / "guard.yaml").write_text(text)
    return load_config(tmp_path)


@pytest.mark.parametrize("text, key, hint", [
    ("detector:\n  tua: 0.5\n", "detector.tua", "did you mean 'detector.tau'"),
    ("serve:\n  prot: 9000\n", "serve.prot", "did you mean 'serve.port'"),
    ("store:\n  kind: postgres\n  schem: x\n", "store.schem", "did you mean 'store.schema'"),
    ("tau: 0.5\n", "tau", "'detector.tau'"),
    ("backend:\n  kind: openai\n  base_ulr: http://x\n", "backend.base_ulr", "did you mean 'backend.base_url'"),
])
def test_a_typo_is_a_one_line_error_naming_the_key_and_the_file(tmp_path, text, key, hint):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, text)
    msg = str(exc.value)
    assert f"unknown key '{key}'" in msg and str(tmp_path / "guard.yaml") in msg and hint in msg
    assert "\n" not in msg


def test_bad_values_name_the_key_and_store_kinds_come_from_the_registry(tmp_path):
    with pytest.raises(ConfigError, match=r"guard.yaml: bad value for 'detector.tau'.*less than or equal to 1"):
        _load(tmp_path, "detector: {tau: 3}\n")
    with pytest.raises(ConfigError, match=r"'store.kind': unknown store kind 'mongo' \(registered: postgres, sqlite"):
        _load(tmp_path, "store: {kind: mongo}\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line 2"):
        _load(tmp_path, "serve: [\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        _load(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="not found"):
        load_config(path=tmp_path / "missing.yaml")
    assert load_config(tmp_path / "fresh").store.kind == "sqlite"  # no file in the home: the defaults


def test_every_section_forbids_unknown_keys():
    seen = []

    def walk(model: type[BaseModel]) -> None:
        assert model.model_config.get("extra") == "forbid", model.__name__
        seen.append(model.__name__)
        for f in model.model_fields.values():
            assert f.description, f"{model.__name__}: field without a description"
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel):
                walk(f.annotation)

    walk(GuardConfig)
    assert {"BackendConfig", "DetectorConfig", "StoreConfig", "ServeConfig"} <= set(seen)


def test_the_older_serve_store_keys_are_read_as_the_store_section(tmp_path):
    cfg = _load(tmp_path, "serve:\n  store: postgres\n  store_dsn: postgresql://db/x\n  store_schema: s1\n  port: 9001\n")
    assert (cfg.store.kind, cfg.store.dsn, cfg.store.db_schema, cfg.serve.port) == ("postgres", "postgresql://db/x",
                                                                                    "s1", 9001)
    with pytest.raises(ConfigError, match="serve.store .deprecated. and store.kind disagree"):
        _load(tmp_path, "serve: {store: postgres}\nstore: {kind: sqlite}\n")


def test_save_and_load_round_trip(tmp_path):
    cfg = GuardConfig(store=StoreConfig(kind="postgres", schema="s2", dsn_env="MY_DSN"))
    cfg.detector.tau = 0.42
    cfg.save(tmp_path / "guard.yaml")
    again = load_config(tmp_path)
    assert again.model_dump() == cfg.model_dump() and again.source == tmp_path / "guard.yaml"


def test_the_sqlite_store_follows_the_configuration(tmp_path, monkeypatch):
    monkeypatch.delenv("LETHE_SECRET", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    (home / "guard.yaml").write_text("store:\n  kind: sqlite\n  path: data/forget.db\n  key_file: keys/forget.key\n")
    store = open_store(home, dim=8)  # the home's configuration
    try:
        assert isinstance(store, SQLiteStore) and store.path == home / "data" / "forget.db"
        assert (home / "keys" / "forget.key").stat().st_mode & 0o777 == 0o600
    finally:
        store.close()
    assert not (home / "store.db").exists()
    again = open_store(None, home, dim=None)  # the size is read from the store
    assert again.dim == 8
    again.close()


class _OptionsStore(SQLiteStore):
    """A third-party kind: built by the base ``from_config`` from ``store.options``."""

    from_config = UnlearnStore.__dict__["from_config"]

    def __init__(self, dim: int, file: str) -> None:
        super().__init__(file, dim=dim, watch=False)


def test_a_registered_third_party_store_kind_is_built_from_its_options(tmp_path):
    if "test-options" not in STORES:
        STORES.register("test-options")(_OptionsStore)
    cfg = load_config(path=_write(tmp_path / "guard.yaml", {"store": {"kind": "test-options",
                                                                       "options": {"file": str(tmp_path / "o.db")}}}))
    store = open_store(cfg, tmp_path, dim=8)
    try:
        assert isinstance(store, _OptionsStore) and store.path == tmp_path / "o.db"
    finally:
        store.close()


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


# -- the CLI and lethe serve on one configured store -----------------------------------------
def lethe_cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the ``lethe`` command line in a fresh process."""
    res = subprocess.run([sys.executable, "-m", "lethe.cli.main", *args], capture_output=True, text=True,
                         env=env, timeout=600)
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """``lethe serve --config CFG --home HOME`` in a subprocess, ready on exit of ``__enter__``."""

    def __init__(self, config: Path, home: Path, env: dict, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.args = [sys.executable, "-m", "lethe.cli.main", "serve", "--config", str(config), "--home", str(home),
                     "--port", str(self.port), "--log-level", "warning"]
        self.env, self.log = env, log

    def __enter__(self) -> ServeProcess:
        self._log = open(self.log, "wb")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(self.log.read_text(errors="replace")[-3000:])
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            assert time.time() < deadline, "lethe serve did not become ready"
            time.sleep(0.2)

    def triggered(self, query: str = QUERY) -> bool:
        r = httpx.post(self.url + "/v1/chat/completions",
                       json={"model": "m", "messages": [{"role": "user", "content": query}]}, timeout=60)
        assert r.status_code == 200, r.text
        return r.headers["x-lethe-triggered"] == "true"

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def until(cond, timeout: float) -> float:
    """Poll ``cond`` until true; fails after ``timeout`` seconds."""
    t0 = time.perf_counter()
    while not cond():
        assert time.perf_counter() - t0 < timeout, f"not within {timeout}s"
        time.sleep(0.02)
    return time.perf_counter() - t0


def test_the_cli_reports_a_typo_in_one_line_and_exits_2(tmp_path):
    (tmp_path / "guard.yaml").write_text("store:\n  knd: postgres\n")
    res = lethe_cli("forget", "list", "--home", str(tmp_path), check=False)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'guard.yaml'}: unknown key 'store.knd'; did you mean 'store.kind'?"]


@pytest.fixture()
def pg_schema():
    name = f"c_{uuid.uuid4().hex[:10]}"
    yield name
    from lethe.store.postgres import PostgresStore

    s = PostgresStore(DSN, dim=384, schema=name, listen=False)
    s.drop_all()
    s.close()


@needs_pg
def test_cli_forget_on_postgres_is_enforced_by_a_running_serve(tmp_path, pg_schema):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("LETHE_SECRET", "LETHE_HOME", "LETHE_CONFIG")}
    env |= {"LETHE_TEST_CFG_ADMIN": ADMIN, "LETHE_TEST_CFG_DSN": DSN}
    prompts = tmp_path / "forget.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    with echo_upstream() as up:
        cfg = _write(tmp_path / "guard.yaml", {
            "backend": {"kind": "openai", "model": "echo", "base_url": up.url + "/v1", "timeout_s": 10},
            "store": {"kind": "postgres", "dsn_env": "LETHE_TEST_CFG_DSN", "schema": pg_schema},
            "serve": {"admin_key_env": "LETHE_TEST_CFG_ADMIN", "default_rewriter": "rule"},
            "embedding_only": True,  # rewrites as embeddings: then no text in the store names the person
        })
        with ServeProcess(cfg, home, env, tmp_path / "serve.log") as srv:
            assert not srv.triggered()
            rid = lethe_cli("forget", "add", "--file", str(prompts), "--rewriter", "rule", "--config", str(cfg),
                            "--home", str(home), env=env).stdout.strip()
            t_add = until(srv.triggered, 10.0)
            print(f"\nthe running service enforced the CLI's request after {t_add:.3f} s")
            # the service lists it; the CLI lists and checks it on the same store
            listed = httpx.get(srv.url + "/admin/forget", headers={"Authorization": f"Bearer {ADMIN}"}).json()
            assert [x["id"] for x in listed["data"]] == [rid]
            rows = [json.loads(x) for x in lethe_cli("forget", "list", "--json", "--config", str(cfg), "--home",
                                                     str(home), env=env).stdout.splitlines()]
            assert [(r["id"], r["kind"], r["label"], r["prompts"], r["names"]) for r in rows] == \
                [(rid, "privacy", None, len(PROMPTS), 1)]  # the guessed name is hashed, not a label
            check = lethe_cli("check", QUERY, "--json", "--config", str(cfg), "--home", str(home), env=env)
            assert json.loads(check.stdout)["in_scope"] is True
            lethe_cli("forget", "revoke", rid, "--config", str(cfg), "--home", str(home), env=env)
            t_revoke = until(lambda: not srv.triggered(), 10.0)
            print(f"and lifted the CLI's revoke after {t_revoke:.3f} s")
    assert not (home / "store.db").exists()  # nothing went to a local SQLite store
    from lethe.store.postgres import PostgresStore

    raw = PostgresStore(DSN, dim=384, schema=pg_schema, listen=False)
    try:  # the database holds neither the name nor the key that would confirm it
        dump = json.dumps([list(map(str, r)) for t in ("requests", "samples", "meta")
                           for r in raw._read(f"SELECT * FROM {{s}}.{t}")])
        assert "farrisworth" not in dump.lower() and "ottoline" not in dump.lower()
        assert {r[0] for r in raw._read("SELECT key FROM {s}.meta")} == {"dim", "key_check"}
        assert raw._read("SELECT subject FROM {s}.requests") == [(None,)]
    finally:
        raw.close()

