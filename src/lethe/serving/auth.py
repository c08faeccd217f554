"""Bearer-key checks for the admin API and (optionally) the chat API.

Keys are random tokens, so one SHA-256 is enough to store them (no password
stretching needed); comparison is constant-time on the digests. The admin key comes
from ``LETHE_ADMIN_KEY`` or a file of ``sha256:<hex>`` lines; the actor recorded in
the audit log is a short fingerprint of the key, never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from lethe.errors import ConfigError


def hash_key(key: str) -> str:
    """The line to put in a key file for ``key``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def fingerprint(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:10]


def new_key() -> str:
    return "lk-" + secrets.token_urlsafe(32)


def _load_file(path: str) -> list[bytes]:
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"key file {p} not found")
    out = []
    for line in p.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        algo, _, hexd = line.partition(":")
        if algo != "sha256" or len(hexd) != 64:
            raise ConfigError(f"bad line in key file {p}: expected 'sha256:<64 hex>' (lethe.serving.auth.hash_key)")
        out.append(bytes.fromhex(hexd))
    return out


class KeySet:
    """A set of accepted keys, held as SHA-256 digests."""

    def __init__(self, digests: list[bytes]) -> None:
        self.digests = digests

    @classmethod
    def from_sources(cls, env: str | None = None, file: str | None = None, split: bool = False) -> KeySet:
        digests: list[bytes] = []
        raw = os.environ.get(env) if env else None
        if raw:
            keys = [k.strip() for k in raw.split(",")] if split else [raw.strip()]
            digests += [hashlib.sha256(k.encode()).digest() for k in keys if k]
        if file:
            digests += _load_file(file)
        return cls(digests)

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def check(self, key: str) -> bool:
        d = hashlib.sha256(key.encode()).digest()
        ok = False
        for ref in self.digests:  # no early exit: time does not depend on which key matched
            ok |= hmac.compare_digest(d, ref)
        return ok


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
