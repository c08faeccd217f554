"""The ONNX engine of ``lethe.backends.embeddings``: a sentence-transformers folder read without
sentence-transformers (``Layout``), its Transformer module exported once with ``torch.onnx`` to
``<cache>/onnx/`` (``export_onnx``), optionally quantised to int8 (``quantize_int8``), the model's
own tokenizer through the ``tokenizers`` library, and the onnxruntime session (``OnnxEncoder``).

int8: onnxruntime's dynamic quantisation (``onnxruntime.quantization.quantize_dynamic``, weights
of the MatMul/Gemm nodes to int8 per channel, activations quantised on the fly) of the fp32 export,
written beside it as ``model.int8.onnx``; the documented way to quantise a transformer for CPU
inference (onnxruntime docs, "Quantize ONNX models"). Like the fp32 export, an unreadable cached
file is rebuilt once.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from lethe.errors import BackendError, ConfigError

log = logging.getLogger(__name__)
QUANTIZE = ("auto", "none", "int8")


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


def resolve_quantize(quantize: str | None) -> str:
    """``auto``, ``none`` (fp32) or ``int8``: the argument, else ``LETHE_EMBED_QUANTIZE``, else ``auto``
    (int8 for the default encoder on the CPU onnx engine, fp32 elsewhere; :class:`lethe.backends.embeddings.Embedder`)."""
    q = (quantize or os.environ.get("LETHE_EMBED_QUANTIZE", "") or "auto").strip().lower()
    if q not in QUANTIZE:
        raise ConfigError(f"embedder quantisation must be one of {', '.join(QUANTIZE)}, not {q!r}")
    return q


def int8_export_path(fp32: Path) -> Path:
    """Where the int8 quantisation of the fp32 export ``fp32`` lives (beside it, same cache key)."""
    return fp32.with_name("model.int8.onnx")


def quantize_int8(fp32: Path) -> Path:
    """Dynamic int8 quantisation of an fp32 export (module doc), once; written atomically."""
    out = int8_export_path(fp32)
    if out.exists():
        return out
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = out.parent / f"model.int8.onnx.tmp{os.getpid()}"
    with quiet_third_party(), contextlib.redirect_stdout(None):
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"])
    os.replace(tmp, out)
    return out


def _open_or_rebuild(out: Path, rebuild: Callable[[], object], tokenizer: FastTokenizer | HFTokenizer) -> OnnxEncoder:
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
