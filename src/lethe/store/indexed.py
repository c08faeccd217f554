"""The index side of a store backend: open the index from its file or the database, keep it in
line with the database, save it, and answer what this process enforces.

The database is the truth; :class:`~lethe.store.live.LiveIndex` is the searchable copy
each process keeps. A backend (SQLite, PostgreSQL) supplies one consistent read of its
database (:class:`StoreView`); this module decides whether a saved index file can be used,
caught up or must be rebuilt, and when it is written again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from lethe.store.base import ForgetRequest, NegativeSample
from lethe.store.index import IndexFileError, IndexParams
from lethe.store.live import DatabaseFill, LiveIndex, PersistParams, Rows

log = logging.getLogger("lethe.store.index")


class IndexedStore:
    """The index side of a store backend: open from the index file or the database, catch up, save.

    A backend provides a consistent view of four things through :meth:`_snapshot` (the
    database state, the live request ids, rows of given requests, and the requests with
    rows newer than a sample id). The *database state* is ``store_id`` (random, made with
    the database), ``changes`` (bumped by triggers on every insert, update and delete of a
    request row), ``rewrites`` (bumped on every update or delete of a sample row) and
    ``max_id`` (the largest sample id). An index whose state has the same ``store_id`` and
    ``rewrites`` and no larger ``changes``/``max_id`` can be brought up to date by a
    diff of live requests plus a reload of requests with newer rows; anything else is
    rebuilt. A state read *before* the contents it describes is safe (the diff is
    idempotent); one read after them is not, so backends read the state first.
    """

    dim: int
    _live: LiveIndex
    _index_params: IndexParams
    _persist: PersistParams
    _index_base: Path | None
    _rebuilds: int = 0
    _saver: threading.Thread | None = None

    _lock: threading.RLock
    _loaded: bool
    _version: int

    @abstractmethod
    def _snapshot(self) -> contextlib.AbstractContextManager[StoreView]: ...

    def _before_load(self) -> None:  # noqa: B027 - optional hook
        """Runs under the lock just before the index is first loaded."""

    def _ensure_index(self) -> None:
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self._before_load()
                    self._open_index()
                    self._loaded = True
                    self._version += 1

    def live_count(self) -> int:
        """Live requests in this process's index."""
        self._ensure_index()
        return self._live.n_requests()

    def live_here(self, request_id: str) -> bool:
        """Whether this process's index holds ``request_id`` as live (what its searches enforce)."""
        self._ensure_index()
        return request_id in self._live

    def indexed_count(self) -> int:
        """Vectors in this process's index."""
        self._ensure_index()
        return len(self._live)

    def _open_index(self) -> None:
        """Load the index file if it is usable and bring it up to date; else rebuild from the database."""
        t0 = time.perf_counter()
        live: LiveIndex | None = None
        how = "rebuilt"
        with self._snapshot() as view:
            state = view.state()
            if self._index_base is not None:
                try:  # the graph's rows come from this same read of the database
                    live = LiveIndex.load(self._index_base, self.dim, self._index_params,
                                          lambda max_id: DatabaseFill(view.vectors(max_id), self.dim,
                                                                   self._index_params.dtype))
                except IndexFileError as exc:
                    missing = str(exc).startswith("no index file")
                    (log.info if missing else log.warning)("%s; rebuilding the index from the database", exc)
            if live is not None and not _can_catch_up(live.state, state):
                log.warning("the index file %s is from another state of the database (%s, now %s); rebuilding",
                            self._index_base, live.state, state)
                live = None
            if live is None:
                live = self._build(view, state)
            else:
                how = "loaded" if live.state == state else "loaded and caught up"
                self._catch_up(live, view, state)
        self._live = live
        self.index_open = {"how": how, "seconds": round(time.perf_counter() - t0, 3), "vectors": len(live)}
        log.info("store index %s: %d vectors of %d requests in %.2f s", how, len(live), live.n_requests(),
                 time.perf_counter() - t0)
        if how != "loaded" and self._index_base is not None and live.dirty:
            self._save_soon()

    def _build(self, view: StoreView, state: dict) -> LiveIndex:
        live = LiveIndex(self.dim, self._index_params)
        ids = sorted(view.live_requests())
        for rows in view.rows(None):  # every live positive row, in one scan
            live.add(rows, only_new=False)
        live.add(Rows([], np.empty(0, np.int64), [], []), live=ids)
        live.state = state
        live.dirty = max(live.dirty, 1)
        self._rebuilds += 1
        return live

    def _resync(self, full: bool = False) -> bool:
        """Bring the index in line with the database (``full``: rebuild it); True when anything changed."""
        with self._lock:
            if full:
                with self._snapshot() as view:
                    self._live = self._build(view, view.state())
                self._loaded = True
                changed = True
            else:
                changed = self._refresh_index()
            if changed:
                self._version += 1
        return changed

    def _refresh_index(self) -> bool:
        """Apply the database's changes to the running index (rebuild when they cannot be applied)."""
        with self._snapshot() as view:
            state = view.state()
            live = self._live
            if live.state == state:
                return False
            if live.state is not None and not _can_catch_up(live.state, state):
                log.warning("sample rows changed in place (%s, now %s): rebuilding the index", live.state, state)
                self._live = self._build(view, state)
                return True
            return self._catch_up(live, view, state)

    def _catch_up(self, live: LiveIndex, view: StoreView, state: dict) -> bool:
        """Apply the database's changes since ``live.state`` (None: unknown, diff the live sets only)."""
        db_live = view.live_requests()
        have = live.requests()
        reload: set[str] = set()
        if live.state is not None and state.get("max_id", 0) > live.state.get("max_id", 0):
            reload = view.requests_with_rows_after(int(live.state.get("max_id", 0))) & have & db_live
        gone = (have - db_live) | reload
        for rid in gone:
            live.remove(rid)
        new = sorted(db_live - (have - reload))
        for rows in view.rows(new):
            live.add(rows, only_new=False)
        live.add(Rows([], np.empty(0, np.int64), [], []), live=new)
        live.state = state
        return bool(gone or new)

    # -- saving ---------------------------------------------------------------------
    def save_index(self) -> bool:
        """Write the index file now (False without one, or when its state is unknown or a save runs)."""
        if self._index_base is None:
            return False
        return self._live.save(self._index_base)

    def _save_soon(self) -> None:
        if self._saver is not None and self._saver.is_alive():
            return
        self._saver = threading.Thread(target=self._save_quietly, name="lethe-index-save", daemon=True)
        self._saver.start()

    def _save_quietly(self) -> None:
        try:
            self.save_index()
        except Exception:
            log.exception("saving the store index failed (the next open rebuilds or catches up)")

    def _maybe_save(self) -> None:
        """Save in the background when enough changed and the last save is old enough."""
        live, p = self._live, self._persist
        if self._index_base is None or live.state is None or live.dirty == 0:
            return
        if live.dirty >= p.save_min_changes and time.monotonic() - live.saved_at >= p.save_interval_s:
            self._save_soon()

    def _save_at_close(self) -> None:
        if self._saver is not None:
            self._saver.join()
        live, p = getattr(self, "_live", None), self._persist
        if self._index_base is None or live is None or live.state is None or live.dirty == 0:
            return
        if live.dirty >= p.save_min_changes or len(live) <= p.small:
            self._save_quietly()


