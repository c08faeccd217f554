"""The vector index over a store's live positive samples: usearch HNSW, quantised, persistable.

usearch rather than FAISS: it removes vectors by key (a revoke is one call, no
``IndexIDMap`` wrapper, no rebuild), reuses the freed slots on later adds, saves and
restores an index as one file, and ships as a small self-contained wheel. The graph is
HNSW (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search using
Hierarchical Navigable Small World graphs", TPAMI 2018); small indexes are searched
exactly. Vectors are kept as int8 by default (:mod:`lethe.store.codec`).

Saving does not stop the index: while the file is written, adds go to a small side table
searched exactly and removals to a tombstone set, both folded in when the write ends.

**The file holds the graph, not the vectors.** A usearch file is the vector matrix (one row
per graph slot) followed by the graph (a 64-byte head, then HNSW's nodes, each starting with
its key). The vectors are already in the database, so :meth:`VectorIndex.write` keeps only
the part after the matrix and :meth:`VectorIndex.read` puts the matrix back from the
database in slot order (the slot keys are read from the nodes) before usearch restores it:
one copy of every vector on disk. A file whose layout does not parse exactly, or whose
restored rows differ from the database's, is refused (:class:`IndexFileError`) and rebuilt.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from lethe.errors import StoreError
from lethe.store.codec import INDEX_DTYPES, for_index

try:  # onnxruntime must be loaded before usearch's extension module: the other order crashes the
    import onnxruntime  # noqa: F401  process when onnxruntime is imported later (usearch 2.26, onnxruntime 1.32)
except ImportError:  # the embedder then runs on torch
    pass
from usearch.index import Index  # noqa: E402

_NO_KEY = 2**64 - 1
FREE_KEY = np.uint64(_NO_KEY)  # the key usearch gives a free graph slot
# The size-dependent search breadth: ef(n) = EF_BASE * max(1, n / EF_BASE_SIZE) ** EF_GROWTH, rounded up
# to a multiple of EF_STEP and capped at EF_MAX. Fitted to the recall@10 the store benchmark
# (benchmarks/bench_store_scale.py, docs/serving.md) measures against exact search as the store grows.
EF_BASE, EF_BASE_SIZE, EF_GROWTH, EF_STEP, EF_MAX = 128, 100_000, 0.45, 32, 4096
_NP_DTYPE = {"i8": np.int8, "f16": np.float16, "f32": np.float32}
# usearch's serialised layout (index_dense_gt / index_gt): u32 rows, u32 bytes a row and the row matrix;
# a 64-byte head; the graph header (u64 size, connectivity, base connectivity, max level, entry slot),
# one i16 level per node, then the nodes: u64 key, i16 level, base neighbours (u32 count + u32 slots)
# and per upper level u32 count + u32 slots.
_MATRIX_HEAD, _DENSE_HEAD, _GRAPH_HEAD = 8, 64, 40
Fill = Callable[[np.ndarray, np.ndarray], None]
"""``fill(keys, out)``: write the stored row of every key (``_NO_KEY``: a free slot, leave it) into
``out``; raise :class:`IndexFileError` for a key the database does not hold."""


class IndexFileError(StoreError):
    """A persisted index that cannot be used (missing, stale, corrupt, other parameters)."""


@dataclass(frozen=True)
class IndexParams:
    """How the index is built and searched (``store.options.index`` in ``guard.yaml``).

    ``dtype``: scalar type of the indexed vectors (i8, f16, f32). ``connectivity``,
    ``expansion_add``: HNSW's M and efConstruction. ``expansion_search``: HNSW's ef, the
    search breadth (higher is slower and closer to exact); unset (the default), it follows
    the live sample count (:func:`expansion_for`), because a graph searched at a fixed
    breadth loses recall as it grows; a number fixes it at any size. ``exact_below``:
    search exactly while the index holds fewer vectors. ``threads``: threads for bulk
    adds (0: all cores).
    """

    dtype: str = "i8"
    connectivity: int = 32
    expansion_add: int = 256
    expansion_search: int | None = None
    exact_below: int = 20_000
    threads: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in INDEX_DTYPES:
            raise StoreError(f"unknown index dtype '{self.dtype}' (use one of: {', '.join(INDEX_DTYPES)})")
        for name in ("connectivity", "expansion_add", "expansion_search"):
            value = getattr(self, name)
            if value is None and name == "expansion_search":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise StoreError(f"index {name} must be a whole number of at least 2, not {value!r}")

    @classmethod
    def of(cls, value: IndexParams | dict | None) -> IndexParams:
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        known = {f.name for f in fields(cls)}
        unknown = set(value) - known
        if unknown:
            raise StoreError(f"unknown index option(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
        return cls(**value)

    def build_key(self) -> dict:
        """What a persisted index must share with these parameters to be reused."""
        return {"dtype": self.dtype, "connectivity": self.connectivity, "expansion_add": self.expansion_add}


def expansion_for(n: int, fixed: int | None = None) -> int:
    """HNSW search breadth (ef) for an index of ``n`` vectors; ``fixed`` (a configured value) wins.

    The breadth grows as a power of the size past ``EF_BASE_SIZE`` so that recall@10
    against exact search stays level as the store grows, instead of the constant ef of
    the HNSW paper's defaults, whose recall falls with size on clustered data (the samples
    of one request are near-ties). Search time grows with the breadth, so the
    rule spends it only where the index is large enough to need it.
    """
    if fixed is not None:
        return int(fixed)
    ef = EF_BASE * max(1.0, n / EF_BASE_SIZE) ** EF_GROWTH
    return int(min(EF_MAX, EF_STEP * math.ceil(ef / EF_STEP - 1e-9)))


def file_crc32(path: Path, chunk: int = 1 << 23) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            crc = zlib.crc32(block, crc)
    return crc


def fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class VectorIndex:
    """Keyed vectors (uint64 keys) with cosine search; thread-safe."""

    def __init__(self, dim: int, params: IndexParams | dict | None = None, _index: Index | None = None) -> None:
        self.dim = dim
        self.params = IndexParams.of(params)
        self._index = _index if _index is not None else self._new()
        self._index.expansion_search = self.search_breadth()
        self._lock = threading.RLock()  # structures below
        self._search_lock = threading.Lock()  # usearch searches and writes to the graph
        self._frozen = False  # a save is reading the graph: writes go to the side table / tombstones
        self._side: dict[int, np.ndarray] = {}
        self._tomb: set[int] = set()

    def _new(self) -> Index:
        p = self.params
        return Index(ndim=self.dim, metric="cos", dtype=p.dtype, connectivity=p.connectivity,
                     expansion_add=p.expansion_add, expansion_search=expansion_for(0, p.expansion_search))

    def search_breadth(self, n: int | None = None) -> int:
        """The ef a search of an index of ``n`` vectors (default: the graph's size) uses."""
        return expansion_for(len(self._index) if n is None else n, self.params.expansion_search)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_NP_DTYPE[self.params.dtype])

    def __len__(self) -> int:
        with self._lock:
            return len(self._index) + len(self._side) - len(self._tomb)

    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)

    def rows(self, vectors: np.ndarray) -> np.ndarray:
        """Float vectors as rows of this index."""
        return for_index(vectors, self.params.dtype)

    def _threads(self, n: int) -> int:
        return 1 if n < 32 else self.params.threads

    def add(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Add ``rows`` (already in the index dtype, see :meth:`rows`) under new ``keys``."""
        keys = np.asarray(keys, dtype=np.uint64)
        if not len(keys):
            return
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        with self._lock:
            if self._frozen:
                for k, r in zip(keys.tolist(), rows, strict=True):
                    self._side[k] = r.copy()
                return
            with self._search_lock:
                self._index.add(keys, rows, threads=self._threads(len(keys)))

    def remove(self, keys: np.ndarray | list[int]) -> None:
        keys = np.asarray(keys, dtype=np.uint64)
        if not len(keys):
            return
        with self._lock:
            if self._frozen:
                for k in keys.tolist():
                    if self._side.pop(k, None) is None and k in self._index:
                        self._tomb.add(k)
                return
            with self._search_lock:
                self._index.remove(keys)

    def clear(self) -> None:
        with self._lock, self._search_lock:
            if self._frozen:
                raise StoreError("cannot clear the index while it is being saved")
            self._index = self._new()
            self._side.clear()
            self._tomb.clear()

    def keys(self) -> np.ndarray:
        with self._lock:
            main = np.asarray(self._index.keys, dtype=np.uint64)
            if self._tomb:
                main = main[~np.isin(main, np.fromiter(self._tomb, np.uint64))]
            if self._side:
                main = np.concatenate([main, np.fromiter(self._side, np.uint64)])
            return main

    def get(self, keys: list[int]) -> np.ndarray:
        """Stored rows of ``keys``; zeros for a key removed meanwhile."""
        out = np.zeros((len(keys), self.dim), dtype=self.dtype)
        with self._lock:
            main = [i for i, k in enumerate(keys) if k not in self._side]
            for i, k in enumerate(keys):
                if k in self._side:
                    out[i] = self._side[k]
            if main:
                got = self._index.get(np.asarray([keys[i] for i in main], dtype=np.uint64))
                rows = list(got) if isinstance(got, tuple) else list(np.atleast_2d(got))
                for i, row in zip(main, rows, strict=True):
                    if row is not None:
                        out[i] = row
        return out

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """Top-k (key, cosine similarity) per float query."""
        q = self.rows(np.atleast_2d(queries))
        with self._lock:
            n_main = len(self._index)
            tomb = set(self._tomb)
            side = dict(self._side) if self._side else None
        out: list[list[tuple[int, float]]] = [[] for _ in range(len(q))]
        if n_main - len(tomb) > 0:
            kk = min(k + len(tomb), n_main)
            with self._search_lock:
                ef = self.search_breadth(n_main - len(tomb))
                if self._index.expansion_search != ef:
                    self._index.expansion_search = ef
                res = self._index.search(q, kk, exact=n_main < self.params.exact_below, threads=1)
            keys = np.atleast_2d(res.keys)
            sims = 1.0 - np.atleast_2d(res.distances).astype(np.float64)
            for i in range(len(q)):
                out[i] = [(int(a), float(s)) for a, s in zip(keys[i].tolist(), sims[i], strict=True)
                          if a != _NO_KEY and a not in tomb]
        if side:
            skeys = list(side)
            mat = np.stack([side[x] for x in skeys]).astype(np.float32)
            mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
            qf = q.astype(np.float32)
            qf /= np.maximum(np.linalg.norm(qf, axis=1, keepdims=True), 1e-12)
            sims_side = qf @ mat.T
            for i in range(len(q)):
                out[i] += [(skeys[j], float(sims_side[i, j])) for j in range(len(skeys))]
        merged = []
        for row in out:  # a key folded in from the side table meanwhile may come back twice
            best: dict[int, float] = {}
            for key, sim in row:
                best[key] = max(sim, best.get(key, -2.0))
            merged.append(sorted(best.items(), key=lambda t: -t[1])[:k])
        return merged

    # -- files ----------------------------------------------------------------------
    def freeze(self) -> None:
        """Start a save: the graph stays as it is until :meth:`thaw`."""
        with self._lock:
            if self._frozen:
                raise StoreError("the index is already being saved")
            self._frozen = True

    def thaw(self) -> None:
        """End a save: fold the side table and tombstones into the graph."""
        with self._lock:
            side, tomb = self._side, self._tomb
            self._side, self._tomb = {}, set()
            self._frozen = False
            if side:
                self.add(np.fromiter(side, np.uint64), np.stack(list(side.values())))
            if tomb:
                self.remove(np.fromiter(tomb, np.uint64))

    def write(self, path: Path) -> tuple[int, int]:
        """Write the (frozen) graph without its vectors to ``path`` atomically; returns (size, crc32)."""
        full = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.full")
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            os.close(os.open(full, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # usearch keeps the mode
            self._index.save(str(full))
            with open(full, "rb") as src, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                                                     "wb") as dst:  # owner only: it holds the store's keys
                rows, row_bytes = struct.unpack("<II", src.read(_MATRIX_HEAD))
                if row_bytes != self.dim * self.dtype.itemsize:
                    raise StoreError(f"usearch wrote rows of {row_bytes} bytes for a {self.dim}-d {self.dtype} index")
                src.seek(_MATRIX_HEAD + rows * row_bytes)
                shutil.copyfileobj(src, dst, 1 << 23)
                dst.flush()
                os.fsync(dst.fileno())
            size, crc = tmp.stat().st_size, file_crc32(tmp)
            os.replace(tmp, path)
        finally:
            full.unlink(missing_ok=True)
            tmp.unlink(missing_ok=True)
        return size, crc

    @classmethod
    def read(cls, path: Path, dim: int, params: IndexParams, size: int, crc: int, fill: Fill | None = None
             ) -> VectorIndex:
        """The index saved at ``path``, after checking its size and checksum; :class:`IndexFileError` if unusable.

        ``fill`` supplies the vectors of a graph-only file (what :meth:`write` writes); without it
        the file must be a whole usearch file (what earlier versions wrote).
        """
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            raise IndexFileError(f"index file {path} is missing") from None
        if actual != size:
            raise IndexFileError(f"index file {path} has {actual} bytes, its record says {size}")
        if file_crc32(path) != crc:
            raise IndexFileError(f"index file {path} fails its checksum")
        try:
            if fill is None:
                index = Index.restore(str(path))
            else:
                index = _restore_graph(path, dim, np.dtype(_NP_DTYPE[params.dtype]), fill)
        except (RuntimeError, ValueError) as exc:
            raise IndexFileError(f"index file {path} does not load: {exc}") from None
        if index is None or index.ndim != dim:
            raise IndexFileError(f"index file {path} is not a {dim}-d usearch index")
        if len(index) == 0:  # an empty file records no build parameters
            return cls(dim, params)
        want = Index(ndim=dim, metric="cos", dtype=params.dtype)
        if index.dtype != want.dtype or index.connectivity != params.connectivity:
            raise IndexFileError(f"index file {path} was built with other parameters")
        return cls(dim, params, _index=index)


def _restore_graph(path: Path, dim: int, dtype: np.dtype, fill: Fill) -> Index:
    """usearch index from a graph-only file, the row matrix put back by ``fill`` in slot order."""
    with open(path, "rb") as f:
        head = f.read(_DENSE_HEAD + _GRAPH_HEAD)
        if len(head) < _DENSE_HEAD + _GRAPH_HEAD or not head.startswith(b"usearch"):
            raise IndexFileError(f"index file {path} is not a usearch graph")
        n, conn, base = struct.unpack_from("<3Q", head, _DENSE_HEAD)
        if n > (1 << 40) or conn > 4096 or base > 8192:
            raise IndexFileError(f"index file {path} has an impossible graph header")
        row_bytes = dim * dtype.itemsize
        start = _MATRIX_HEAD + n * row_bytes
        buf = np.zeros(start + path.stat().st_size, dtype=np.uint8)  # calloc: free slots stay zero untouched
        buf[:_MATRIX_HEAD] = np.frombuffer(struct.pack("<II", n, row_bytes), dtype=np.uint8)
        f.seek(0)
        if f.readinto(memoryview(buf)[start:]) != len(buf) - start:
            raise IndexFileError(f"index file {path} ended early")
    nodes_at = start + _DENSE_HEAD + _GRAPH_HEAD
    levels = buf[nodes_at:nodes_at + 2 * n].view("<i2").astype(np.int64)
    if len(levels) != n or (n and (levels.min() < 0 or levels.max() > 64)):
        raise IndexFileError(f"index file {path} has an impossible graph")
    sizes = 8 + 2 + (4 + 4 * base) + levels * (4 + 4 * conn)
    offsets = nodes_at + 2 * n + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    if nodes_at + 2 * n + int(sizes.sum()) != len(buf):
        raise IndexFileError(f"index file {path} does not have the layout of a usearch graph")
    keys = buf[offsets[:, None] + np.arange(8)].copy().view("<u8").ravel() if n else np.empty(0, np.uint64)
    rows = buf[_MATRIX_HEAD:start].view(dtype).reshape(n, dim)
    fill(keys, rows)
    index = Index.restore(buf)
    if index is None or len(index) != int((keys != _NO_KEY).sum()):
        raise IndexFileError(f"index file {path} restores to another number of vectors")
    live = np.flatnonzero(keys != _NO_KEY)
    probe = live[np.linspace(0, len(live) - 1, num=min(64, len(live)), dtype=np.int64)] if len(live) else live
    if len(probe) and not np.array_equal(np.atleast_2d(index.get(keys[probe])).astype(dtype), rows[probe]):
        raise IndexFileError(f"index file {path} does not pair its keys with their rows")
    return index


__all__ = ["FREE_KEY", "Fill", "IndexFileError", "IndexParams", "VectorIndex", "expansion_for", "file_crc32", "fsync_dir"]
