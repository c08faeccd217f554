"""The negative unlearn store: what the guard knows about forget requests.

It holds forget *requests* and their *negative samples*: LLM rewrites of the forget
prompts (text and embedding, or the embedding alone in ``embedding_only`` mode),
deterministic augmentations (embedding only) and name-swapped hard negatives (embedding
only). The original forget prompts and their answers are never passed to a store.
"""

from __future__ import annotations

import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from lethe.registry import Registry

if TYPE_CHECKING:
    from lethe.config import StoreConfig

Kind = Literal["privacy", "copyright", "harmful", "knowledge"]
# privacy: a person (entity matching); the others are concept scopes (scorer primary).
KINDS: tuple[str, ...] = ("privacy", "copyright", "harmful", "knowledge")
CONCEPT_KINDS: frozenset[str] = frozenset({"copyright", "harmful", "knowledge"})
SampleRole = Literal["rewrite", "augment", "hard_negative"]


@dataclass
class ForgetRequest:
    kind: str
    subject: str | None = None
    policy: str | None = None
    entities: list[dict] = field(default_factory=list)  # keyed-hash name records, see guard.entities
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: float = field(default_factory=time.time)
    revoked_at: float | None = None
    n_prompts: int = 0

    @property
    def live(self) -> bool:
        return self.revoked_at is None


@dataclass
class NegativeSample:
    request_id: str
    embedding: np.ndarray
    role: str = "rewrite"
    text: str | None = None
    id: int | None = None

    @property
    def label(self) -> int:
        return 0 if self.role == "hard_negative" else 1


@dataclass
class Match:
    sample: NegativeSample
    score: float


class UnlearnStore(ABC):
    """Interface for store backends (SQLite embedded, PostgreSQL for replicas)."""

    dim: int

    @classmethod
    def from_config(cls, config: StoreConfig, home: Path, dim: int) -> UnlearnStore:
        """Build this kind from the ``store:`` section of ``guard.yaml`` (see :func:`lethe.store.open_store`).

        The built-in kinds read their own fields; a third-party kind gets ``options``.
        """
        return cls(dim=dim, **config.options)  # type: ignore[call-arg]

    @abstractmethod
    def add_request(self, request: ForgetRequest, samples: list[NegativeSample]) -> str:
        """Persist a request and its samples atomically; returns the request id."""

    @abstractmethod
    def revoke(self, request_id: str) -> bool:
        """Mark a request revoked; its samples leave the index. False when unknown or already revoked."""

    @abstractmethod
    def get_request(self, request_id: str) -> ForgetRequest | None: ...

    @abstractmethod
    def list_requests(self, include_revoked: bool = False) -> list[ForgetRequest]: ...

    @abstractmethod
    def samples(self, live_only: bool = True) -> list[NegativeSample]: ...

    def samples_of(self, request_ids: Iterable[str]) -> list[NegativeSample]:
        """All samples (hard negatives included) of the given requests; backends answer from an index on
        the request id instead of reading every sample."""
        wanted = set(request_ids)
        return [s for s in self.samples(live_only=False) if s.request_id in wanted]

    def add_requests(self, items: Iterable[tuple[ForgetRequest, list[NegativeSample]]]) -> list[str]:
        """Add many requests (imports, benchmarks); each request is still all-or-nothing. Backends batch
        the inserts."""
        return [self.add_request(req, samples) for req, samples in items]

    @abstractmethod
    def search(self, embeddings: np.ndarray, k: int = 5) -> list[list[Match]]:
        """Nearest live positive samples (rewrites and augmentations) per query embedding."""

    @abstractmethod
    def secret(self) -> bytes:
        """Key for hashing entity names (stable for the store's lifetime; kept outside the database,
        see :mod:`lethe.store.keys`)."""

    _version: int = 0

    def version(self) -> int:
        """A number that changes whenever requests are added or revoked."""
        return self._version

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after any change (the detector refits; replicas refresh)."""
        self.__dict__.setdefault("_subscribers", []).append(callback)

    def _notify(self) -> None:
        for cb in list(self.__dict__.get("_subscribers", [])):
            try:
                cb()
            except Exception:
                logging.getLogger("lethe.store").exception("store subscriber failed")

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def ping(self) -> bool:
        """Whether the store answers now (the service's ``/readyz``); an embedded store always does."""
        return True

    def live_count(self) -> int:
        """Live requests this process enforces (the ``lethe_forget_requests_live`` gauge); indexed
        backends answer from their in-memory index."""
        return len(self.list_requests())

    def __len__(self) -> int:
        return len(self.list_requests())


STORES: Registry[UnlearnStore] = Registry("store")
