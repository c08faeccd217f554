"""The embedder's ONNX engine gives the torch engine's vectors (the shipped MiniLM)."""

from __future__ import annotations

import numpy as np
import pytest

from lethe.backends.embeddings import Embedder
from lethe.errors import BackendError

TEXTS = [
    "What genre of books does the author Basil Mahfouz Al-Kuwaiti write?",
    "hi",
    "Ein längerer Satz über das Wetter in Berlin und München, mit vielen Wörtern. " * 6,
    "¿Quién escribió 'Cien años de soledad'?",
]


@pytest.fixture(scope="module")
def engines() -> tuple[Embedder, Embedder]:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    return Embedder(engine="onnx", quantize="none"), Embedder(engine="torch")


def test_onnx_sentence_embeddings_match_torch(engines: tuple[Embedder, Embedder]) -> None:
    onnx, torch_ = engines
    assert onnx.engine == "onnx" and torch_.engine == "torch"
    a, b = onnx.encode(TEXTS, batch_size=3), torch_.encode(TEXTS)  # a batch boundary inside the list
    assert a.shape == b.shape == (len(TEXTS), onnx.dim) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(axis=1).min()) > 0.9999
    # padding inside a batch must not leak into a short text's vector
    assert float(onnx.encode(["hi"])[0] @ a[1]) > 0.9999


def test_onnx_token_embeddings_match_torch(engines: tuple[Embedder, Embedder]) -> None:
    onnx, torch_ = engines
    ta, tb = onnx.token_embeddings(TEXTS), torch_.token_embeddings(TEXTS)
    assert [x.shape for x in ta] == [x.shape for x in tb]
    assert min(float((x * y).sum(axis=1).min()) for x, y in zip(ta, tb, strict=True)) > 0.9999


def test_the_cpu_default_is_int8_and_close_to_fp32(engines: tuple[Embedder, Embedder]) -> None:
    """``auto`` runs the int8 export on the onnx engine; the torch engine stays fp32."""
    fp32, torch_ = engines
    default = Embedder(engine="onnx")
    assert default.quantize == "int8" and default.identity != fp32.identity and torch_.quantize == "none"
    cos = (default.encode(TEXTS) * fp32.encode(TEXTS)).sum(axis=1)
    assert float(cos.min()) > 0.97 and float(cos.mean()) > 0.985
    assert float(cos.max()) < 0.99999  # a quantised model, not the fp32 one under another name
    alone = np.stack([default.encode([t])[0] for t in TEXTS])  # batch-independent: one text per run
    assert np.allclose(alone, default.encode(TEXTS, batch_size=3), atol=1e-6)


def test_unknown_engine_is_a_one_line_error() -> None:
    with pytest.raises(BackendError, match="unknown embedding engine 'gpu'"):
        Embedder(engine="gpu")


def test_embed_threads_from_environment(monkeypatch):
    from lethe.backends.embeddings import embed_threads
    from lethe.errors import ConfigError

    monkeypatch.setenv("LETHE_EMBED_THREADS", "1")
    assert embed_threads() == 1
    monkeypatch.delenv("LETHE_EMBED_THREADS")
    assert 1 <= embed_threads() <= 4
    for bad in ("two", "0"):
        monkeypatch.setenv("LETHE_EMBED_THREADS", bad)
        with pytest.raises(ConfigError, match="LETHE_EMBED_THREADS"):
            embed_threads()


def test_length_batches_keep_every_text_once_and_split_long_from_short() -> None:
    from lethe.backends.embeddings import _length_batches

    texts = ["short one", "x" * 2000, "mid length sentence here", "tiny", "y" * 1800, "another short"]
    order, batches = _length_batches(texts, batch_size=3)
    assert sorted(order.tolist()) == list(range(len(texts)))
    assert [i for b in batches for i in b] == order.tolist()
    assert all(len(b) <= 3 for b in batches)
    assert batches[0] == [1, 4]  # the two long wrappers together, no short segment padded to their length
    assert all(len(texts[i]) * 4 >= len(texts[b[0]]) for b in batches for i in b)
