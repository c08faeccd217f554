"""The ``requests`` and ``samples`` tables as the SQL backends (SQLite, PostgreSQL) share them.

Both keep one row per forget request and one per negative sample, with the vector as a
compact blob (:mod:`lethe.store.codec`); :class:`TableStore` turns requests and samples
into rows and back, and holds the write path both run the same way: the dimension check,
batched imports, and whether a commit's new database state follows from the one the
index held.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Iterable, Iterator

import numpy as np

from lethe.errors import StoreError
from lethe.store.base import ForgetRequest, NegativeSample, UnlearnStore
from lethe.store.codec import decode, encode_many
from lethe.store.indexed import IndexedStore
from lethe.store.live import Rows

Item = tuple[ForgetRequest, list[NegativeSample]]


def add_error(items: list[Item], exc: Exception) -> StoreError:
    """The one-line error for a batch the database refused (a request id already there)."""
    which = items[0][0].id if len(items) == 1 else f"{items[0][0].id} (batch of {len(items)})"
    return StoreError(f"cannot add request {which}: {str(exc).strip().splitlines()[0]}")


def follows(before: dict | None, after: dict, n_changes: int) -> bool:
    """True when ``after`` is ``before`` plus exactly this transaction's ``n_changes`` counted changes."""
    return (before is not None and after["store_id"] == before["store_id"]
            and after["rewrites"] == before["rewrites"] and after["changes"] == before["changes"] + n_changes)


class TableStore(IndexedStore, UnlearnStore):
    """A store over the two tables: rows in and out, checks, batched imports; the backend commits."""

    REQ_COLS = "id, kind, subject, policy, entities, n_prompts, created_at, revoked_at"
    NEW_REQ_COLS = "id, kind, subject, policy, entities, n_prompts, created_at"  # a new request row
    SAMPLE_COLS = "id, request_id, role, text, embedding"
    SAMPLE_COLS_S = "s.id, s.request_id, s.role, s.text, s.embedding"  # of ``samples s``
    vector_format: str

    @abstractmethod
    def _add_batch(self, items: list[Item]) -> list[str]:
        """Commit ``items`` in one transaction, index them here and tell subscribers."""

    # -- rows ------------------------------------------------------------------------
    @staticmethod
    def _request_row(r: ForgetRequest) -> tuple:
        """The ``NEW_REQ_COLS`` of a request."""
        return (r.id, r.kind, r.subject, r.policy, json.dumps(r.entities), r.n_prompts, r.created_at)

    @staticmethod
    def _to_request(row: tuple) -> ForgetRequest:
        """A request from a row of ``REQ_COLS`` (entities as JSON text, or already parsed by the driver)."""
        ents = row[4] if isinstance(row[4], list) else json.loads(row[4] or "[]")
        return ForgetRequest(id=row[0], kind=row[1], subject=row[2], policy=row[3], entities=ents,
                             n_prompts=row[5], created_at=row[6], revoked_at=row[7])

    def _to_samples(self, rows: Iterable[tuple]) -> list[NegativeSample]:
        """Samples from rows of ``SAMPLE_COLS``."""
        return [NegativeSample(id=int(r[0]), request_id=r[1], role=r[2], text=r[3],
                               embedding=decode(bytes(r[4]), self.dim)) for r in rows]

    @staticmethod
    def _index_rows(batch: list[tuple]) -> Rows:
        """Index rows from database rows of ``SAMPLE_COLS``."""
        return Rows([r[1] for r in batch], np.fromiter((r[0] for r in batch), np.int64, len(batch)),
                    [r[2] for r in batch], [r[3] for r in batch],
                    blobs=[r[4] if isinstance(r[4], bytes) else bytes(r[4]) for r in batch])

    def _sample_rows(self, items: list[Item], ids: Iterator[int]) -> list[tuple]:
        """Rows of ``SAMPLE_COLS`` for the samples of ``items``, numbered from ``ids`` (set on the samples)."""
        flat = [(req, s) for req, samples in items for s in samples]
        blobs = encode_many(np.stack([s.embedding for _, s in flat]), self.vector_format) if flat else []
        rows = []
        for (req, s), blob in zip(flat, blobs, strict=True):
            s.id, s.request_id = next(ids), req.id
            rows.append((s.id, req.id, s.role, s.text, blob))
        return rows

    # -- writes ----------------------------------------------------------------------
    def _check(self, samples: list[NegativeSample]) -> None:
        for s in samples:
            if s.embedding.shape != (self.dim,):
                raise StoreError(f"sample embedding has shape {s.embedding.shape}, expected ({self.dim},)")

    def add_requests(self, items: Iterable[Item], batch_rows: int = 20_000) -> list[str]:
        """Add many requests, a transaction per batch of about ``batch_rows`` samples (a request is never
        split); the index takes each batch in one multi-threaded insert. For imports and benchmarks."""
        done: list[str] = []
        batch: list[Item] = []
        n = 0
        for req, samples in items:
            self._check(samples)
            batch.append((req, samples))
            n += len(samples)
            if n >= batch_rows:
                done += self._add_batch(batch)
                batch, n = [], 0
        if batch:
            done += self._add_batch(batch)
        return done