class StoreView:
    """One consistent read of a store's database (see :class:`IndexedStore`)."""

    def __init__(self, state: Callable[[], dict], live_requests: Callable[[], set[str]],
                 rows: Callable[[list[str] | None], Iterator[Rows]], requests_with_rows_after: Callable[[int], set[str]],
                 vectors: Callable[[int], Iterator[tuple[np.ndarray, Sequence[bytes]]]]):
        self.state, self.live_requests, self.rows = state, live_requests, rows
        self.requests_with_rows_after = requests_with_rows_after
        self.vectors = vectors  # (ids, blobs) of every positive sample with id <= max_id, revoked ones too


def own_rows(items: list[tuple[ForgetRequest, list[NegativeSample]]], live: LiveIndex) -> Rows:
    """The positive samples of requests this process just committed (ids set), as index rows."""
    pos = [(req.id, s) for req, samples in items for s in samples if s.role != "hard_negative"]
    vectors = live.index.rows(np.stack([s.embedding for _, s in pos])) if pos else np.empty((0, live.dim))
    return Rows([rid for rid, _ in pos], np.asarray([s.id for _, s in pos], dtype=np.int64),
                [s.role for _, s in pos], [s.text for _, s in pos], vectors=vectors)


def _can_catch_up(saved: dict | None, now: dict) -> bool:
    if not saved:
        return False
    return (saved.get("store_id") == now.get("store_id") and saved.get("rewrites") == now.get("rewrites")
            and saved.get("changes", 0) <= now.get("changes", 0) and saved.get("max_id", 0) <= now.get("max_id", 0))
