"""How a PostgreSQL replica follows the others: LISTEN/NOTIFY, applied to its index as it arrives.

Adds and revokes send ``NOTIFY`` inside their transaction (delivered on commit, in commit
order); a listener thread in every replica applies each to its index, typically within
milliseconds. Every notification carries the change counter it produced, so a replica
knows the database state its index matches between reconcile passes; a reconcile every
``poll_interval_s`` (and after a reconnect) diffs against the database and repairs
anything a dropped connection missed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from lethe.store.indexed import IndexedStore
from lethe.store.live import Rows

log = logging.getLogger("lethe.store.postgres")


class ChangeListener(IndexedStore):
    """The listener side of :class:`~lethe.store.postgres.PostgresStore`."""

    dsn: str
    channel: str
    poll_interval_s: float
    _stop: threading.Event
    listening: threading.Event
    _read: Callable[..., list[tuple]]
    _notify: Callable[[], None]

    def reconcile(self, full: bool = False) -> bool:
        """Bring the local index in line with the database; True when anything changed."""
        if not self._loaded:
            return False
        return self._resync(full)

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



def _advance(state: dict | None, changes: int, max_id: int | None) -> dict | None:
    """The state after a notified change numbered ``changes`` (None: unknown from here)."""
    if state is None:
        return None
    if changes <= state["changes"]:  # already in the index (this replica's own change)
        return state
    if changes == state["changes"] + 1:
        return {**state, "changes": changes, "max_id": max(state["max_id"], max_id or 0)}
    return None  # a notification was missed: the reconcile pass repairs

