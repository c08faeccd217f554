"""Embedded store: one SQLite database in WAL mode, its index file beside it.

Every add is one transaction (request row + sample rows), so a crash leaves either the
whole request or nothing. Vectors are stored compactly (int8 by default,
:mod:`lethe.store.codec`); rows of older stores (float32) are read as they are.

The in-memory index (:mod:`lethe.store.live`) is saved next to the database
(``store.db.index.json`` + ``store.db.index.<token>.usearch``) and loaded at open when its
record matches the database: the database keeps a change counter that triggers bump on
every insert, update or delete of a request (and a second one for any update or delete of
a sample row), so a stale, foreign or corrupt file is detected and the index is caught up
or rebuilt, never trusted blindly.

Several processes may use one database (``lethe serve`` and the CLI on one home). Each
notices the others' commits through ``PRAGMA data_version``, which changes for a
connection whenever another connection commits: it is checked on the read path
(``version()``, ``search``; at most every ``check_interval_s``) and by a background
watcher every ``poll_interval_s``, so subscribers (the detector's refit) run without
traffic too. A change is applied incrementally: requests that became live are loaded,
revoked ones leave the index.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lethe.store.base import STORES, ForgetRequest, Match, NegativeSample
from lethe.store.codec import format_for
from lethe.store.index import IndexParams
from lethe.store.indexed import StoreView, own_rows
from lethe.store.keys import KeySource, resolve_key
from lethe.store.live import LiveIndex, PersistParams, Rows
from lethe.store.sqlite_schema import STATE, connect, init_meta, meta_get
from lethe.store.tables import Item, TableStore, add_error, follows

if TYPE_CHECKING:
    from lethe.config import StoreConfig

log = logging.getLogger("lethe.store.sqlite")

_CHUNK = 500  # request ids per IN (...) query
_ROWS = 50_000  # rows per batch when loading the index


@STORES.register("sqlite")
class SQLiteStore(TableStore):
    """SQLite-backed :class:`UnlearnStore`.

    ``key``: where the name-hashing key lives (default: ``$LETHE_SECRET``, else
    ``store.key`` beside the database). ``watch``: run the background watcher that
    applies other processes' changes; ``check_interval_s`` rate-limits the read-path check.
    ``vector_format``: how new rows keep their vectors (i8, f16, f32). ``index``: the
    index's parameters (:class:`~lethe.store.index.IndexParams`). ``index_file``: keep the
    index in a file beside the database (``False``: rebuild at every open). ``lazy_index``:
    load the index at the first search instead of at open (admin commands that only list
    or revoke; the default when ``dim`` is ``None``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        dim: int | None = 384,
        key: KeySource | None = None,
        watch: bool = True,
        poll_interval_s: float = 0.25,
        check_interval_s: float = 0.1,
        vector_format: str = "i8",
        index: IndexParams | dict | None = None,
        index_file: bool = True,
        persist: PersistParams | dict | None = None,
        lazy_index: bool | None = None,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.dim = dim or 384
        self.poll_interval_s = poll_interval_s
        self.check_interval_s = check_interval_s
        self._lock = threading.RLock()
        self._subscribers: list[Callable[[], None]] = []
        self._index_params = IndexParams.of(index)
        self._persist = persist if isinstance(persist, PersistParams) else PersistParams(**(persist or {}))
        self._index_base = self.path.with_name(self.path.name + ".index") if index_file else None
        self._db = connect(self.path)
        stored = init_meta(self._db, dim, self.path)
        if stored is not None and dim is None:
            self.dim = stored
        self.vector_format = format_for(vector_format, self.dim)
        self._key = resolve_key(key or KeySource(file=self.path.parent / "store.key"), self._meta,
                                self._meta_put, self._meta_delete, str(self.path))
        self._version = 0
        self._data_version = self._pragma_data_version()
        self._last_check = time.monotonic()
        self._live = LiveIndex(self.dim, self._index_params)
        self._loaded = False
        if not (dim is None if lazy_index is None else lazy_index):
            self._ensure_index()
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
            return meta_get(self._db, key)

    def _meta_put(self, key: str, value: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))

    def _meta_delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM meta WHERE key=?", (key,))
            # the old page may survive in the write-ahead log until a checkpoint copies it back
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def secret(self) -> bytes:
        return self._key

    # -- the index: database side (lethe.store.indexed.IndexedStore) ------------------
    def _state(self) -> dict:
        row = self._db.execute(STATE).fetchone()
        sid = row[0].decode() if isinstance(row[0], bytes) else str(row[0])
        return {"store_id": sid, "changes": int(row[1]), "rewrites": int(row[2]), "max_id": int(row[3] or 0)}

    def _live_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT id FROM requests WHERE revoked_at IS NULL")}

    def _rows(self, request_ids: list[str] | None) -> Iterator[Rows]:
        """Positive sample rows of live requests (``None``: of all of them, in one scan)."""
        q = f"SELECT {self.SAMPLE_COLS_S} FROM samples s"
        if request_ids is None:
            cur = self._db.execute(q + " JOIN requests r ON r.id = s.request_id WHERE r.revoked_at IS NULL AND "
                                   "s.role != 'hard_negative' ORDER BY s.id")
            while batch := cur.fetchmany(_ROWS):
                yield self._index_rows(batch)
            return
        for i in range(0, len(request_ids), _CHUNK):
            part = request_ids[i:i + _CHUNK]
            batch = self._db.execute(q + f" WHERE s.role != 'hard_negative' AND s.request_id IN "
                                     f"({','.join('?' * len(part))}) ORDER BY s.id", part).fetchall()
            if batch:
                yield self._index_rows(batch)

    def _after(self, max_id: int) -> set[str]:
        # NOT INDEXED: a range on the rowid, not a scan of the whole request-id index
        return {r[0] for r in self._db.execute("SELECT DISTINCT request_id FROM samples NOT INDEXED WHERE id > ?",
                                               (max_id,))}

    def _vectors(self, max_id: int) -> Iterator[tuple[np.ndarray, tuple[bytes, ...]]]:
        """(ids, blobs) of every positive sample up to ``max_id``, revoked ones too, in one rowid scan."""
        cur = self._db.execute("SELECT id, embedding FROM samples NOT INDEXED WHERE id <= ? AND "
                               "role != 'hard_negative'", (max_id,))
        try:
            while batch := cur.fetchmany(_ROWS):
                ids, blobs = zip(*batch, strict=True)
                yield np.fromiter(ids, np.int64, len(ids)), blobs
        finally:
            cur.close()

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[StoreView]:
        with self._lock:
            self._db.execute("BEGIN")  # one read snapshot for the state, the live set and the rows
            try:
                yield StoreView(self._state, self._live_ids, self._rows, self._after, self._vectors)
            finally:
                self._db.execute("COMMIT")

    def _before_load(self) -> None:
        self._data_version = self._pragma_data_version()

    # -- other processes' changes -----------------------------------------------------
    def _pragma_data_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def poll(self) -> bool:
        """Apply other processes' commits, if any, and tell subscribers; True when something changed."""
        with self._lock:
            self._last_check = time.monotonic()
            dv = self._pragma_data_version()
            if dv == self._data_version:
                return False
            self._data_version = dv
            if not self._loaded:
                self._version += 1
                changed = True
            else:
                changed = self._resync()
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
                if self._loaded:
                    self._maybe_save()
            except sqlite3.ProgrammingError:  # closed
                return
            except Exception:
                log.exception("store watcher failed")

    def version(self) -> int:
        self._maybe_poll()
        return self._version

    def refresh(self) -> None:
        """Rebuild the index from the database and tell subscribers."""
        self._resync(full=True)
        self._notify()

    # -- writes ----------------------------------------------------------------------
    def _next_id(self) -> int:
        seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name='samples'").fetchone()
        top = self._db.execute("SELECT max(id) FROM samples").fetchone()[0]
        return max(int(seq[0]) if seq else 0, int(top or 0)) + 1

    def _insert(self, items: list[Item]) -> None:
        """Insert requests and their samples in the open transaction; sets the sample ids."""
        self._db.executemany(f"INSERT INTO requests ({self.NEW_REQ_COLS}) VALUES (?,?,?,?,?,?,?)",
                             [self._request_row(r) for r, _ in items])
        rows = self._sample_rows(items, itertools.count(self._next_id()))
        self._db.executemany(f"INSERT INTO samples ({self.SAMPLE_COLS}) VALUES (?,?,?,?,?)", rows)

    def _apply_own(self, items: list[Item], before: dict | None, after: dict) -> None:
        """Index this process's committed adds; the state stays known when nothing else came in between."""
        if not self._loaded:
            return
        self._live.add(own_rows(items, self._live), live=[req.id for req, _ in items])
        self._live.state = after if follows(before, after, len(items)) else None

    def add_request(self, request: ForgetRequest, samples: list[NegativeSample]) -> str:
        self.add_requests([(request, samples)])
        return request.id

    def _add_batch(self, items: list[Item]) -> list[str]:
        with self._lock:
            before = self._live.state
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._insert(items)
                after = self._state()
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                self._db.execute("ROLLBACK")
                raise add_error(items, exc) from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._apply_own(items, before, after)
            self._version += 1
        self._notify()
        return [r.id for r, _ in items]

    def revoke(self, request_id: str) -> bool:
        with self._lock:
            before = self._live.state
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "UPDATE requests SET revoked_at=? WHERE id=? AND revoked_at IS NULL", (time.time(), request_id)
                )
                revoked = cur.rowcount > 0
                after = self._state()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            removed = self._live.remove(request_id)  # False: unknown here, or revoked elsewhere
            if revoked:
                self._live.state = after if follows(before, after, 1) else None
            if not revoked and not removed:
                return False
            self._version += 1
        self._notify()
        return revoked  # False: another process revoked it first (now applied here too)

    # -- reads -----------------------------------------------------------------------
    def get_request(self, request_id: str) -> ForgetRequest | None:
        with self._lock:
            row = self._db.execute(f"SELECT {self.REQ_COLS} FROM requests WHERE id=?", (request_id,))\
                .fetchone()
        return self._to_request(row) if row else None

    def list_requests(self, include_revoked: bool = False) -> list[ForgetRequest]:
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        with self._lock:
            rows = self._db.execute(f"SELECT {self.REQ_COLS} FROM requests{where} ORDER BY created_at")\
                .fetchall()
        return [self._to_request(r) for r in rows]

    def samples(self, live_only: bool = True) -> list[NegativeSample]:
        q = f"SELECT {self.SAMPLE_COLS_S} FROM samples s JOIN requests r ON r.id=s.request_id"
        if live_only:
            q += " WHERE r.revoked_at IS NULL"
        with self._lock:
            rows = self._db.execute(q + " ORDER BY s.id").fetchall()
        return self._to_samples(rows)

    def samples_of(self, request_ids: Iterable[str]) -> list[NegativeSample]:
        ids = list(dict.fromkeys(request_ids))
        out: list[NegativeSample] = []
        with self._lock:
            for i in range(0, len(ids), _CHUNK):
                part = ids[i:i + _CHUNK]
                out += self._to_samples(self._db.execute(
                    f"SELECT {self.SAMPLE_COLS} FROM samples WHERE request_id IN "
                    f"({','.join('?' * len(part))}) ORDER BY id", part).fetchall())
        return out

    def search(self, embeddings: np.ndarray, k: int = 5) -> list[list[Match]]:
        self._ensure_index()
        self._maybe_poll()
        return self._live.search(np.atleast_2d(embeddings), k)

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout=2)
        with self._lock:
            if self._loaded:
                try:
                    self._save_at_close()
                except Exception:
                    log.exception("saving the store index at close failed")
            self._db.close()

