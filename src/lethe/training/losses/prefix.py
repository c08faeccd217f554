"""Top-layer training with a cached frozen prefix: states entering the first trained layer are
computed once per row and reused every epoch."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from lethe.training.losses.core import LossContext, _unwrap


def _causal_lm(model):
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


def prefix_states(ctx: LossContext, enc: dict, rows: list[int], start: int) -> torch.Tensor:
    """Hidden states entering decoder layer ``start``, one ``[len, hidden]`` tensor per training row,
    computed once and kept in ``ctx.extra["_prefix_cache"]``; returned padded like ``enc``.

    Valid only when nothing below layer ``start`` trains (LoRA on the top layers, frozen embeddings):
    those layers then map a row to the same states every epoch, so each later step runs the top
    layers only, forward and backward (the trainer turns this on; ``TrainConfig.lora_top_layers``)."""
    cache: dict[int, torch.Tensor] = ctx.extra.setdefault("_prefix_cache", {})
    lengths = enc["attention_mask"].sum(-1).tolist()
    missing = [j for j, r in enumerate(rows) if r not in cache]
    if missing:
        lm = _causal_lm(ctx.model)
        idx = torch.tensor(missing, device=enc["input_ids"].device)
        width = max(lengths[j] for j in missing)
        with torch.no_grad(), _only_layers(lm, slice(0, start), final_norm=False):
            h = lm.model(input_ids=enc["input_ids"][idx, :width],
                         attention_mask=enc["attention_mask"][idx, :width]).last_hidden_state
        for k, j in enumerate(missing):
            cache[rows[j]] = h[k, : lengths[j]].detach().clone()
    first = cache[rows[0]]
    out = torch.zeros((len(rows), enc["input_ids"].shape[1], first.shape[-1]), dtype=first.dtype, device=first.device)
    for j, r in enumerate(rows):
        out[j, : lengths[j]] = cache[r]
    return out


def top_forward(model, enc: dict, start: int, **kw):
    """The model's output from ``enc["prefix_h"]`` (states entering layer ``start``) through the top layers."""
    lm = _causal_lm(model)
    with _only_layers(lm, slice(start, None)):
        return lm(inputs_embeds=enc["prefix_h"], attention_mask=enc["attention_mask"], **kw)
