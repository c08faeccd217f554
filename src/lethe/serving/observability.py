"""Prometheus metrics and the admin audit log of the guard service."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_FAST = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    """One registry per app, so several apps can live in one process (tests, replicas)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("lethe_http_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.request_seconds = Histogram("lethe_http_request_seconds", "HTTP request time (to first byte for streams)",
                                         ["route"], buckets=_SLOW, registry=r)
        self.decisions = Counter("lethe_guard_decisions", "guard decisions on chat requests",
                                 ["decision"], registry=r)
        self.failures = Counter("lethe_failures", "errors by stage (guard, upstream)", ["stage", "mode"], registry=r)
        self.detection_seconds = Histogram("lethe_detection_seconds", "detector time per request",
                                           buckets=_FAST, registry=r)
        self.guider_seconds = Histogram("lethe_guider_seconds", "guider time per triggered request",
                                        buckets=_FAST + (5.0,), registry=r)
        self.upstream_seconds = Histogram("lethe_upstream_seconds", "upstream model time per request",
                                          ["stream"], buckets=_SLOW, registry=r)
        self.upstream_first_token_seconds = Histogram(
            "lethe_upstream_first_token_seconds", "upstream time to first streamed piece", buckets=_SLOW, registry=r
        )
        self.speculative = Counter("lethe_speculative_upstream", "upstream calls started while detection ran",
                                   ["outcome"], registry=r)  # used | cancelled (in scope) | abandoned
        self.admin = Counter("lethe_admin_actions", "admin API actions", ["action", "outcome"], registry=r)
        self.output_blocked = Counter("lethe_output_blocked", "answers replaced (streams: cut) by the output check",
                                      ["stream", "reason", "input"], registry=r)  # input: triggered | passed
        self.output_check_seconds = Histogram("lethe_output_check_seconds", "output check time per answer",
                                              ["stream"], buckets=_FAST, registry=r)
        self.inflight = Gauge("lethe_inflight_requests", "chat requests in flight", registry=r)
        self.live_requests = Gauge("lethe_forget_requests_live", "live forget requests in the store", registry=r)


class AuditLog:
    """Append-only JSONL of admin actions: who (key fingerprint, address), what, when.

    Never records prompts, subjects, entity names or queries: only ids, kinds and counts.
    Each line is flushed and fsynced before the action is acknowledged.
    """

    ALLOWED = {"request_id", "kind", "n_prompts", "tau", "target_fpr", "n_benign", "triggered", "status",
               "include_revoked", "count", "error"}

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.host = socket.gethostname()

    def write(self, action: str, actor: str, client: str | None, outcome: str, **fields: object) -> None:
        entry = {"ts": round(time.time(), 3), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "action": action, "actor": actor, "client": client, "outcome": outcome,
                 "replica": f"{self.host}:{os.getpid()}"}
        entry.update({k: v for k, v in fields.items() if k in self.ALLOWED and v is not None})
        line = json.dumps(entry, ensure_ascii=True) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
