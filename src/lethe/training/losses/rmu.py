"""Representation misdirection (RMU, Li et al. 2024, the WMDP paper)."""

from __future__ import annotations

import torch

from lethe.training.losses.core import LOSSES, UnlearnLoss, forward


@LOSSES.register("rmu")
class RMU(UnlearnLoss):
    """Representation Misdirection for Unlearning (Li et al. 2024, WMDP): at layer l,
    mean ||h_l(x_f) - c*u||^2 + alpha * mean ||h_l(x_r) - h_l^frozen(x_r)||^2, u a fixed
    random unit vector. Averaged over all non-pad tokens of the sequence."""

    name = "rmu"
    needs_retain = True
    uses_retain = True
    needs_reference = True

    def __init__(self) -> None:
        self._u: torch.Tensor | None = None

    def _hidden(self, model_out, layer: int) -> torch.Tensor:
        return model_out.hidden_states[layer + 1]  # hidden_states[0] are the embeddings

    def _control(self, dim: int, device, seed: int = 0) -> torch.Tensor:
        if self._u is None or self._u.shape[0] != dim:
            g = torch.Generator().manual_seed(seed)
            u = torch.rand(dim, generator=g)
            self._u = u / u.norm()
        return self._u.to(device)

    def __call__(self, ctx, batch):
        layer = ctx.rmu_layer if ctx.rmu_layer is not None else ctx.extra.get("default_layer", 0)
        f, r = batch["forget"], batch["retain"]
        hf = self._hidden(forward(ctx.model, f, output_hidden_states=True), layer).float()
        u = self._control(hf.shape[-1], hf.device)
        mf = f["attention_mask"].unsqueeze(-1).float()
        lf = (((hf - ctx.rmu_c * u) ** 2).mean(-1, keepdim=True) * mf).sum() / mf.sum()
        hr = self._hidden(forward(ctx.model, r, output_hidden_states=True), layer).float()
        href = self._hidden(ctx.ref_forward(r, output_hidden_states=True), layer).float()
        mr = r["attention_mask"].unsqueeze(-1).float()
        lr = (((hr - href) ** 2).mean(-1, keepdim=True) * mr).sum() / mr.sum()
        return lf + ctx.alpha * lr, {"forget_mse": float(lf.detach()), "retain_mse": float(lr.detach())}
