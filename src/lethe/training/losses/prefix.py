"""Top-layer training with a cached frozen prefix.

When only the top decoder layers train (LoRA on the last N layers, or an adapter such as a TOFU
target continued with ``--init-adapter``), every layer below the first trained one maps a row to
the same hidden states at every step, for the model under training and for a reference that
differs from it only above that layer (the LoRA base with the adapter disabled, or the starting
adapter merged in). :class:`PrefixCache` computes those states once per distinct row and serves
every later forward from them, so a step runs the top layers only; :func:`forward` in
:mod:`lethe.training.losses.core` routes through it, which makes the saving apply to every loss.

The states depend only on the frozen base weights below ``start`` and on the row's tokens, so they
also hold across runs: :meth:`PrefixCache.load` and :meth:`PrefixCache.save` keep them in a file
keyed by the base model (:func:`store_file`), and every later run on the same base and rows (the
retain model of ``lethe tofu prepare`` after its target, each unlearning method started from that
target) starts with its first epoch already cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path

import torch

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
ATTR = "lethe_prefix_cache"


def _unwrap(model):
    return getattr(model, "module", model)


def causal_lm(model):
    """The transformers ``*ForCausalLM`` inside accelerate/peft wrappers (LoRA layers injected)."""
    m = _unwrap(model)
    return m.get_base_model() if hasattr(m, "get_base_model") else m


@contextmanager
def _only_layers(lm, layers: slice, *, final_norm: bool = True):
    """Run ``lm`` through a slice of its decoder layers (the modules themselves, LoRA included)."""
    inner = lm.model
    orig_layers, orig_norm = inner.layers, inner.norm
    inner.layers = torch.nn.ModuleList(list(orig_layers)[layers])
    if not final_norm:
        inner.norm = torch.nn.Identity()
    try:
        yield
    finally:
        inner.layers, inner.norm = orig_layers, orig_norm


def first_trained_layer(model) -> int | None:
    """Index of the lowest decoder layer holding a trainable parameter, or ``None`` when a trainable
    parameter sits outside the decoder layers below the head (embeddings) or nothing trains."""
    lowest: int | None = None
    for name, p in _unwrap(model).named_parameters():
        if not p.requires_grad:
            continue
        m = _LAYER.search(name)
        if m is None:
            if "lm_head" in name:  # above every layer: no effect on the prefix
                continue
            return None
        idx = int(m.group(1))
        lowest = idx if lowest is None else min(lowest, idx)
    return lowest


class PrefixCache:
    """Hidden states entering decoder layer ``start``, one ``[len, hidden]`` tensor per distinct row
    (keyed by its tokens), shared by every model the cache is attached to.

    Valid only for models whose layers below ``start`` are the same frozen modules (checked by the
    trainer with :func:`first_trained_layer`). Rows must be right-padded, as
    :class:`~lethe.training.data.UnlearnBatches` builds them."""

    def __init__(self, start: int) -> None:
        if start < 1:
            raise ValueError("a prefix cache needs at least one frozen layer below the trained ones")
        self.start = start
        self.rows: dict[str, torch.Tensor] = {}  # digest of the row's token ids -> [len, hidden]
        self.hits = 0
        self.misses = 0
        self.loaded = 0  # rows read from a file by :meth:`load`

    @staticmethod
    def _key(ids: torch.Tensor) -> str:
        return hashlib.blake2b(ids.cpu().numpy().tobytes(), digest_size=16).hexdigest()

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.rows.values())

    def load(self, file: Path, identity: str) -> PrefixCache:
        """Add the rows a previous run saved in ``file`` for the same ``identity`` (base model and
        layer); a missing, foreign or unreadable file adds nothing."""
        try:
            saved = torch.load(file, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError):
            return self
        if saved.get("identity") != [identity, self.start]:
            return self
        rows = saved.get("rows", {})
        for k, t in rows.items():
            self.rows.setdefault(k, t)
        self.loaded = len(rows)
        return self

    def save(self, file: Path, identity: str, *, max_mb: float) -> bool:
        """Write every row (merged with what another run saved meanwhile) to ``file``, atomically;
        nothing is written when the rows exceed ``max_mb`` (``0`` never writes)."""
        if max_mb <= 0:
            return False
        self.load(file, identity)
        if self.nbytes > max_mb * 2**20:
            return False
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.name}.tmp-{os.getpid()}")
        rows = {k: t.detach().cpu().contiguous() for k, t in self.rows.items()}
        torch.save({"identity": [identity, self.start], "rows": rows}, tmp)
        os.replace(tmp, file)
        return True

    def attach(self, *models) -> PrefixCache:
        for m in models:
            if m is not None:
                setattr(_unwrap(m), ATTR, self)
        return self

    def states(self, model, enc: dict) -> torch.Tensor:
        """The states entering layer ``start`` for ``enc``'s rows, padded like ``enc``."""
        ids, att = enc["input_ids"], enc["attention_mask"]
        lengths = att.sum(-1).tolist()
        keys = [self._key(ids[j, : lengths[j]]) for j in range(ids.shape[0])]
        missing = [j for j, k in enumerate(keys) if k not in self.rows]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            lm = causal_lm(model)
            idx = torch.tensor(missing, device=ids.device)
            width = max(lengths[j] for j in missing)
            with torch.no_grad(), _only_layers(lm, slice(0, self.start), final_norm=False):
                h = lm.model(input_ids=ids[idx, :width], attention_mask=att[idx, :width]).last_hidden_state
            for k, j in enumerate(missing):
                self.rows[keys[j]] = h[k, : lengths[j]].detach().clone()
        first = self.rows[keys[0]]
        out = torch.zeros((ids.shape[0], ids.shape[1], first.shape[-1]), dtype=first.dtype, device=ids.device)
        for j, k in enumerate(keys):
            out[j, : lengths[j]] = self.rows[k].to(ids.device)
        return out

    def forward(self, model, enc: dict, **kw):
        """``model``'s output on ``enc`` from the cached states through the top layers only."""
        h = self.states(model, enc)
        lm = causal_lm(model)
        with _only_layers(lm, slice(self.start, None)):
            return lm(inputs_embeds=h, attention_mask=enc["attention_mask"], **kw)


def model_identity(path: str, dtype: str) -> str:
    """What the frozen states depend on: the base model (its folder's config and weight files, or
    the hub id as given) and the dtype it runs in."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".json") and f.is_file())
        listing = [(f.name, f.stat().st_size, hashlib.sha256(f.read_bytes()).hexdigest()[:16] if f.suffix == ".json"
                    else int(f.stat().st_mtime)) for f in files]
        return json.dumps({"path": str(p.resolve()), "files": listing, "dtype": dtype}, sort_keys=True)
    return json.dumps({"path": path, "dtype": dtype}, sort_keys=True)


def store_file(root: Path, identity: str, start: int) -> Path:
    """The file holding the saved states of one base model and layer under ``root``."""
    digest = hashlib.sha256(f"{identity}|{start}".encode()).hexdigest()[:20]
    return root / f"{digest}.pt"


def cache_of(model) -> PrefixCache | None:
    """The :class:`PrefixCache` attached to ``model`` (or to the model inside its wrappers)."""
    m = _unwrap(model)
    found = getattr(m, ATTR, None)
    if found is None and hasattr(m, "get_base_model"):
        found = getattr(m.get_base_model(), ATTR, None)
    return found
