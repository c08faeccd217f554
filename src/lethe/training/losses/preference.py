"""Preference-style objectives: IDK (learn a refusal) and DPO (refusal preferred to the answer)."""

from __future__ import annotations

import torch.nn.functional as F

from lethe.training.losses.core import LOSSES, UnlearnLoss, answer_logits, decision_nll, seq_logprob


@LOSSES.register("idk")
class IDK(UnlearnLoss):
    """PO / IDK: NLL of a refusal answer on forget questions + lambda * NLL on D_r (TOFU)."""

    name = "idk"
    uses_retain = True
    target_kind = "refusal"

    def __call__(self, ctx, batch):
        t = decision_nll(ctx, batch["target"])
        parts = {"target_nll": float(t.detach())}
        return t + self._retain(ctx, batch, parts), parts


@LOSSES.register("dpo")
class DPO(UnlearnLoss):
    """DPO with the refusal preferred and the original answer rejected (Rafailov et al. 2023;
    the TOFU/NPO papers' unlearning variant): -(2/beta) E log sigma(beta*Delta_pref - beta*Delta_rej)."""

    name = "dpo"
    uses_retain = True
    needs_reference = True
    target_kind = "refusal"

    def __call__(self, ctx, batch):
        pref, rej = batch["target"], batch["forget"]
        sp, _ = seq_logprob(*answer_logits(ctx.model, pref))
        sr, _ = seq_logprob(*answer_logits(ctx.model, rej))
        rp, _ = seq_logprob(*ctx.ref_answer_logits(pref))
        rr, _ = seq_logprob(*ctx.ref_answer_logits(rej))
        margin = ctx.beta * ((sp - rp) - (sr - rr))
        loss = -(2.0 / ctx.beta) * F.logsigmoid(margin).mean()
        parts = {"dpo": float(loss.detach()), "margin": float(margin.mean().detach())}
        return loss + self._retain(ctx, batch, parts), parts
