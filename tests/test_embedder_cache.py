"""A corrupt ONNX export in the cache is rebuilt, not a permanent failure (guard, CLI and /readyz)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from lethe.backends import embeddings as E


def test_corrupt_onnx_export_is_rebuilt(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    reference = E.Embedder(engine="onnx", quantize="none")  # the shared cache: exports once if it has to
    ref_vecs = reference.encode(["Where was Albert Einstein born?", "What is the capital of Japan?"])
    src = E.onnx_export_path(reference.path)
    monkeypatch.setenv("LETHE_CACHE", str(tmp_path / "cache"))
    out = E.onnx_export_path(reference.path)
    assert out != src and str(tmp_path) in str(out)
    out.parent.mkdir(parents=True)
    shutil.copy(src, out)
    out.write_bytes(out.read_bytes()[:100_000])  # truncated, as by a crash or a full disk
    emb = E.Embedder(engine="onnx", quantize="none")
    assert emb.engine == "onnx" and out.stat().st_size == src.stat().st_size
    vecs = emb.encode(["Where was Albert Einstein born?", "What is the capital of Japan?"])
    assert np.allclose(vecs, ref_vecs, atol=1e-5)


def test_int8_export_is_cached_separately_close_to_fp32_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    """The int8 quantisation lives beside the fp32 export, keeps its own identity (so cached vectors
    never mix), stays close to fp32, and a truncated copy of it in the cache is quantised again."""
    pytest.importorskip("onnxruntime")
    texts = ["Where was Albert Einstein born?", "What is the capital of Japan?", "Who wrote Animal Farm?"]
    fp32 = E.Embedder(engine="onnx", quantize="none")
    q = E.Embedder(engine="onnx", quantize="int8")  # the shared cache: quantises once if it has to
    assert q.quantize == "int8" and q.identity != fp32.identity and q.identity.endswith("onnx-int8")
    a, b = fp32.encode(texts), q.encode(texts)
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.97 and not np.allclose(a, b, atol=1e-5)  # close, yet really the quantised model
    assert (a @ a.T).argmax(axis=1).tolist() == (b @ b.T).argmax(axis=1).tolist()
    src_fp32 = E.onnx_export_path(fp32.path)
    src_int8 = E.int8_export_path(src_fp32)
    assert src_int8.parent == src_fp32.parent and src_int8.stat().st_size < src_fp32.stat().st_size
    monkeypatch.setenv("LETHE_CACHE", str(tmp_path / "cache"))
    out = E.int8_export_path(E.onnx_export_path(fp32.path))
    out.parent.mkdir(parents=True)
    shutil.copy(src_fp32, out.parent / "model.onnx")
    out.write_bytes(src_int8.read_bytes()[:100_000])
    again = E.Embedder(engine="onnx", quantize="int8")
    assert again.quantize == "int8" and out.stat().st_size == src_int8.stat().st_size
    assert np.allclose(again.encode(texts), b, atol=1e-5)


def test_quantize_setting_is_checked():
    with pytest.raises(E.BackendError):
        E.Embedder(engine="torch", quantize="int8")
    from lethe.errors import ConfigError

    with pytest.raises(ConfigError):
        E.resolve_quantize("int4")
