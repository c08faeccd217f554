"""Shared store for several guard replicas: PostgreSQL (psycopg 3) plus a local index per replica.

Requests and samples live in tables of one PostgreSQL schema (default ``lethe``);
``migrations`` records which numbered schema migrations have run (applied under an
advisory lock, so replicas starting together do not race). Every replica keeps its own
index of the live positive samples (:mod:`lethe.store.live`: vectors, request of each
sample, rewrite texts), so a detection never touches the database. Adds and revokes are
one transaction each and send ``NOTIFY`` in it (delivered on commit, in commit order); a
listener thread in every replica applies them to its index as they arrive, typically
within milliseconds. A reconcile pass every ``poll_interval_s`` (and after a listener
reconnect) catches anything a dropped connection missed.

**Local index cache.** With ``index_dir`` (``<home>/index`` when built from
``guard.yaml``) a replica saves its index there, keyed by the store's random id, and
records the database state it matches: the ``state`` table's change counters, bumped by
statement triggers on ``requests`` (every insert, update, delete) and ``samples``
(updates, deletes), and the largest sample id. A replica that restarts loads the file,
checks it, and applies only what changed since (the notifications carry the counter, so a
running replica knows its state between reconciles); a file of another database, a
corrupt one, or one behind a rewrite of sample rows is rebuilt from the tables.

The name-hashing key is not in the database: every replica gets it from ``secret_env``
(a secret manager) or a key file (:mod:`lethe.store.keys`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lethe.errors import StoreError
from lethe.store.base import STORES, ForgetRequest, Match, NegativeSample, UnlearnStore
from lethe.store.codec import decode, encode_many, format_for
from lethe.store.index import IndexParams
from lethe.store.keys import KeySource, resolve_key
from lethe.store.live import IndexedStore, LiveIndex, PersistParams, Rows, StoreView, own_rows

if TYPE_CHECKING:
    from lethe.config import StoreConfig

log = logging.getLogger("lethe.store.postgres")

_ADVISORY_KEY = 0x1E7E5701  # pg_advisory_xact_lock key for migrations
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_ROWS = 50_000  # rows per fetch when loading the index

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
    (
        3,
        "store id and change counters for local index caches",
        """
        CREATE TABLE {s}.state (k text PRIMARY KEY, n bigint NOT NULL);
        INSERT INTO {s}.state VALUES ('store_id', (random() * 9e18)::bigint), ('changes', 0), ('rewrites', 0);
        CREATE FUNCTION {s}.count_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN UPDATE {s}.state SET n = n + 1 WHERE k = TG_ARGV[0]; RETURN NULL; END $$;
        CREATE TRIGGER requests_count AFTER INSERT OR UPDATE OR DELETE ON {s}.requests
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_change('changes');
        CREATE TRIGGER samples_count AFTER UPDATE OR DELETE ON {s}.samples
            FOR EACH STATEMENT EXECUTE FUNCTION {s}.count_change('rewrites');
        """,
    ),
]
_STATE = ("SELECT (SELECT n FROM {s}.state WHERE k='store_id'), (SELECT n FROM {s}.state WHERE k='changes'),"
          " (SELECT n FROM {s}.state WHERE k='rewrites'), (SELECT coalesce(max(id), 0) FROM {s}.samples)")


def _connect(dsn: str):
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL ({_redact(dsn)}): {str(exc).strip().splitlines()[0]}") from None


def _redact(dsn: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", dsn)


@STORES.register("postgres")
class PostgresStore(IndexedStore, UnlearnStore):
    """PostgreSQL-backed :class:`UnlearnStore`; replicas see each other's changes via LISTEN/NOTIFY.

    ``dsn``: a libpq connection string or URL (``LETHE_STORE_DSN`` when ``None``).
    ``schema``: the PostgreSQL schema holding the tables (one deployment per schema).
    ``key``: where the name-hashing key lives; ``None`` reads ``$LETHE_SECRET`` when the
    key is first needed. ``index_dir``: folder of this replica's index cache (``None``:
    rebuild from the tables at every start). ``vector_format``, ``index``, ``persist``,
    ``lazy_index``: as for :class:`~lethe.store.sqlite.SQLiteStore`.
    """

    def __init__(
        self,
        dsn: str | None = None,
        dim: int | None = 384,
        schema: str = "lethe",
        poll_interval_s: float = 5.0,
        listen: bool = True,
        key: KeySource | None = None,
        index_dir: str | os.PathLike[str] | None = None,
        vector_format: str = "i8",
        index: IndexParams | dict | None = None,
        persist: PersistParams | dict | None = None,
        lazy_index: bool | None = None,
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
        self._subscribers: list[Callable[[], None]] = []
        self._index_params = IndexParams.of(index)
        self._persist = persist if isinstance(persist, PersistParams) else PersistParams(**(persist or {}))
        self._version = 0
        self._stop = threading.Event()
        self._conn = _connect(dsn)
        self._migrate()
        self._init_meta(dim)
        self.vector_format = format_for(vector_format, self.dim)
        self._key_source = key
        self._secret: bytes | None = self._resolve_key(key) if key is not None else None
        self._index_base: Path | None = None
        if index_dir is not None:
            store_id = self._read("SELECT n FROM {s}.state WHERE k='store_id'")[0][0]
            folder = Path(index_dir).expanduser()
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._index_base = folder / f"pg-{schema}-{int(store_id) & (2**64 - 1):016x}"
        self._live = LiveIndex(self.dim, self._index_params)
        self._loaded = False
        if not (dim is None if lazy_index is None else lazy_index):
            self._ensure_index()
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
        options = {"index_dir": home / "index", **config.options}
        return cls(dsn, dim=dim, schema=config.db_schema,
                   key=KeySource(env=config.secret_env or None, file=home / key_file), **options)

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
        self._ensure_index()
        return self._live.n_requests()

    def live_here(self, request_id: str) -> bool:
        """Whether this replica's index holds ``request_id`` as live (what its searches enforce)."""
        self._ensure_index()
        return request_id in self._live

    def indexed_count(self) -> int:
        """Vectors in this replica's index."""
        self._ensure_index()
        return len(self._live)

    # -- the index: database side (lethe.store.live.IndexedStore) ---------------------
    def _state(self, conn) -> dict:
        row = conn.execute(_STATE.format(s=self._s)).fetchone()
        return {"store_id": str(row[0]), "changes": int(row[1]), "rewrites": int(row[2]), "max_id": int(row[3])}

    def _rows(self, conn, request_ids: list[str] | None) -> Iterator[Rows]:
        q = (f"SELECT s.id, s.request_id, s.role, s.text, s.embedding FROM {self._s}.samples s"
             f" JOIN {self._s}.requests r ON r.id = s.request_id"
             " WHERE r.revoked_at IS NULL AND s.role != 'hard_negative'")
        if request_ids is not None and not request_ids:
            return
        with conn.cursor(name=f"lethe_rows_{threading.get_ident()}") as cur:  # server side: streamed
            cur.itersize = _ROWS
            if request_ids is None:
                cur.execute(q + " ORDER BY s.id")
            else:
                cur.execute(q + " AND s.request_id = ANY(%s) ORDER BY s.id", (request_ids,))
            while batch := cur.fetchmany(_ROWS):
                yield Rows([r[1] for r in batch], np.fromiter((r[0] for r in batch), np.int64, len(batch)),
                           [r[2] for r in batch], [r[3] for r in batch], blobs=[bytes(r[4]) for r in batch])

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[StoreView]:
        import psycopg

        with self._lock:
            conn = self._db()
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    yield StoreView(
                        lambda: self._state(conn),
                        lambda: {r[0] for r in conn.execute(
                            f"SELECT id FROM {self._s}.requests WHERE revoked_at IS NULL").fetchall()},
                        lambda ids: self._rows(conn, ids),
                        lambda max_id: {r[0] for r in conn.execute(
                            f"SELECT DISTINCT request_id FROM {self._s}.samples WHERE id > %s", (max_id,)).fetchall()},
                    )
            except psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL read failed: {str(exc).strip().splitlines()[0]}") from None

    def _ensure_index(self) -> None:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self._open_index()
                    self._loaded = True
                    self._version += 1

    def reconcile(self, full: bool = False) -> bool:
        """Bring the local index in line with the database; True when anything changed."""
        if not self._loaded:
            return False
        with self._lock:
            if full:
                with self._snapshot() as view:
                    self._live = self._build(view, view.state())
                self._version += 1
                return True
            changed = self._refresh_index()
            if changed:
                self._version += 1
        return changed

    def _apply(self, payload: str) -> None:
        """One notification: ``add:<request>:<changes>:<max id>``, ``revoke:<request>:<changes>``,
        ``batch:<changes>:<max id>`` (older writers send ``add:<request>`` / ``revoke:<request>``)."""
        with self._lock:
            if not self._loaded:
                self._version += 1
                changed = True
            else:
                changed = self._apply_loaded(*payload.split(":"))
        if changed:
            self._notify()

    def _apply_loaded(self, op: str, *args: str) -> bool:
        live = self._live
        before = live.state
        after: dict | None = None
        if op == "add" and args:
            with self._snapshot() as view:  # the request's live rows (none: revoked since, or no positives)
                batches = list(view.rows([args[0]]))
            present = bool(batches) or bool(self._read(
                "SELECT 1 FROM {s}.requests WHERE id=%s AND revoked_at IS NULL", (args[0],)))
            changed = any([bool(live.add(rows)) for rows in batches])
            if present:
                changed |= bool(live.add(Rows([], np.empty(0, np.int64), [], []), live=[args[0]]))
                if len(args) >= 3:
                    after = _advance(before, int(args[1]), int(args[2]))
        elif op == "revoke" and args:
            changed = live.remove(args[0])
            if len(args) >= 2:
                after = _advance(before, int(args[1]), None)
        else:  # a batch (or an unknown payload): diff against the database
            return self.reconcile()
        if live.state is before:
            live.state = after
        if changed:
            self._version += 1
        return changed

    def _listen_loop(self) -> None:
        import psycopg

        last_poll = time.monotonic()
        while not self._stop.is_set():
            try:
                conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                log.warning("store listener cannot connect: %s", str(exc).strip().splitlines()[0])
                self._stop.wait(1.0)
                continue
            try:
                conn.execute(f'LISTEN "{self.channel}"')
                if self.reconcile():  # what committed before LISTEN, or while disconnected
                    self._notify()
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
                        self._maybe_save()
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
    def _check(self, samples: list[NegativeSample]) -> None:
        for s in samples:
            if s.embedding.shape != (self.dim,):
                raise StoreError(f"sample embedding has shape {s.embedding.shape}, expected ({self.dim},)")

    def add_request(self, request: ForgetRequest, samples: list[NegativeSample]) -> str:
        self._check(samples)
        self._commit([(request, samples)], bulk=False)
        return request.id

    def add_requests(self, items: Iterable[tuple[ForgetRequest, list[NegativeSample]]],
                     batch_rows: int = 20_000) -> list[str]:
        """Add many requests with ``COPY``, a transaction per batch of about ``batch_rows`` samples (a
        request is never split); replicas reconcile once per batch. For imports and benchmarks."""
        done: list[str] = []
        batch: list[tuple[ForgetRequest, list[NegativeSample]]] = []
        n = 0
        for req, samples in items:
            self._check(samples)
            batch.append((req, samples))
            n += len(samples)
            if n >= batch_rows:
                done += self._commit(batch, bulk=True)
                batch, n = [], 0
        if batch:
            done += self._commit(batch, bulk=True)
        return done

    def _commit(self, items: list[tuple[ForgetRequest, list[NegativeSample]]], bulk: bool) -> list[str]:
        import psycopg

        s_ = self._s
        n_samples = sum(len(x) for _, x in items)
        before = self._live.state
        with self._lock:
            conn = self._db()
            try:
                with conn.transaction():
                    if n_samples:
                        ids = [int(r[0]) for r in conn.execute(
                            f"SELECT nextval(pg_get_serial_sequence('{s_}.samples', 'id')) "
                            "FROM generate_series(1, %s)", (n_samples,)).fetchall()]
                    it = iter(ids if n_samples else [])
                    for req, samples in items:
                        for smp in samples:
                            smp.id, smp.request_id = next(it), req.id
                    req_rows = [(r.id, r.kind, r.subject, r.policy, json.dumps(r.entities), r.n_prompts,
                                 r.created_at) for r, _ in items]
                    flat = [(req, smp) for req, samples in items for smp in samples]
                    blobs = encode_many(np.stack([smp.embedding for _, smp in flat]), self.vector_format) \
                        if flat else []
                    sample_rows = [(smp.id, req.id, smp.role, smp.text, blob)
                                   for (req, smp), blob in zip(flat, blobs, strict=True)]
                    with conn.cursor() as cur:
                        if bulk:
                            with cur.copy(f"COPY {s_}.requests (id, kind, subject, policy, entities, n_prompts, "
                                          "created_at) FROM STDIN") as cp:
                                for row in req_rows:
                                    cp.write_row(row)
                        else:
                            cur.execute(f"INSERT INTO {s_}.requests (id, kind, subject, policy, entities, n_prompts,"
                                        " created_at) VALUES (%s,%s,%s,%s,%s,%s,%s)", req_rows[0])
                        if bulk and sample_rows:
                            with cur.copy(f"COPY {s_}.samples (id, request_id, role, text, embedding) FROM STDIN") as cp:
                                for row in sample_rows:
                                    cp.write_row(row)
                        elif sample_rows:
                            cur.executemany(f"INSERT INTO {s_}.samples (id, request_id, role, text, embedding)"
                                            " VALUES (%s,%s,%s,%s,%s)", sample_rows)
                        after = self._state(conn)
                    payload = (f"batch:{after['changes']}:{after['max_id']}" if bulk else
                               f"add:{items[0][0].id}:{after['changes']}:{after['max_id']}")
                    conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
            except psycopg.IntegrityError as exc:
                which = items[0][0].id if len(items) == 1 else f"{items[0][0].id} (batch of {len(items)})"
                raise StoreError(f"cannot add request {which}: {str(exc).strip().splitlines()[0]}") from None
            except psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL write failed: {str(exc).strip().splitlines()[0]}") from None
            if self._loaded:
                self._live.add(own_rows(items, self._live), live=[r.id for r, _ in items])
                if self._live.state is before:
                    self._live.state = after if _follows(before, after) else None
            self._version += 1
        self._notify()
        return [r.id for r, _ in items]

    def revoke(self, request_id: str) -> bool:
        import psycopg

        before = self._live.state
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
                    after = self._state(conn)
                    conn.execute("SELECT pg_notify(%s, %s)", (self.channel, f"revoke:{request_id}:{after['changes']}"))
            except psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL write failed: {str(exc).strip().splitlines()[0]}") from None
            if self._loaded:
                self._live.remove(request_id)
                if self._live.state is before:
                    self._live.state = after if _follows(before, after) else None
            self._version += 1
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

    def _to_samples(self, rows: list[tuple]) -> list[NegativeSample]:
        return [NegativeSample(id=int(r[0]), request_id=r[1], role=r[2], text=r[3],
                               embedding=decode(bytes(r[4]), self.dim)) for r in rows]

    def samples(self, live_only: bool = True) -> list[NegativeSample]:
        q = ("SELECT s.id, s.request_id, s.role, s.text, s.embedding FROM {s}.samples s"
             " JOIN {s}.requests r ON r.id = s.request_id")
        if live_only:
            q += " WHERE r.revoked_at IS NULL"
        return self._to_samples(self._read(q + " ORDER BY s.id"))

    def samples_of(self, request_ids: Iterable[str]) -> list[NegativeSample]:
        ids = list(dict.fromkeys(request_ids))
        if not ids:
            return []
        return self._to_samples(self._read("SELECT id, request_id, role, text, embedding FROM {s}.samples"
                                           " WHERE request_id = ANY(%s) ORDER BY id", (ids,)))

    def search(self, embeddings: np.ndarray, k: int = 5) -> list[list[Match]]:
        self._ensure_index()
        return self._live.search(np.atleast_2d(embeddings), k)

    def close(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.join(timeout=2)
        with self._lock:
            if self._loaded and self._index_base is not None:
                try:
                    if self._live.state is None:
                        self.reconcile()
                    self._save_at_close()
                except Exception:
                    log.exception("saving the store index at close failed")
            self._conn.close()

    def drop_all(self) -> None:
        """Drop this store's schema and everything in it (tests, teardown)."""
        with self._lock:
            self._db().execute(f"DROP SCHEMA IF EXISTS {self._s} CASCADE")


def _advance(state: dict | None, changes: int, max_id: int | None) -> dict | None:
    """The state after a notified change numbered ``changes`` (None: unknown from here)."""
    if state is None:
        return None
    if changes <= state["changes"]:  # already in the index (this replica's own change)
        return state
    if changes == state["changes"] + 1:
        return {**state, "changes": changes, "max_id": max(state["max_id"], max_id or 0)}
    return None  # a notification was missed: the reconcile pass repairs


def _follows(before: dict | None, after: dict) -> bool:
    """True when ``after`` is ``before`` plus exactly this transaction's one counted statement."""
    return (before is not None and after["store_id"] == before["store_id"]
            and after["rewrites"] == before["rewrites"] and after["changes"] == before["changes"] + 1)
