"""Request rate limits of the guard service: token buckets per API key and per client address.

Each bucket holds up to ``burst`` requests and refills at ``per_minute / 60`` per second; a
request that finds its bucket empty is answered 429 with ``Retry-After`` (seconds until one
request's worth has refilled). Buckets live in memory per replica, in a bounded LRU map, so
a flood of distinct addresses or keys cannot grow it without bound. Only keys the service
accepts get a bucket of their own; requests with unknown keys count against their address.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict


class Buckets:
    """Token buckets keyed by a string (a key fingerprint or an address)."""

    def __init__(self, per_minute: float, burst: int | None = None, max_entries: int = 10_000,
                 clock=time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst else max(1, math.ceil(per_minute / 6)))  # default: 10 s of traffic
        self.max_entries = max_entries
        self.clock = clock
        self._state: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, last time)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> float:
        """Spend one request for ``key``: 0.0 when allowed, else the seconds until it would be."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._state.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._state[key] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._state[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            while len(self._state) > self.max_entries:
                self._state.popitem(last=False)
        return wait


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
