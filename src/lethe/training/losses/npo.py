"""Negative preference optimisation and its variants (NPO, NPO-RT, SimNPO)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lethe.training.losses.core import LOSSES, LossContext, UnlearnLoss, answer_logits, seq_logprob


def npo_term(ctx: LossContext, enc: dict) -> tuple[torch.Tensor, dict]:
    """NPO: -(2/beta) E log sigma(-beta log(pi_theta(y|x) / pi_ref(y|x))) (Zhang et al. 2024)."""
    s, _ = seq_logprob(*answer_logits(ctx.model, enc))
    r, _ = seq_logprob(*ctx.ref_answer_logits(enc))
    ratio = s - r
    loss = -(2.0 / ctx.beta) * F.logsigmoid(-ctx.beta * ratio).mean()
    return loss, {"npo": float(loss.detach()), "log_ratio": float(ratio.mean().detach())}


@LOSSES.register("npo")
class NPO(UnlearnLoss):
    """Negative Preference Optimization on D_f only; bounded below by 0, 2/beta*log 2 at pi_ref."""

    name = "npo"
    needs_reference = True

    def __call__(self, ctx, batch):
        return npo_term(ctx, batch["forget"])


@LOSSES.register("npo_rt")
class NPORetain(UnlearnLoss):
    """NPO + lambda * NLL on D_r."""

    name = "npo_rt"
    needs_retain = True
    uses_retain = True
    needs_reference = True

    def __call__(self, ctx, batch):
        loss, parts = npo_term(ctx, batch["forget"])
        return loss + self._retain(ctx, batch, parts), parts


@LOSSES.register("simnpo")
class SimNPO(UnlearnLoss):
    """SimNPO: -(2/beta) E log sigma(-(beta/|y|) log pi_theta(y|x) - gamma), no reference
    (Fan et al. 2024); + lambda * NLL on D_r when a retain set is given."""

    name = "simnpo"
    uses_retain = True

    def __call__(self, ctx, batch):
        enc = batch["forget"]
        s, n = seq_logprob(*answer_logits(ctx.model, enc))
        loss = -(2.0 / ctx.beta) * F.logsigmoid(-(ctx.beta / n) * s - ctx.gamma).mean()
        parts = {"simnpo": float(loss.detach())}
        return loss + self._retain(ctx, batch, parts), parts
