"""A corrupt ONNX export in the cache is rebuilt, not a permanent failure (guard, CLI and /readyz)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lethe.backends import embeddings as E


def test_corrupt_onnx_export_is_rebuilt(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    reference = E.Embedder(engine="onnx")  # the shared cache: exports once if it has to
    ref_vecs = reference.encode(["Where was Albert Einstein born?", "What is the capital of Japan?"])
    src = E.onnx_export_path(reference.path)
    monkeypatch.setenv("LETHE_CACHE", str(tmp_path / "cache"))
    out = E.onnx_export_path(reference.path)
    assert out != src and str(tmp_path) in str(out)
    out.parent.mkdir(parents=True)
    shutil.copy(src, out)
    out.write_bytes(out.read_bytes()[:100_000])  # truncated, as by a crash or a full disk
    emb = E.Embedder(engine="onnx")
    assert emb.engine == "onnx" and out.stat().st_size == src.stat().st_size
    vecs = emb.encode(["Where was Albert Einstein born?", "What is the capital of Japan?"])
    assert np.allclose(vecs, ref_vecs, atol=1e-5)
