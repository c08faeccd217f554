"""Targeted Reasoning Unlearning (Liao et al., arXiv 2603.09980)."""

from __future__ import annotations

from dataclasses import dataclass

from lethe.training.losses.core import LOSSES, UnlearnLoss, decision_nll, model_nll
from lethe.training.losses.npo import npo_term
from lethe.training.losses.settings import LossSettings


@dataclass
class TRUSettings(LossSettings):
    """TRU's defaults: a small GA weight (larger ones collapse a small chat model), a retain anchor of
    weight alpha * lam as a KL to the starting model averaged per retain row, 16 retain rows per step,
    and the first answer tokens (the answer-or-decline decision) weighted 0.5 more; docs/training.md
    says why each was chosen."""

    lr: float = 2e-4
    alpha: float = 0.1
    lam: float = 40.0
    retain_loss: str = "kl"
    retain_reduce: str = "row"
    retain_batch_size: int | None = 16
    head_weight: float = 0.5


@LOSSES.register("tru")
class TRU(UnlearnLoss):
    """Targeted Reasoning Unlearning (Liao et al. 2026, arXiv 2603.09980):
    L_target + alpha * L_GA, with L_target the CE on the reasoning target r ++ s and L_GA
    by default the GradDiff form (NLL-raise on D_f + lambda * NLL on D_r when given);
    ``ga_term`` may be ``gd`` (default), ``ga``, ``npo`` or ``wga``."""

    name = "tru"
    uses_retain = True
    target_kind = "reasoning"
    settings = TRUSettings

    def uses_reference(self, *, retain_loss: str, has_retain: bool, ga_term: str = "gd") -> bool:
        return ga_term == "npo" or super().uses_reference(retain_loss=retain_loss, has_retain=has_retain)

    def __call__(self, ctx, batch):
        t = decision_nll(ctx, batch["target"])
        parts = {"target_nll": float(t.detach())}
        term = ctx.ga_term
        if term == "npo":
            g, p = npo_term(ctx, batch["forget"])
            parts.update(p)
        elif term == "wga":
            g, p = LOSSES.create("wga")(ctx, {"forget": batch["forget"]})
            parts.update(p)
        else:
            f = model_nll(ctx.model, batch["forget"])
            g = -f
            parts["forget_nll"] = float(f.detach())
        loss = t + ctx.alpha * g
        if term in ("gd", "npo", "wga") and "retain" in batch:
            loss = loss + ctx.alpha * self._retain(ctx, batch, parts)
        return loss, parts
