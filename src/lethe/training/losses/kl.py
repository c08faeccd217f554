"""KL minimisation: gradient ascent on the forget set, KL to the reference on the retain set."""

from __future__ import annotations

from lethe.training.losses.core import LOSSES, UnlearnLoss, kl_to_reference, model_nll


@LOSSES.register("kl")
class KLMin(UnlearnLoss):
    """GA on D_f + lambda * KL(pi_ref || pi_theta) on D_r (TOFU's KL baseline)."""

    name = "kl"
    needs_retain = True
    uses_retain = True
    needs_reference = True

    def __call__(self, ctx, batch):
        f = model_nll(ctx.model, batch["forget"])
        kl = kl_to_reference(ctx, batch["retain"])
        return -f + ctx.lam * kl, {"forget_nll": float(f.detach()), "retain_kl": float(kl.detach())}
