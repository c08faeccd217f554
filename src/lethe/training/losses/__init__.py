"""Unlearning objectives as small loss classes in the ``LOSSES`` registry.

Every loss gets a :class:`LossContext` (the model, a frozen reference, knobs) and a batch
``{"forget", "target"?, "retain"?}`` of collated tensors (see :mod:`lethe.training.data`),
and returns ``(loss, parts)`` where ``parts`` are floats for the progress bar and log.

Notation follows ``docs/baselines-and-attacks.md``: NLL over answer tokens, D_f forget,
D_r retain, pi_ref the frozen starting model (the LoRA base with adapters disabled).

One module per method family; every module of this package is imported (so a new loss is one new file
beside its neighbours, see docs/extending.md). The shared machinery is in ``core`` and ``prefix``.
"""

from __future__ import annotations

from lethe.registry import import_submodules
from lethe.training.losses.core import (
    LOSSES,
    LossContext,
    UnlearnLoss,
    answer_logits,
    by_length,
    decision_nll,
    forward,
    head_mask,
    kl_to_reference,
    model_nll,
    nll,
    row_mean,
    seq_logprob,
    token_kl,
    token_logprobs,
)
from lethe.training.losses.prefix import PrefixCache, first_trained_layer

import_submodules(__name__)

__all__ = [
    "LOSSES", "LossContext", "PrefixCache", "UnlearnLoss", "answer_logits", "by_length", "decision_nll",
    "first_trained_layer", "forward", "head_mask", "kl_to_reference", "model_nll", "nll", "row_mean", "seq_logprob",
    "token_kl", "token_logprobs",
]
