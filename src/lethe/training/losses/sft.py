"""Supervised fine-tuning (no unlearning term): the guider's JSON and TOFU's target models."""

from __future__ import annotations

import torch

from lethe.training.losses.core import (
    LOSSES,
    UnlearnLoss,
    _answer_logits,
    by_length,
    forward,
    row_mean,
    token_logprobs,
)
from lethe.training.losses.prefix import prefix_states, top_forward


@LOSSES.register("sft")
class SFT(UnlearnLoss):
    """Plain supervised fine-tuning: NLL of the answer tokens, prompt masked (no unlearning term).

    The batch's ``forget`` slot simply holds the (prompt, answer) pairs to learn; ``lethe guider
    train`` uses it to teach the guider its JSON output and ``lethe tofu prepare`` to teach a base
    model the TOFU authors. Rows run in groups of similar length (:func:`by_length`): the same
    loss as one padded batch (mean over rows of each row's token-averaged NLL), fewer tokens."""

    name = "sft"
    supports_prefix_cache = True

    def __call__(self, ctx, batch):
        enc = batch["forget"]
        start = ctx.extra.get("prefix_layer")
        if start:  # frozen bottom layers: their states are cached, only the top layers run
            enc = {**enc, "prefix_h": prefix_states(ctx, enc, list(batch["index"]), start)}

            def call(sub: dict, **kw):
                return top_forward(ctx.model, sub, start, **kw)
        else:
            def call(sub: dict, **kw):
                return forward(ctx.model, sub, **kw)

        def flat_nll(sub: dict) -> torch.Tensor:
            lp, m = token_logprobs(*_answer_logits(call, sub))
            return -lp[m]

        per_tok, mask = by_length(enc, flat_nll)
        t = row_mean(per_tok, mask)
        return t, {"nll": float(t.detach())}
