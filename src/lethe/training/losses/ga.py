"""Gradient ascent on the forget answers, with and without a retain term (GA, GradDiff, WGA)."""

from __future__ import annotations

from lethe.training.losses.core import LOSSES, UnlearnLoss, answer_logits, model_nll, token_logprobs


@LOSSES.register("ga")
class GradientAscent(UnlearnLoss):
    """GA: minimise -NLL(y_f | x_f), i.e. raise the forget loss (Jang et al. 2023)."""

    name = "ga"

    def __call__(self, ctx, batch):
        f = model_nll(ctx.model, batch["forget"])
        return -f, {"forget_nll": float(f.detach())}


@LOSSES.register("gd")
class GradDiff(UnlearnLoss):
    """GradDiff: -NLL on D_f + lambda * NLL on D_r (Liu et al. 2022; TOFU baseline)."""

    name = "gd"
    needs_retain = True
    uses_retain = True

    def __call__(self, ctx, batch):
        f = model_nll(ctx.model, batch["forget"])
        parts = {"forget_nll": float(f.detach())}
        return -f + self._retain(ctx, batch, parts), parts




@LOSSES.register("wga")
class WeightedGA(UnlearnLoss):
    """Weighted GA: each forget token's log-prob weighted by p_theta^alpha, no gradient through
    the weight (Wang et al. 2025, "Rethinking LLM unlearning objectives"); + retain NLL if given."""

    name = "wga"
    uses_retain = True

    def __call__(self, ctx, batch):
        enc = batch["forget"]
        lp, mask = token_logprobs(*answer_logits(ctx.model, enc))
        w = (lp.detach() * ctx.wga_alpha).exp() * mask
        loss = ((w * lp).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
        f = float((-(lp.sum(-1)) / mask.sum(-1).clamp(min=1)).mean().detach())
        parts = {"forget_nll": f}
        return loss + self._retain(ctx, batch, parts), parts
