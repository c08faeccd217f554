"""The live positive samples of a store, as searched: vector index, match records, index file.

A store's database is the truth; this is the searchable copy every process keeps. It
holds the vectors (:mod:`lethe.store.index`) under keys that also say which request a
sample belongs to and its role, plus the texts of rewrites, so a search answers without
touching the database. Memory per sample is the index row and graph, one 8-byte key and
the text where there is one.

**The index file.** :meth:`LiveIndex.save` writes the graph to ``<base>.<token>.usearch``
(without the vectors, which the database holds: :mod:`lethe.store.index`) and then, as the
commit point, ``<base>.json``: the graph's size and CRC-32, the index
parameters, which request each key belongs to, the texts, and the *database state* the
contents correspond to (the store's id, its change counters and largest sample id, see
:class:`lethe.store.indexed.IndexedStore`). :meth:`LiveIndex.load` refuses a file whose record, size,
checksum, parameters or keys do not agree (:class:`~lethe.store.index.IndexFileError`);
the store then rebuilds from the database. Loading reads the vectors back from the database
(:class:`DatabaseFill`). A file whose state is behind the database is
brought up to date incrementally; one that cannot be (sample rows changed in place, a
different database) is rebuilt.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lethe.errors import StoreError
from lethe.store.base import Match, NegativeSample
from lethe.store.codec import blobs_for_index, from_index
from lethe.store.index import FREE_KEY, IndexFileError, IndexParams, VectorIndex, fsync_dir

log = logging.getLogger("lethe.store.index")

FILE_FORMAT = 2  # 1: the whole usearch file (vectors included), still read
REQ_SHIFT = 40  # key = request slot << 40 | rewrite << 39 | sample id
ROLE_BIT = 1 << 39
ID_MASK = ROLE_BIT - 1
MAX_SLOTS = 1 << 24


@dataclass
class Rows:
    """Samples to index: one entry per sample (``vectors`` in the index dtype, or database blobs)."""

    request_ids: list[str]
    ids: np.ndarray  # int64 sample ids
    roles: list[str]
    texts: list[str | None]
    vectors: np.ndarray | None = None
    blobs: list[bytes] | None = None

    def __len__(self) -> int:
        return len(self.request_ids)


@dataclass(frozen=True)
class PersistParams:
    """When a process writes its index file: after ``save_min_changes`` vectors changed, at most
    every ``save_interval_s``, and at close (a small index whenever it changed)."""

    save_min_changes: int = 2_000
    save_interval_s: float = 300.0
    small: int = 50_000


class LiveIndex:
    """Index + match records of the live positive samples; thread-safe."""

    def __init__(self, dim: int, params: IndexParams | dict | None = None, vectors: VectorIndex | None = None) -> None:
        self.dim = dim
        self.index = vectors or VectorIndex(dim, params)
        self.params = self.index.params
        self._lock = threading.RLock()
        self._names: list[str | None] = []  # slot -> request id (None: slot retired)
        self._slot: dict[str, int] = {}
        self._keys: dict[str, np.ndarray] = {}  # live request -> its keys
        self._texts: dict[int, str] = {}  # sample id -> text
        self.state: dict | None = None  # database state the contents match (None: unknown)
        self.dirty = 0  # vectors added or removed since the index file was written
        self.saved_at = time.monotonic()
        self._saving = threading.Lock()

    # -- contents -------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, request_id: object) -> bool:
        with self._lock:
            return request_id in self._keys

    def requests(self) -> set[str]:
        with self._lock:
            return set(self._keys)

    def n_requests(self) -> int:
        with self._lock:
            return len(self._keys)

    def sample_ids(self, request_id: str) -> np.ndarray:
        with self._lock:
            keys = self._keys.get(request_id)
        return np.empty(0, np.int64) if keys is None else (keys & np.uint64(ID_MASK)).astype(np.int64)

    def _slot_of(self, request_id: str) -> int:
        slot = self._slot.get(request_id)
        if slot is None:
            slot = len(self._names)
            if slot >= MAX_SLOTS:
                raise StoreError("the index has used all its request slots: rebuild it (refresh)")
            self._names.append(request_id)
            self._slot[request_id] = slot
        return slot

    def add(self, rows: Rows, live: list[str] = (), only_new: bool = True) -> set[str]:
        """Index ``rows`` and mark ``live`` (and every request of ``rows``) live; returns the requests
        that were not live here before. ``only_new``: drop rows of requests already live here."""
        with self._lock:
            before = set(self._keys)
            wanted = [i for i, rid in enumerate(rows.request_ids) if not (only_new and rid in before)]
            added = {rid for rid in list(live) + [rows.request_ids[i] for i in wanted] if rid not in before}
            if wanted:
                ids = np.asarray(rows.ids, dtype=np.int64)[wanted]
                if len(ids) and (ids.min() < 0 or ids.max() > ID_MASK):
                    raise StoreError("sample ids out of the index's key range")
                slots = np.fromiter((self._slot_of(rows.request_ids[i]) for i in wanted), np.uint64, len(wanted))
                rewrite = np.fromiter((rows.roles[i] == "rewrite" for i in wanted), bool, len(wanted))
                keys = (slots << np.uint64(REQ_SHIFT)) | (rewrite.astype(np.uint64) << np.uint64(39)) | \
                    ids.astype(np.uint64)
                if rows.vectors is not None:
                    vec = np.asarray(rows.vectors)[wanted]
                else:
                    assert rows.blobs is not None
                    vec = blobs_for_index([rows.blobs[i] for i in wanted], self.dim, self.params.dtype)
                self.index.add(keys, vec)
                order = np.argsort(slots, kind="stable")
                bounds = np.flatnonzero(np.diff(slots[order])) + 1
                for part in np.split(order, bounds):
                    rid = rows.request_ids[wanted[part[0]]]
                    old = self._keys.get(rid)
                    self._keys[rid] = keys[part] if old is None else np.concatenate([old, keys[part]])
                for j, i in enumerate(wanted):
                    if rows.texts[i]:
                        self._texts[int(ids[j])] = rows.texts[i]  # type: ignore[assignment]
                self.dirty += len(wanted)
            for rid in live:
                if rid not in self._keys:
                    self._slot_of(rid)
                    self._keys[rid] = np.empty(0, np.uint64)
            return added

    def remove(self, request_id: str) -> bool:
        """Drop a request and its samples; False when it was not live here."""
        with self._lock:
            keys = self._keys.pop(request_id, None)
            if keys is None:
                return False
            self.index.remove(keys)
            for sid in (keys & np.uint64(ID_MASK)).tolist():
                self._texts.pop(int(sid), None)
            slot = self._slot.pop(request_id)
            self._names[slot] = None
            self.dirty += len(keys)
            return True

    def search(self, queries: np.ndarray, k: int) -> list[list[Match]]:
        hits = self.index.search(np.atleast_2d(queries), k)
        keys = sorted({key for row in hits for key, _ in row})
        if not keys:
            return [[] for _ in hits]
        vectors = dict(zip(keys, from_index(self.index.get(keys)), strict=True))
        out: list[list[Match]] = []
        with self._lock:
            names, texts = self._names, self._texts
            for row in hits:
                matches = []
                for key, score in row:
                    slot, sid = key >> REQ_SHIFT, key & ID_MASK
                    rid = names[slot] if slot < len(names) else None
                    if rid is None:  # revoked meanwhile
                        continue
                    role = "rewrite" if key & ROLE_BIT else "augment"
                    matches.append(Match(NegativeSample(request_id=rid, embedding=vectors[key], role=role,
                                                        text=texts.get(sid), id=sid), score))
                out.append(matches)
        return out

    # -- the index file ---------------------------------------------------------------
    @staticmethod
    def _record_path(base: Path) -> Path:
        return base.with_name(base.name + ".json")

    def save(self, base: Path) -> bool:
        """Write the index file (graph, then the record); False when another save is running, another
        process holds the file lock, or the database state of the contents is unknown."""
        if not self._saving.acquire(blocking=False):
            return False
        try:
            with _file_lock(base.with_name(base.name + ".lock")) as locked:
                if not locked:
                    return False
                with self._lock:
                    if self.state is None:
                        return False
                    state, names = dict(self.state), list(self._names)
                    text_ids = list(self._texts)
                    texts = [self._texts[i] for i in text_ids]
                    count, dirty = len(self.index), self.dirty
                    self.index.freeze()
                try:
                    name = f"{base.name}.{secrets.token_hex(6)}.usearch"
                    size, crc = self.index.write(base.with_name(name))
                finally:
                    self.index.thaw()
                record = {"format": FILE_FORMAT, "file": name, "size": size, "crc32": crc, "dim": self.dim,
                          "build": self.params.build_key(), "count": count, "state": state, "requests": names,
                          "text_ids": text_ids, "texts": texts, "saved_at": time.time()}
                path = self._record_path(base)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
                    json.dump(record, f, ensure_ascii=False, separators=(",", ":"))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
                fsync_dir(path.parent)
                for old in base.parent.glob(f"{base.name}.*.usearch"):
                    if old.name != name:
                        old.unlink(missing_ok=True)
                with self._lock:
                    self.dirty -= dirty
                    self.saved_at = time.monotonic()
                log.info("saved the index of %d vectors to %s (%d bytes)", count, base.parent / name, size)
                return True
        finally:
            self._saving.release()

    @classmethod
    def load(cls, base: Path, dim: int, params: IndexParams,
             vectors: Callable[[int], DatabaseFill] | None = None) -> LiveIndex:
        """The index saved under ``base``, checked against its record; :class:`IndexFileError` when unusable.

        ``vectors(max_id)`` gives the filler of the graph's rows (:class:`DatabaseFill`), for sample ids up
        to the saved state's ``max_id``."""
        path = cls._record_path(base)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IndexFileError(f"no index file {path}") from None
        except (OSError, ValueError) as exc:
            raise IndexFileError(f"index record {path} is unreadable: {exc}") from None
        try:
            if record["format"] not in (1, FILE_FORMAT) or record["dim"] != dim or record["build"] != params.build_key():
                raise IndexFileError(f"index file {path} has another format, size or build parameters")
            file = base.parent / Path(record["file"]).name
            fill = None
            if record["format"] == FILE_FORMAT:
                if vectors is None:
                    raise IndexFileError(f"index file {file} holds no vectors and none were given")
                fill = vectors(int(record["state"].get("max_id", 0)))
            try:
                graph = VectorIndex.read(file, dim, params, int(record["size"]), int(record["crc32"]), fill)
            finally:
                if fill is not None:
                    fill.close()
            names: list[str | None] = list(record["requests"])
            live = cls(dim, params, graph)
            keys = graph.keys()
            if len(keys) != record["count"]:
                raise IndexFileError(f"index file {file} holds {len(keys)} vectors, its record says {record['count']}")
            slots = (keys >> np.uint64(REQ_SHIFT)).astype(np.int64)
            if len(slots) and (slots.max() >= len(names) or any(names[s] is None for s in np.unique(slots))):
                raise IndexFileError(f"index file {file} has keys of no recorded request")
            live._names = names
            live._slot = {n: i for i, n in enumerate(names) if n is not None}
            order = np.argsort(slots, kind="stable")
            by_slot = {int(slots[p[0]]): keys[p] for p in np.split(order, np.flatnonzero(np.diff(slots[order])) + 1)
                       if len(p)}
            live._keys = {n: by_slot.get(i, np.empty(0, np.uint64)) for n, i in live._slot.items()}
            live._texts = dict(zip((int(i) for i in record["text_ids"]), record["texts"], strict=True))
            live.state = dict(record["state"])
            live.dirty = 0
            return live
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexFileError(f"index record {path} is malformed: {exc}") from None


