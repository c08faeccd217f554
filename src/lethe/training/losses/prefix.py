"""Top-layer training with a cached frozen prefix.

When only the top decoder layers train (LoRA on the last N layers, or an adapter such as a TOFU
target continued with ``--init-adapter``), every layer below the first trained one maps a row to
the same hidden states at every step, for the model under training and for a reference that
differs from it only above that layer (the LoRA base with the adapter disabled, or the starting
adapter merged in). :class:`PrefixCache` computes those states once per distinct row and serves
every later forward from them, so a step runs the top layers only; :func:`forward` in
:mod:`lethe.training.losses.core` routes through it, which makes the saving apply to every loss.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

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
        self.rows: dict[bytes, torch.Tensor] = {}
        self.hits = 0
        self.misses = 0

    def attach(self, *models) -> PrefixCache:
        for m in models:
            if m is not None:
                setattr(_unwrap(m), ATTR, self)
        return self

    def states(self, model, enc: dict) -> torch.Tensor:
        """The states entering layer ``start`` for ``enc``'s rows, padded like ``enc``."""
        ids, att = enc["input_ids"], enc["attention_mask"]
        lengths = att.sum(-1).tolist()
        keys = [ids[j, : lengths[j]].cpu().numpy().tobytes() for j in range(ids.shape[0])]
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
        out = torch.zeros((ids.shape[0], ids.shape[1], first.shape[-1]), dtype=first.dtype, device=first.device)
        for j, k in enumerate(keys):
            out[j, : lengths[j]] = self.rows[k]
        return out

    def forward(self, model, enc: dict, **kw):
        """``model``'s output on ``enc`` from the cached states through the top layers only."""
        h = self.states(model, enc)
        lm = causal_lm(model)
        with _only_layers(lm, slice(self.start, None)):
            return lm(inputs_embeds=h, attention_mask=enc["attention_mask"], **kw)


def cache_of(model) -> PrefixCache | None:
    """The :class:`PrefixCache` attached to ``model`` (or to the model inside its wrappers)."""
    m = _unwrap(model)
    found = getattr(m, ATTR, None)
    if found is None and hasattr(m, "get_base_model"):
        found = getattr(m.get_base_model(), ATTR, None)
    return found
