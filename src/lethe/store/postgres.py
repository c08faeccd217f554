"""Shared store for several guard replicas: PostgreSQL (psycopg 3) plus a local index per replica.

Requests and samples live in tables of one PostgreSQL schema (default ``lethe``,
migrated by :mod:`lethe.store.postgres_schema`). Every replica keeps its own
index of the live positive samples (:mod:`lethe.store.live`: vectors, request of each
sample, rewrite texts), so a detection never touches the database. Adds and revokes are
one transaction each and send ``NOTIFY`` in it (delivered on commit, in commit order); a
listener thread in every replica applies them to its index as they arrive
(:mod:`lethe.store.postgres_listen`).

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
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lethe.errors import StoreError
from lethe.store.base import STORES, ForgetRequest, Match, NegativeSample
from lethe.store.codec import format_for
from lethe.store.index import IndexParams
from lethe.store.indexed import StoreView, own_rows
from lethe.store.keys import KeySource, resolve_key
from lethe.store.live import LiveIndex, PersistParams, Rows
from lethe.store.postgres_listen import ChangeListener
from lethe.store.postgres_schema import SCHEMA_RE, STATE, connect, first_line, migrate, redact
from lethe.store.tables import Item, TableStore, add_error, follows

if TYPE_CHECKING:
    from lethe.config import StoreConfig

log = logging.getLogger("lethe.store.postgres")

_ROWS = 50_000  # rows per fetch when loading the index


@STORES.register("postgres")
class PostgresStore(ChangeListener, TableStore):
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
        if not SCHEMA_RE.match(schema):
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
        self._conn = connect(dsn)
        with self._lock:
            migrate(self._db(), self._s)
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
                raise StoreError(f"PostgreSQL unreachable: {first_line(exc)}") from None
        return self._conn

    def _read(self, query: str, params: tuple | list = ()) -> list[tuple]:
        import psycopg

        with self._lock:
            for attempt in (0, 1):
                try:
                    return self._db().execute(query.format(s=self._s), params).fetchall()
                except psycopg.OperationalError as exc:
                    if attempt:
                        raise StoreError(f"PostgreSQL read failed: {first_line(exc)}") from None
        return []

    def ping(self) -> bool:
        try:
            return self._read("SELECT 1") == [(1,)]
        except StoreError:
            return False

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
                        first_line(exc))

    def _write(self, query: str, params: tuple) -> None:
        import psycopg

        with self._lock:
            try:
                self._db().execute(query.format(s=self._s), params)
            except psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL write failed: {first_line(exc)}") from None

    def _resolve_key(self, source: KeySource) -> bytes:
        return resolve_key(source, self._meta, self._meta_put, self._meta_delete,
                           f"{redact(self.dsn)} (schema {self.schema})")

    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = self._resolve_key(KeySource())
        return self._secret

    # -- the index: database side (lethe.store.indexed.IndexedStore) ------------------
    def _state(self, conn) -> dict:
        row = conn.execute(STATE.format(s=self._s)).fetchone()
        return {"store_id": str(row[0]), "changes": int(row[1]), "rewrites": int(row[2]), "max_id": int(row[3])}

    def _rows(self, conn, request_ids: list[str] | None) -> Iterator[Rows]:
        q = (f"SELECT {self.SAMPLE_COLS_S} FROM {self._s}.samples s"
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
                yield self._index_rows(batch)

    def _vectors(self, conn, max_id: int) -> Iterator[tuple[np.ndarray, list[bytes]]]:
        """(ids, blobs) of every positive sample up to ``max_id``, revoked ones too, streamed."""
        with conn.cursor(name=f"lethe_vectors_{threading.get_ident()}", binary=True) as cur:  # bytea unencoded
            cur.itersize = _ROWS
            cur.execute(f"SELECT id, embedding FROM {self._s}.samples WHERE id <= %s AND role != 'hard_negative'",
                        (max_id,))
            while batch := cur.fetchmany(_ROWS):
                ids, blobs = zip(*batch, strict=True)
                yield np.fromiter(ids, np.int64, len(ids)), [bytes(b) for b in blobs]

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
                        lambda max_id: self._vectors(conn, max_id),
                    )
            except psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL read failed: {first_line(exc)}") from None

    # -- writes ------------------------------------------------------------------------
    def add_request(self, request: ForgetRequest, samples: list[NegativeSample]) -> str:
        self._check(samples)
        self._commit([(request, samples)], bulk=False)
        return request.id

    def _add_batch(self, items: list[Item]) -> list[str]:
        """A batch with ``COPY`` (replicas reconcile once per batch)."""
        return self._commit(items, bulk=True)

    def _commit(self, items: list[Item], bulk: bool) -> list[str]:
        import psycopg

        s_ = self._s
        n_samples = sum(len(x) for _, x in items)
        before = self._live.state
        with self._lock:
            conn = self._db()
            try:
                with conn.transaction():
                    ids = [int(r[0]) for r in conn.execute(
                        f"SELECT nextval(pg_get_serial_sequence('{s_}.samples', 'id')) FROM generate_series(1, %s)",
                        (n_samples,)).fetchall()] if n_samples else []
                    rrows = [self._request_row(r) for r, _ in items]
                    srows = self._sample_rows(items, iter(ids))
                    with conn.cursor() as cur:
                        if bulk:
                            with cur.copy(f"COPY {s_}.requests ({self.NEW_REQ_COLS}) FROM STDIN") as cp:
                                for row in rrows:
                                    cp.write_row(row)
                            if srows:
                                with cur.copy(f"COPY {s_}.samples ({self.SAMPLE_COLS}) FROM STDIN") as cp:
                                    for row in srows:
                                        cp.write_row(row)
                        else:
                            cur.execute(f"INSERT INTO {s_}.requests ({self.NEW_REQ_COLS})"
                                        " VALUES (%s,%s,%s,%s,%s,%s,%s)", rrows[0])
                            if srows:
                                cur.executemany(f"INSERT INTO {s_}.samples ({self.SAMPLE_COLS})"
                                                " VALUES (%s,%s,%s,%s,%s)", srows)
                        after = self._state(conn)
                    payload = (f"batch:{after['changes']}:{after['max_id']}" if bulk else
                               f"add:{items[0][0].id}:{after['changes']}:{after['max_id']}")
                    conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
            except psycopg.IntegrityError as exc:
                raise add_error(items, exc) from None
            except psycopg.OperationalError as exc:
                raise StoreError(f"PostgreSQL write failed: {first_line(exc)}") from None
            if self._loaded:
                self._live.add(own_rows(items, self._live), live=[r.id for r, _ in items])
                if self._live.state is before:
                    self._live.state = after if follows(before, after, 1) else None
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
                raise StoreError(f"PostgreSQL write failed: {first_line(exc)}") from None
            if self._loaded:
                self._live.remove(request_id)
                if self._live.state is before:
                    self._live.state = after if follows(before, after, 1) else None
            self._version += 1
        self._notify()
        return True

    # -- reads -------------------------------------------------------------------------
    def get_request(self, request_id: str) -> ForgetRequest | None:
        rows = self._read(f"SELECT {self.REQ_COLS} FROM {{s}}.requests WHERE id=%s", (request_id,))
        return self._to_request(rows[0]) if rows else None

    def list_requests(self, include_revoked: bool = False) -> list[ForgetRequest]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        rows = self._read(f"SELECT {self.REQ_COLS} FROM {{s}}.requests{where} ORDER BY created_at, id")
        return [self._to_request(r) for r in rows]

    def samples(self, live_only: bool = True) -> list[NegativeSample]:
        q = f"SELECT {self.SAMPLE_COLS_S} FROM {{s}}.samples s JOIN {{s}}.requests r ON r.id = s.request_id"
        if live_only:
            q += " WHERE r.revoked_at IS NULL"
        return self._to_samples(self._read(q + " ORDER BY s.id"))

    def samples_of(self, request_ids: Iterable[str]) -> list[NegativeSample]:
        ids = list(dict.fromkeys(request_ids))
        if not ids:
            return []
        return self._to_samples(self._read(f"SELECT {self.SAMPLE_COLS} FROM {{s}}.samples"
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
