"""Supervised fine-tuning (no unlearning term): the guider's JSON and TOFU's target models."""

from __future__ import annotations

import torch

from lethe.training.losses.core import LOSSES, UnlearnLoss, answer_logits, by_length, row_mean, token_logprobs


@LOSSES.register("sft")
class SFT(UnlearnLoss):
    """Plain supervised fine-tuning: NLL of the answer tokens, prompt masked (no unlearning term).

    The batch's ``forget`` slot simply holds the (prompt, answer) pairs to learn; ``lethe guider
    train`` uses it to teach the guider its JSON output and ``lethe tofu prepare`` to teach a base
    model the TOFU authors. Rows run in groups of similar length (:func:`by_length`): the same
    loss as one padded batch (mean over rows of each row's token-averaged NLL), fewer tokens."""

    name = "sft"

    def __call__(self, ctx, batch):
        def flat_nll(sub: dict) -> torch.Tensor:
            lp, m = token_logprobs(*answer_logits(ctx.model, sub))
            return -lp[m]

        per_tok, mask = by_length(batch["forget"], flat_nll)
        t = row_mean(per_tok, mask)
        return t, {"nll": float(t.detach())}
