"""Shared store for several guard replicas: PostgreSQL (psycopg 3) plus an in-memory index.

Requests and samples live in tables of one PostgreSQL schema (default ``lethe``);
``migrations`` records which numbered schema migrations have run (applied under an
advisory lock, so replicas starting together do not race). Every replica keeps its own
usearch index and a cache of the live positive samples, so a detection never touches
the database. Adds and revokes are one transaction each and send ``NOTIFY`` in it
(delivered on commit); a listener thread in every replica applies them to its index as
they arrive, typically within milliseconds. A reconcile pass every ``poll_interval_s``
(and after a listener reconnect) catches anything a dropped connection missed.

The name-hashing key is not in the database: every replica gets it from ``secret_env``
(a secret manager) or a key file (:mod:`lethe.store.keys`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lethe.errors import StoreError
from lethe.store.base import STORES, ForgetRequest, Match, NegativeSample, UnlearnStore
from lethe.store.index import VectorIndex
from lethe.store.keys import KeySource, resolve_key

if TYPE_CHECKING:
    from lethe.config import StoreConfig

log = logging.getLogger("lethe.store.postgres")

_ADVISORY_KEY = 0x1E7E5701  # pg_advisory_xact_lock key for migrations
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")

# (version, name, SQL with {s} for the quoted schema name). Append only; never edit.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial tables",
        """
        CREATE TABLE {s}.meta (key text PRIMARY KEY, value bytea NOT NULL);
        CREATE TABLE {s}.requests (
            id text PRIMARY KEY,
            kind text NOT NULL,
            subject text,
            policy text,
            entities jsonb NOT NULL DEFAULT '[]'::jsonb,
            n_prompts integer NOT NULL DEFAULT 0,
            created_at double precision NOT NULL,
            revoked_at double precision
        );
        CREATE TABLE {s}.samples (
            id bigserial PRIMARY KEY,
            request_id text NOT NULL REFERENCES {s}.requests(id),
            role text NOT NULL,
            text text,
            embedding bytea NOT NULL
        );
        CREATE INDEX samples_request ON {s}.samples (request_id);
        """,
    ),
    (
        2,
        "partial index on live requests",
        "CREATE INDEX requests_live ON {s}.requests (created_at) WHERE revoked_at IS NULL;",
    ),
]


def _connect(dsn: str):
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL ({_redact(dsn)}): {str(exc).strip().splitlines()[0]}") from None


def _redact(dsn: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", dsn)


@STORES.register("postgres")
class PostgresStore(UnlearnStore):
    """PostgreSQL-backed :class:`UnlearnStore`; replicas see each other's changes via LISTEN/NOTIFY.

    ``dsn``: a libpq connection string or URL (``LETHE_STORE_DSN`` when ``None``).
    ``schema``: the PostgreSQL schema holding the tables (one deployment per schema).
    ``key``: where the name-hashing key lives; ``None`` reads ``$LETHE_SECRET`` when the
    key is first needed.
    """

    def __init__(
        self,
        dsn: str | None = None,
        dim: int | None = 384,
        schema: str = "lethe",
        poll_interval_s: float = 5.0,
        listen: bool = True,
        key: KeySource | None = None,
    ) -> None:
        dsn = dsn or os.environ.get("LETHE_STORE_DSN")
        if not dsn:
            raise StoreError("the postgres store needs a DSN (store.dsn in guard.yaml or the store.dsn_env "
                             "variable, default LETHE_STORE_DSN)")
        if not _SCHEMA_RE.match(schema):
            raise StoreError(f"bad PostgreSQL schema name '{schema}' (lowercase letters, digits, _)")
        self.dsn = dsn
        self.dim = dim or 384
        self.schema = schema
        self.channel = f"lethe_store_{schema}"
        self.poll_interval_s = poll_interval_s
        self._s = f'"{schema}"'
        self._lock = threading.RLock()  # guards the main connection
        self._ilock = threading.RLock()  # guards index + caches
        self._subscribers: list[Callable[[], None]] = []
        self._index = VectorIndex(self.dim)
        self._cache: dict[int, NegativeSample] = {}  # live positive samples in the index
        self._by_request: dict[str, list[int]] = {}
        self._version = 0
        self._stop = threading.Event()
        self._conn = _connect(dsn)
        self._migrate()
        self._init_meta(dim)
        self._key_source = key
        self._secret: bytes | None = self._resolve_key(key) if key is not None else None
        self.reconcile(full=True)
        self._listener: threading.Thread | None = None
        self.listening = threading.Event()
        if listen:
            self._listener = threading.Thread(target=self._listen_loop, name="lethe-pg-listen", daemon=True)
            self._listener.start()
            self.listening.wait(10)

    @classmethod
    def from_config(cls, config: StoreConfig, home: Path, dim: int) -> PostgresStore:
        dsn = config.dsn or os.environ.get(config.dsn_env)
        if not dsn:
            raise StoreError(f"the postgres store needs a DSN: set store.dsn in guard.yaml or ${config.dsn_env}")
        key_file = Path(config.key_file).expanduser() if config.key_file else Path("store.key")
        return cls(dsn, dim=dim, schema=config.db_schema,
                   key=KeySource(env=config.secret_env or None, file=home / key_file), **config.options)

    # -- connection helpers ------------------------------------------------------------
    def _db(self):
        import psycopg

        if self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                raise StoreError(f"PostgreSQL unreachable: {str(exc).strip().splitlines()[0]}") from None
        return self._conn

    def _read(self, query: str, params: tuple | list = ()) -> list[tuple]:
        import psycopg

        with self._lock:
            for attempt in (0, 1):
                try:
                    return self._db().execute(query.format(s=self._s), params).fetchall()
                except psycopg.OperationalError as exc:
                    if attempt:
                        raise StoreError(f"PostgreSQL read failed: {str(exc).strip().splitlines()[0]}") from None
        return []

    def ping(self) -> bool:
        try:
            return self._read("SELECT 1") == [(1,)]
        except StoreError:
            return False

    # -- schema ------------------------------------------------------------------------
    def _migrate(self) -> None:
        s = self._s
        with self._lock:
            conn = self._db()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {s}.migrations (version integer PRIMARY KEY, name text NOT NULL,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = {r[0] for r in conn.execute(f"SELECT version FROM {s}.migrations").fetchall()}
                for version, name, ddl in MIGRATIONS:
                    if version in done:
                        continue
                    conn.execute(ddl.format(s=s))
                    conn.execute(f"INSERT INTO {s}.migrations (version, name) VALUES (%s, %s)", (version, name))
                    log.info("applied store migration %d (%s)", version, name)
                newest = max(done | {v for v, _, _ in MIGRATIONS})
                if newest > MIGRATIONS[-1][0]:
                    raise StoreError(
                        f"the PostgreSQL store is at schema version {newest}, newer than this Lethe "
                        f"({MIGRATIONS[-1][0]}): upgrade Lethe"
                    )

    def schema_version(self) -> int:
        return int(self._read("SELECT max(version) FROM {s}.migrations")[0][0])

    def _init_meta(self, dim: int | None) -> None:
        """The embedding size; ``dim=None`` takes the stored one (list, revoke)."""
        if dim is not None:
            self._meta_put("dim", str(dim).encode())
        raw = self._meta("dim")
        if raw is None:
            return
        stored = int(raw)
        if dim is None:
            self.dim = stored
            self._index = VectorIndex(stored)
        elif stored != self.dim:
            raise StoreError(f"the PostgreSQL store holds {stored}-d embeddings but the embedder gives {self.dim}-d")

    def _meta(self, key: str) -> bytes | None:
        rows = self._read("SELECT value FROM {s}.meta WHERE key=%s", (key,))
        return bytes(rows[0][0]) if rows else None

    def _meta_put(self, key: str, value: bytes) -> None:
        self._write("INSERT INTO {s}.meta (key, value) VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", (key, value))

    def _meta_delete(self, key: str) -> None:
        self._write("DELETE FROM {s}.meta WHERE key=%s", (key,))
        import psycopg

        try:  # rewrite the (tiny) table so the deleted row does not linger as a dead tuple
            with self._lock:
                self._db().execute(f"VACUUM FULL {self._s}.meta")
        except psycopg.Error as exc:
            log.warning("could not VACUUM FULL %s.meta after deleting %r: %s", self.schema, key,
                        str(exc).strip().splitlines()[0])

    def _write(self, query: str, params: tuple) -> None:
        import psycopg

        with self._lock:
            try:
                self._db().execute(query.format(s=self._s), params)
            except psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL write failed: {str(exc).strip().splitlines()[0]}") from None

    def _resolve_key(self, source: KeySource) -> bytes:
        return resolve_key(source, self._meta, self._meta_put, self._meta_delete,
                           f"{_redact(self.dsn)} (schema {self.schema})")

    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = self._resolve_key(KeySource())
        return self._secret

    def live_count(self) -> int:
        """Live requests in this replica's index."""
        with self._ilock:
            return len(self._by_request)

    # -- index maintenance -------------------------------------------------------------
    def _load_samples(self, request_ids: list[str]) -> dict[str, list[NegativeSample]]:
        if not request_ids:
            return {}
        rows = self._read(
            "SELECT s.id, s.request_id, s.role, s.text, s.embedding FROM {s}.samples s"
            " JOIN {s}.requests r ON r.id = s.request_id"
            " WHERE r.revoked_at IS NULL AND s.role != 'hard_negative' AND s.request_id = ANY(%s) ORDER BY s.id",
            (request_ids,),
        )
        out: dict[str, list[NegativeSample]] = {rid: [] for rid in request_ids}
        for r in rows:
            out[r[1]].append(
                NegativeSample(id=int(r[0]), request_id=r[1], role=r[2], text=r[3],
                               embedding=np.frombuffer(r[4], dtype=np.float32).copy())
            )
        return out

    def _index_add(self, request_id: str, samples: list[NegativeSample]) -> bool:
        with self._ilock:
            if request_id in self._by_request:
                return False
            ids = [int(s.id or 0) for s in samples]
            self._by_request[request_id] = ids
            if samples:
                self._index.add(ids, np.stack([s.embedding for s in samples]))
                for s in samples:
                    self._cache[int(s.id or 0)] = s
            self._version += 1
            return True

    def _index_remove(self, request_id: str) -> bool:
        with self._ilock:
            ids = self._by_request.pop(request_id, None)
            if ids is None:
                return False
            self._index.remove(ids)
            for i in ids:
                self._cache.pop(i, None)
            self._version += 1
            return True

    def reconcile(self, full: bool = False) -> bool:
        """Bring the local index in line with the database; True when anything changed."""
        live = {r[0] for r in self._read("SELECT id FROM {s}.requests WHERE revoked_at IS NULL")}
        with self._ilock:
            if full:
                self._index.clear()
                self._cache.clear()
                self._by_request.clear()
            known = set(self._by_request)
        changed = False
        for rid in known - live:
            changed |= self._index_remove(rid)
        for rid, samples in self._load_samples(sorted(live - known)).items():
            changed |= self._index_add(rid, samples)
        if changed or full:
            with self._ilock:
                self._version += 1
        return changed

    def _apply(self, payload: str) -> None:
        op, _, rid = payload.partition(":")
        if op == "add":
            loaded = self._load_samples([rid]).get(rid)
            live = self._read("SELECT 1 FROM {s}.requests WHERE id=%s AND revoked_at IS NULL", (rid,))
            changed = bool(live) and loaded is not None and self._index_add(rid, loaded)
        elif op == "revoke":
            changed = self._index_remove(rid)
        else:
            changed = self.reconcile()
        if changed:
            self._notify()

    def _listen_loop(self) -> None:
        import psycopg

        last_poll = time.monotonic()
        first = True
        while not self._stop.is_set():
            try:
                conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                log.warning("store listener cannot connect: %s", str(exc).strip().splitlines()[0])
                self._stop.wait(1.0)
                continue
            try:
                conn.execute(f'LISTEN "{self.channel}"')
                if not first and self.reconcile():  # notifications may have been missed
                    self._notify()
                first = False
                self.listening.set()
                while not self._stop.is_set():
                    for n in conn.notifies(timeout=0.25):
                        try:
                            self._apply(n.payload)
                        except Exception:  # keep listening; the reconcile pass repairs
                            log.exception("store listener failed to apply %r", n.payload)
                    if time.monotonic() - last_poll >= self.poll_interval_s:
                        last_poll = time.monotonic()
                        if self.reconcile():
                            self._notify()
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("store listener lost its connection (%s); reconnecting", exc)
                    self._stop.wait(0.5)
            finally:
                try:
                    conn.close()
                except Exception:
                    pass

    # -- writes ------------------------------------------------------------------------
    def add_request(self, request: ForgetRequest, samples: list[NegativeSample]) -> str:
        import psycopg

        for s in samples:
            if s.embedding.shape != (self.dim,):
                raise StoreError(f"sample embedding has shape {s.embedding.shape}, expected ({self.dim},)")
        s_ = self._s
        with self._lock:
            conn = self._db()
            try:
                with conn.transaction():
                    conn.execute(
                        f"INSERT INTO {s_}.requests (id, kind, subject, policy, entities, n_prompts, created_at)"
                        " VALUES (%s,%s,%s,%s,%s,%s,%s)",
                        (request.id, request.kind, request.subject, request.policy,
                         json.dumps(request.entities), request.n_prompts, request.created_at),
                    )
                    if samples:
                        with conn.cursor() as cur:
                            cur.executemany(
                                f"INSERT INTO {s_}.samples (request_id, role, text, embedding)"
                                " VALUES (%s,%s,%s,%s) RETURNING id",
                                [(request.id, s.role, s.text, np.asarray(s.embedding, dtype=np.float32).tobytes())
                                 for s in samples],
                                returning=True,
                            )
                            ids = []
                            while True:
                                ids.append(int(cur.fetchone()[0]))
                                if not cur.nextset():
                                    break
                        for s, i in zip(samples, ids, strict=True):
                            s.id = i
                            s.request_id = request.id
                    conn.execute("SELECT pg_notify(%s, %s)", (self.channel, f"add:{request.id}"))
            except psycopg.IntegrityError as exc:
                raise StoreError(f"cannot add request {request.id}: {str(exc).strip().splitlines()[0]}") from None
            except psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL write failed: {str(exc).strip().splitlines()[0]}") from None
        self._index_add(request.id, [s for s in samples if s.role != "hard_negative"])
        self._notify()
        return request.id

    def revoke(self, request_id: str) -> bool:
        import psycopg

        with self._lock:
            conn = self._db()
            try:
                with conn.transaction():
                    cur = conn.execute(
                        f"UPDATE {self._s}.requests SET revoked_at=%s WHERE id=%s AND revoked_at IS NULL",
                        (time.time(), request_id),
                    )
                    if cur.rowcount == 0:
                        return False
                    conn.execute("SELECT pg_notify(%s, %s)", (self.channel, f"revoke:{request_id}"))
            except psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL write failed: {str(exc).strip().splitlines()[0]}") from None
        self._index_remove(request_id)
        self._notify()
        return True

    # -- reads -------------------------------------------------------------------------
    _REQ_COLS = "id, kind, subject, policy, entities, n_prompts, created_at, revoked_at"

    @staticmethod
    def _row_to_request(row: tuple) -> ForgetRequest:
        ents = row[4] if isinstance(row[4], list) else json.loads(row[4] or "[]")
        return ForgetRequest(id=row[0], kind=row[1], subject=row[2], policy=row[3], entities=ents,
                             n_prompts=row[5], created_at=row[6], revoked_at=row[7])

    def get_request(self, request_id: str) -> ForgetRequest | None:
        rows = self._read(f"SELECT {self._REQ_COLS} FROM {{s}}.requests WHERE id=%s", (request_id,))
        return self._row_to_request(rows[0]) if rows else None

    def list_requests(self, include_revoked: bool = False) -> list[ForgetRequest]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        rows = self._read(f"SELECT {self._REQ_COLS} FROM {{s}}.requests{where} ORDER BY created_at, id")
        return [self._row_to_request(r) for r in rows]

    def samples(self, live_only: bool = True) -> list[NegativeSample]:
        q = ("SELECT s.id, s.request_id, s.role, s.text, s.embedding FROM {s}.samples s"
             " JOIN {s}.requests r ON r.id = s.request_id")
        if live_only:
            q += " WHERE r.revoked_at IS NULL"
        rows = self._read(q + " ORDER BY s.id")
        return [
            NegativeSample(id=int(r[0]), request_id=r[1], role=r[2], text=r[3],
                           embedding=np.frombuffer(r[4], dtype=np.float32).copy())
            for r in rows
        ]

    def search(self, embeddings: np.ndarray, k: int = 5) -> list[list[Match]]:
        with self._ilock:
            hits = self._index.search(np.atleast_2d(embeddings), k)
            cache = self._cache
            return [[Match(cache[key], score) for key, score in row if key in cache] for row in hits]


    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=2)
        with self._lock:
            self._conn.close()

    def drop_all(self) -> None:
        """Drop this store's schema and everything in it (tests, teardown)."""
        with self._lock:
            self._db().execute(f"DROP SCHEMA IF EXISTS {self._s} CASCADE")
