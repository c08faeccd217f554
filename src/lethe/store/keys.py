"""The name-hashing key of a store, kept outside its database.

Forgotten names are stored only as keyed BLAKE2b hashes (:mod:`lethe.guard.entities`).
With the key in the same database, anyone holding a copy of it could confirm a guessed
name offline; so the key lives elsewhere: in an environment variable (``secret_env``,
the form for replicas, fed by a secret manager) or in a key file with owner-only
permissions (default ``<home>/store.key``, created on first use).

The database keeps only a *key check* (a keyed hash of a fixed string): it tells a
process that it holds the wrong key, or none, before it hashes a single name with it,
and it confirms nothing about names. Stores written by older versions held the key in
their ``meta`` table; opening them moves it to the key file and deletes it there.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lethe.errors import StoreError

log = logging.getLogger("lethe.store")

_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")
_CHECK_LABEL = b"lethe store key check v1"


@dataclass(frozen=True)
class KeySource:
    """Where a store's key comes from: ``env`` when it is set, else ``file``."""

    env: str | None = "LETHE_SECRET"
    file: Path | None = None

    def describe(self) -> str:
        parts = ([f"${self.env}"] if self.env else []) + ([str(self.file)] if self.file else [])
        return " or ".join(parts) or "no key source"


def decode_key(text: str) -> bytes:
    """Key text to key bytes: 64 hex digits are 32 bytes; anything else is a passphrase (UTF-8)."""
    text = text.strip()
    if not text:
        raise StoreError("the store key is empty")
    return bytes.fromhex(text) if _HEX_KEY.match(text) else text.encode()


def key_check(key: bytes) -> bytes:
    """What the database keeps to recognise its key (reveals neither the key nor any name)."""
    return hashlib.blake2b(_CHECK_LABEL, key=key[:64], digest_size=16).digest()


def read_key_file(path: Path) -> bytes:
    if os.name == "posix":
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise StoreError(f"key file {path} is readable by other users (mode {mode:o}): chmod 600 {path}")
    return decode_key(path.read_text(encoding="ascii", errors="replace"))


def write_key_file(path: Path, key: bytes) -> bytes:
    """Create ``path`` (0600) holding ``key``; when another process made it first, its key wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # atomic and exclusive: never half a key, never two keys
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return read_key_file(path)


def resolve_key(
    source: KeySource,
    get: Callable[[str], bytes | None],
    put: Callable[[str, bytes], None],
    delete: Callable[[str], None],
    where: str,
) -> bytes:
    """The key of the store at ``where`` (a name for messages), migrating an in-database key out.

    ``get``/``put``/``delete`` read and write the store's ``meta`` table; ``put`` keeps
    an existing value (insert-if-absent), so processes opening a store together agree.
    """
    key: bytes | None = None
    if source.env and os.environ.get(source.env):
        key = decode_key(os.environ[source.env])
    elif source.file is not None and source.file.exists():
        key = read_key_file(source.file)
    in_db = get("secret")
    if key is None and in_db is not None:
        if source.file is None:
            raise StoreError(f"the store {where} holds its hashing key in the database: give it a key file or "
                             f"set ${source.env or 'LETHE_SECRET'} so that the key can move out")
        key = write_key_file(source.file, bytes(in_db))
        log.warning("moved the name-hashing key of %s out of the database into %s (mode 0600); every "
                    "process using this store needs it (key_file or secret_env)", where, source.file)
    check = get("key_check")
    if key is None and check is not None and source.file is not None and source.file.exists():
        key = read_key_file(source.file)  # another process opening the new store created it meanwhile
    if key is None:
        if check is not None or source.file is None:
            raise StoreError(f"the store {where} needs its name-hashing key ({source.describe()}): restore the key "
                             "file or set the environment variable it was created with")
        key = write_key_file(source.file, secrets.token_bytes(32))
        log.info("created the name-hashing key %s", source.file)
    if check is not None and bytes(check) != key_check(key):
        raise StoreError(f"the store {where} was written with a different name-hashing key than "
                         f"{source.describe()}: use the key it was created with")
    if check is None:
        put("key_check", key_check(key))
        check = get("key_check")
        if check is not None and bytes(check) != key_check(key):
            raise StoreError(f"another process set a different name-hashing key for {where}")
    if in_db is not None:
        delete("secret")
    return key