class DatabaseFill:
    """A :data:`~lethe.store.index.Fill` from the database's positive sample rows.

    ``batches`` yields (sample ids, vector blobs) in any order; each graph key's row is the blob of
    its sample id (``key & ID_MASK``). A key whose sample is not in the database makes the file
    unusable: the index is then rebuilt from what the database holds.

    The database is read on a thread from the moment this is made, so the scan overlaps reading
    and parsing the graph file; :meth:`close` stops it (the caller's read snapshot must outlive it).
    """

    def __init__(self, batches: Iterator[tuple[np.ndarray, Sequence[bytes]]], dim: int, dtype: str) -> None:
        self._batches, self.dim, self.dtype = batches, dim, dtype
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="lethe-index-fill", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for ids, blobs in self._batches:
                if self._stop.is_set():
                    break
                self._queue.put((np.asarray(ids, dtype=np.int64), blobs_for_index(blobs, self.dim, self.dtype)))
        except BaseException as exc:  # handed to the consumer, raised there
            self._queue.put(exc)
        finally:
            close = getattr(self._batches, "close", None)
            if close is not None:
                close()  # a generator stopped early releases its cursor now, inside the snapshot
            self._queue.put(None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __call__(self, keys: np.ndarray, out: np.ndarray) -> None:
        used = np.flatnonzero(keys != FREE_KEY)
        sids = (keys[used] & np.uint64(ID_MASK)).astype(np.int64)
        order = np.argsort(sids)
        sorted_ids = sids[order]
        found = np.zeros(len(sids), bool)
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            ids, rows = item
            if not len(ids) or not len(sorted_ids):
                continue
            pos = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
            hit = np.flatnonzero(sorted_ids[pos] == ids)
            if len(hit):
                where = order[pos[hit]]
                out[used[where]] = rows if len(hit) == len(ids) else rows[hit]
                found[where] = True
        if not found.all():
            raise IndexFileError(f"{int((~found).sum())} vectors of the index file are not in the database")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock between processes (True when held)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: saves are still atomic, only not serialised
        yield True
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
