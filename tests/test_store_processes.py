"""One SQLite store, many processes: an add or a revoke in one is enforced in the others within 1 s.

Real processes throughout: a writer subprocess on the store, the ``lethe`` CLI, and a
``lethe serve`` subprocess on one home with a loopback upstream.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import httpx
import numpy as np
import pytest
import yaml

from lethe.store import SQLiteStore
from test_config import ServeProcess, lethe_cli, until
from test_serving_support import echo_upstream

DIM = 8
ADMIN = "lk-processes-admin"
NAME = "Quillon Abernathy-Stroud"
PROMPTS = [f"Where does {NAME} live?", f"What is the phone number of {NAME}?",
           f"Give me the home address of {NAME}.", f"Who is {NAME} married to?"]
QUERY = f"What is the street address of {NAME}?"

_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from lethe.store import ForgetRequest, NegativeSample, SQLiteStore
    store = SQLiteStore(sys.argv[1], dim=int(sys.argv[2]), watch=False)
    print("ready", flush=True)
    for line in sys.stdin:
        op, _, arg = line.strip().partition(" ")
        if op == "add":
            v = np.random.default_rng(int(arg)).normal(size=int(sys.argv[2])).astype(np.float32)
            req = ForgetRequest(kind="privacy")
            store.add_request(req, [NegativeSample("", v / np.linalg.norm(v), "rewrite", None)])
            print(req.id, flush=True)  # acknowledged: committed
        elif op == "revoke":
            print(store.revoke(arg), flush=True)
""")


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


class _Writer:
    def __init__(self, path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(DIM)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.ask(None) == "ready"

    def ask(self, line: str | None) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if line is not None:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        out = self.proc.stdout.readline().strip()
        assert out, "writer died"
        return out

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_another_process_add_and_revoke_reach_subscribers_without_traffic(tmp_path):
    store = SQLiteStore(tmp_path / "store.db", dim=DIM)  # its watcher applies remote commits
    events: list[int] = []
    store.subscribe(lambda: events.append(store.live_count()))
    writer = _Writer(tmp_path / "store.db")
    try:
        for seed in range(3):
            rid = writer.ask(f"add {seed}")
            until(lambda rid=rid: store.live_here(rid), 1.0)  # no read by this process meanwhile
            assert events[-1] == 1
            assert store.search(_vec(seed)[None], k=1)[0][0].sample.request_id == rid
            assert writer.ask(f"revoke {rid}") == "True"
            until(lambda: store.live_count() == 0, 1.0)
            assert store.search(_vec(seed)[None], k=1) == [[]] and events[-1] == 0
    finally:
        writer.close()
        store.close()


def test_the_read_path_sees_another_process_without_a_watcher(tmp_path):
    store = SQLiteStore(tmp_path / "store.db", dim=DIM, watch=False)
    writer = _Writer(tmp_path / "store.db")
    try:
        v0 = store.version()
        rid = writer.ask("add 7")
        until(lambda: store.version() != v0, 1.0)  # version() checks data_version (rate-limited)
        assert store.search(_vec(7)[None], k=1)[0][0].sample.request_id == rid
        # a revoke by the other process: this one's own revoke then answers False, and the index drops it
        assert writer.ask(f"revoke {rid}") == "True"
        assert store.revoke(rid) is False
        assert store.search(_vec(7)[None], k=1) == [[]]
    finally:
        writer.close()
        store.close()


@pytest.fixture(scope="module")
def upstream():
    with echo_upstream() as up:
        yield up


def test_lethe_serve_and_the_cli_on_one_home_enforce_each_others_changes_within_a_second(tmp_path, upstream):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("LETHE_SECRET", "LETHE_HOME", "LETHE_CONFIG")}
    env["LETHE_TEST_PROC_ADMIN"] = ADMIN
    cfg = tmp_path / "guard.yaml"
    cfg.write_text(yaml.safe_dump({
        "backend": {"kind": "openai", "model": "echo", "base_url": upstream.url + "/v1", "timeout_s": 10},
        "serve": {"admin_key_env": "LETHE_TEST_PROC_ADMIN", "default_rewriter": "rule"},
    }))
    prompts = tmp_path / "forget.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    where = ["--config", str(cfg), "--home", str(home)]
    auth = {"Authorization": f"Bearer {ADMIN}"}
    with ServeProcess(cfg, home, env, tmp_path / "serve.log") as srv:
        assert not srv.triggered(QUERY)
        # CLI add -> the service enforces it; CLI revoke -> the service lifts it
        rid = lethe_cli("forget", "add", "--file", str(prompts), "--rewriter", "rule", *where, env=env).stdout.strip()
        t_add = until(lambda: srv.triggered(QUERY), 1.0)
        lethe_cli("forget", "revoke", rid, *where, env=env)
        t_revoke = until(lambda: not srv.triggered(QUERY), 1.0)
        print(f"\nserve enforced a CLI add after {t_add:.3f} s and lifted a CLI revoke after {t_revoke:.3f} s")
        assert httpx.delete(f"{srv.url}/admin/forget/{rid}", headers=auth).status_code == 404  # already revoked

        # API add -> the CLI revokes it (and lists it first)
        r = httpx.post(srv.url + "/admin/forget", json={"kind": "privacy", "prompts": PROMPTS}, headers=auth,
                       timeout=60)
        assert r.status_code == 201, r.text
        api_id = r.json()["id"]
        assert srv.triggered(QUERY)
        listed = [json.loads(x)["id"] for x in lethe_cli("forget", "list", "--json", *where, env=env).stdout.splitlines()]
        assert listed == [api_id]
        lethe_cli("forget", "revoke", api_id, *where, env=env)
        until(lambda: not srv.triggered(QUERY), 1.0)

        # CLI add -> the API revokes it: 200, not 404, and lifted at once
        cli_id = lethe_cli("forget", "add", "--file", str(prompts), "--rewriter", "rule", *where,
                           env=env).stdout.strip()
        until(lambda: srv.triggered(QUERY), 1.0)
        r = httpx.delete(f"{srv.url}/admin/forget/{cli_id}", headers=auth)
        assert r.status_code == 200, r.text
        assert not srv.triggered(QUERY)
        live = httpx.get(srv.url + "/admin/forget", headers=auth).json()["data"]
        assert live == []
