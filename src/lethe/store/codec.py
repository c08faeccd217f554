"""How sample vectors are kept: in the database (compact blobs) and in the vector index.

Database blobs carry their format in their length, so stores written with float32 rows
keep working next to compact rows without a rewrite:

* ``f32``: ``4·dim`` bytes, little-endian float32 (the format of stores written before
  compact rows existed);
* ``f16``: ``2·dim`` bytes, IEEE half precision;
* ``i8``: ``dim + 4`` bytes, the vector scaled so its largest component is ±127, rounded
  to int8, then the float32 scale (``max|x| / 127``) that restores it.

Per-vector max-abs scaling is symmetric scalar quantisation (as in Jégou et al.'s scalar
quantiser baselines, and usearch's ``i8``); it uses the whole int8 range for every vector,
where a fixed scale (usearch casts ``x · 127``) would leave a unit-norm 384-d vector, whose
components rarely exceed 0.2, at about five bits. Cosine similarity ignores the scale, so
the index keeps the int8 part alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lethe.errors import StoreError

FORMATS: tuple[str, ...] = ("i8", "f16", "f32")
INDEX_DTYPES: tuple[str, ...] = ("i8", "f16", "f32")


def blob_size(fmt: str, dim: int) -> int:
    return {"f32": 4 * dim, "f16": 2 * dim, "i8": dim + 4}[fmt]


def _check(fmt: str, allowed: tuple[str, ...], what: str) -> None:
    if fmt not in allowed:
        raise StoreError(f"unknown {what} '{fmt}' (use one of: {', '.join(allowed)})")


def quantize_i8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``x`` as int8 with per-row scales: ``x ≈ q · scale[:, None]``."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float32))
    peak = np.abs(x).max(axis=1)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
    return q, scale


def encode(vector: np.ndarray, fmt: str) -> bytes:
    """One vector as a database blob in ``fmt``."""
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if fmt == "f32":
        return v.astype("<f4").tobytes()
    if fmt == "f16":
        return v.astype("<f2").tobytes()
    if fmt == "i8":
        q, scale = quantize_i8(v)
        return q[0].tobytes() + scale.astype("<f4").tobytes()
    _check(fmt, FORMATS, "vector format")
    raise AssertionError


def encode_many(vectors: np.ndarray, fmt: str) -> list[bytes]:
    """Rows of ``vectors`` as database blobs in ``fmt`` (one quantisation pass for all of them)."""
    x = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if not len(x):
        return []
    if fmt == "f32":
        raw = x.astype("<f4")
    elif fmt == "f16":
        raw = x.astype("<f2")
    elif fmt == "i8":
        q, scale = quantize_i8(x)
        raw = np.concatenate([q.view(np.uint8), scale.astype("<f4")[:, None].view(np.uint8)], axis=1)
    else:
        _check(fmt, FORMATS, "vector format")
    flat = np.ascontiguousarray(raw).view(np.uint8).reshape(len(x), -1)
    return [row.tobytes() for row in flat]


def format_for(fmt: str, dim: int) -> str:
    """The format new rows get: ``fmt``, except float32 below five dimensions, where lengths would be ambiguous."""
    _check(fmt, FORMATS, "vector format")
    return "f32" if dim <= 4 else fmt


def blob_format(blob: bytes, dim: int) -> str:
    n = len(blob)
    for fmt in ("f32", "f16", "i8"):
        if n == blob_size(fmt, dim):
            return fmt
    raise StoreError(f"a stored vector has {n} bytes, which is no known format of a {dim}-d vector")


def decode(blob: bytes, dim: int) -> np.ndarray:
    """A database blob (any format) as a float32 vector."""
    fmt = blob_format(blob, dim)
    if fmt == "f32":
        return np.frombuffer(blob, dtype="<f4").astype(np.float32)
    if fmt == "f16":
        return np.frombuffer(blob, dtype="<f2").astype(np.float32)
    q = np.frombuffer(blob, dtype=np.int8, count=dim).astype(np.float32)
    return q * np.frombuffer(blob, dtype="<f4", offset=dim)[0]


def for_index(vectors: np.ndarray, dtype: str) -> np.ndarray:
    """Float vectors in the index's scalar type (int8 rows are scaled per vector, see above)."""
    _check(dtype, INDEX_DTYPES, "index dtype")
    x = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if dtype == "i8":
        return quantize_i8(x)[0]
    return np.ascontiguousarray(x, dtype=np.float16 if dtype == "f16" else np.float32)


def blobs_for_index(blobs: Sequence[bytes], dim: int, dtype: str) -> np.ndarray:
    """Database blobs as index rows; int8 rows go straight in when the index is int8."""
    if not blobs:
        return np.empty((0, dim), dtype={"i8": np.int8, "f16": np.float16, "f32": np.float32}[dtype])
    if dtype == "i8" and bool((np.fromiter(map(len, blobs), np.int64, len(blobs)) == dim + 4).all()):
        buf = np.frombuffer(b"".join(blobs), dtype=np.int8).reshape(len(blobs), dim + 4)
        return np.ascontiguousarray(buf[:, :dim])
    return for_index(np.stack([decode(b, dim) for b in blobs]), dtype)


def from_index(rows: np.ndarray) -> np.ndarray:
    """Index rows back to unit float32 vectors (the direction is what the index keeps)."""
    x = np.atleast_2d(np.asarray(rows)).astype(np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)
