"""Embedded store: one SQLite database in WAL mode, plus an in-memory vector index.

Every add is one transaction (request row + sample rows), so a crash leaves either the
whole request or nothing. The index is built from the database on open and kept in step
on this process's adds and revokes.

Several processes may use one database (``lethe serve`` and the CLI on one home). Each
notices the others' commits through ``PRAGMA data_version``, which changes for a
connection whenever another connection commits: it is checked on the read path
(``version()``, ``search``; at most every ``check_interval_s``) and by a background
watcher every ``poll_interval_s``, so subscribers (the detector's refit) run without
traffic too. A change is applied incrementally: requests that became live are loaded,
revoked ones leave the index.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
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

log = logging.getLogger("lethe.store.sqlite")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject TEXT,
    policy TEXT,
    entities TEXT NOT NULL DEFAULT '[]',
    n_prompts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL REFERENCES requests(id),
    role TEXT NOT NULL,
    text TEXT,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS samples_request ON samples(request_id);
"""
_CHUNK = 500  # request ids per IN (...) query


@STORES.register("sqlite")
class SQLiteStore(UnlearnStore):
    """SQLite-backed :class:`UnlearnStore`.

    ``key``: where the name-hashing key lives (default: ``$LETHE_SECRET``, else
    ``store.key`` beside the database). ``watch``: run the background watcher that
    applies other processes' changes; ``check_interval_s`` rate-limits the read-path check.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        dim: int | None = 384,
        key: KeySource | None = None,
        watch: bool = True,
        poll_interval_s: float = 0.25,
        check_interval_s: float = 0.1,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dim = dim or 384
        self.poll_interval_s = poll_interval_s
        self.check_interval_s = check_interval_s
        self._lock = threading.RLock()
        self._subscribers: list[Callable[[], None]] = []
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA secure_delete=ON")  # deleted bytes are zeroed, not left in free pages
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from None
        self._init_meta(dim)
        self._key = resolve_key(key or KeySource(file=self.path.parent / "store.key"), self._meta,
                                self._meta_put, self._meta_delete, str(self.path))
        self._index = VectorIndex(self.dim)
        self._by_request: dict[str, list[int]] = {}  # live request -> its indexed sample ids
        self._version = 0
        self._data_version = self._pragma_data_version()
        self._last_check = time.monotonic()
        self._sync(full=True)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if watch:
            self._watcher = threading.Thread(target=self._watch_loop, name="lethe-sqlite-watch", daemon=True)
            self._watcher.start()

    @classmethod
    def from_config(cls, config: StoreConfig, home: Path, dim: int) -> SQLiteStore:
        path = Path(config.path).expanduser() if config.path else Path("store.db")
        key_file = Path(config.key_file).expanduser() if config.key_file else Path("store.key")
        return cls(home / path, dim=dim, key=KeySource(env=config.secret_env or None, file=home / key_file),
                   **config.options)

    # -- meta ------------------------------------------------------------------------
    def _meta(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        return row[0].encode() if isinstance(row[0], str) else bytes(row[0])

    def _meta_put(self, key: str, value: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))

    def _meta_delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM meta WHERE key=?", (key,))
            # the old page may survive in the write-ahead log until a checkpoint copies it back
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _init_meta(self, dim: int | None) -> None:
        """Schema version and embedding size; ``dim=None`` takes the stored size (list, revoke)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._meta("schema_version") is None:
                    self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                stored = self._meta("dim")
                if stored is None and dim is not None:
                    self._db.execute("INSERT INTO meta VALUES ('dim', ?)", (str(dim),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if stored is not None and dim is None:
            self.dim = int(stored)
        elif stored is not None and int(stored) != dim:
            raise StoreError(f"store {self.path} holds {int(stored)}-d embeddings but the embedder gives {dim}-d")

    def secret(self) -> bytes:
        return self._key

    # -- index and other processes' changes -------------------------------------------
    def _pragma_data_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def _sync(self, full: bool = False) -> bool:
        """Bring the index in line with the database; True when anything changed."""
        with self._lock:
            self._db.execute("BEGIN")  # one snapshot for the live set and its samples
            try:
                live = {r[0] for r in self._db.execute("SELECT id FROM requests WHERE revoked_at IS NULL")}
                if full:
                    self._index.clear()
                    self._by_request.clear()
                gone = set(self._by_request) - live
                new = sorted(live - set(self._by_request))
                rows: list[tuple] = []
                for i in range(0, len(new), _CHUNK):
                    part = new[i:i + _CHUNK]
                    rows += self._db.execute(
                        "SELECT id, request_id, embedding FROM samples WHERE role != 'hard_negative' AND "
                        f"request_id IN ({','.join('?' * len(part))}) ORDER BY id", part).fetchall()
            finally:
                self._db.execute("COMMIT")
            for rid in gone:
                self._index.remove(self._by_request.pop(rid))
            for rid in new:
                self._by_request[rid] = []
            for r in rows:
                self._by_request[r[1]].append(int(r[0]))
            if rows:
                self._index.add([int(r[0]) for r in rows], np.stack([np.frombuffer(r[2], np.float32) for r in rows]))
            changed = bool(gone or new)
            if changed or full:
                self._version += 1
        return changed

    def poll(self) -> bool:
        """Apply other processes' commits, if any, and tell subscribers; True when something changed."""
        with self._lock:
            self._last_check = time.monotonic()
            dv = self._pragma_data_version()
            if dv == self._data_version:
                return False
            self._data_version = dv
            changed = self._sync()
        if changed:
            self._notify()
        return changed

    def _maybe_poll(self) -> None:
        if time.monotonic() - self._last_check >= self.check_interval_s:
            try:
                self.poll()
            except sqlite3.Error as exc:
                log.warning("store check failed: %s", exc)

    def _watch_loop(self) -> None:
        while not self._stop.wait(self.poll_interval_s):
            try:
                self.poll()
            except sqlite3.ProgrammingError:  # closed
                return
            except Exception:
                log.exception("store watcher failed")

    def version(self) -> int:
        self._maybe_poll()
        return self._version

    def refresh(self) -> None:
        """Re-read the whole database and tell subscribers."""
        self._sync(full=True)
        self._notify()

    # -- writes ----------------------------------------------------------------------
    def add_request(self, request: ForgetRequest, samples: list[NegativeSample]) -> str:
        for s in samples:
            if s.embedding.shape != (self.dim,):
                raise StoreError(f"sample embedding has shape {s.embedding.shape}, expected ({self.dim},)")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO requests (id, kind, subject, policy, entities, n_prompts, created_at, revoked_at)"
                    " VALUES (?,?,?,?,?,?,?,NULL)",
                    (request.id, request.kind, request.subject, request.policy,
                     json.dumps(request.entities), request.n_prompts, request.created_at),
                )
                for s in samples:
                    cur = self._db.execute(
                        "INSERT INTO samples (request_id, role, text, embedding) VALUES (?,?,?,?)",
                        (request.id, s.role, s.text, np.asarray(s.embedding, dtype=np.float32).tobytes()),
                    )
                    s.id = int(cur.lastrowid or 0)
                    s.request_id = request.id
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"cannot add request {request.id}: {exc}") from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            pos = [s for s in samples if s.role != "hard_negative"]
            self._by_request[request.id] = [int(s.id or 0) for s in pos]
            if pos:
                self._index.add([int(s.id or 0) for s in pos], np.stack([s.embedding for s in pos]))
            self._version += 1
        self._notify()
        return request.id

    def revoke(self, request_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "UPDATE requests SET revoked_at=? WHERE id=? AND revoked_at IS NULL", (time.time(), request_id)
            )
            revoked = cur.rowcount > 0
            ids = self._by_request.pop(request_id, None)  # None: unknown here, or revoked elsewhere
            if ids:
                self._index.remove(ids)
            if not revoked and ids is None:
                return False
            self._version += 1
        self._notify()
        return revoked  # False: another process revoked it first (now applied here too)

    # -- reads -----------------------------------------------------------------------
    @staticmethod
    def _row_to_request(row: tuple) -> ForgetRequest:
        return ForgetRequest(
            id=row[0], kind=row[1], subject=row[2], policy=row[3], entities=json.loads(row[4]),
            n_prompts=row[5], created_at=row[6], revoked_at=row[7],
        )

    _REQ_COLS = "id, kind, subject, policy, entities, n_prompts, created_at, revoked_at"

    def get_request(self, request_id: str) -> ForgetRequest | None:
        with self._lock:
            row = self._db.execute(f"SELECT {self._REQ_COLS} FROM requests WHERE id=?", (request_id,)).fetchone()
        return self._row_to_request(row) if row else None

    def list_requests(self, include_revoked: bool = False) -> list[ForgetRequest]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        with self._lock:
            rows = self._db.execute(f"SELECT {self._REQ_COLS} FROM requests{where} ORDER BY created_at").fetchall()
        return [self._row_to_request(r) for r in rows]

    def live_count(self) -> int:
        """Live requests in this process's index."""
        with self._lock:
            return len(self._by_request)

    def samples(self, live_only: bool = True) -> list[NegativeSample]:
        q = "SELECT s.id, s.request_id, s.role, s.text, s.embedding FROM samples s JOIN requests r ON r.id=s.request_id"
        if live_only:
            q += " WHERE r.revoked_at IS NULL"
        with self._lock:
            rows = self._db.execute(q + " ORDER BY s.id").fetchall()
        return [
            NegativeSample(id=r[0], request_id=r[1], role=r[2], text=r[3],
                           embedding=np.frombuffer(r[4], dtype=np.float32).copy())
            for r in rows
        ]

    def _samples_by_id(self, ids: list[int]) -> dict[int, NegativeSample]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, request_id, role, text, embedding FROM samples WHERE id IN ({marks})", ids
            ).fetchall()
        return {
            r[0]: NegativeSample(id=r[0], request_id=r[1], role=r[2], text=r[3],
                                 embedding=np.frombuffer(r[4], dtype=np.float32).copy())
            for r in rows
        }

    def search(self, embeddings: np.ndarray, k: int = 5) -> list[list[Match]]:
        self._maybe_poll()
        hits = self._index.search(np.atleast_2d(embeddings), k)
        by_id = self._samples_by_id(sorted({key for row in hits for key, _ in row}))
        return [[Match(by_id[key], score) for key, score in row if key in by_id] for row in hits]

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=2)
        with self._lock:
            self._db.close()
