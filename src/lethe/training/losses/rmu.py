"""Representation misdirection (RMU, Li et al. 2024, the WMDP paper)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lethe.training.losses.core import LOSSES, UnlearnLoss, forward
from lethe.training.losses.settings import LossSettings, option


@dataclass
class RMUSettings(LossSettings):
    """RMU's knobs: the steered layer, the steering scale, and a retain weight of 100 (the WMDP paper's
    order of magnitude)."""

    alpha: float = 100.0
    rmu_layer: int | None = option(None, "RMU: the layer whose activations are steered.", "--rmu-layer",
                                   none_means="a third of the depth")
    rmu_c: float = option(6.5, "RMU steering scale c.", "--rmu-c")


@LOSSES.register("rmu")
class RMU(UnlearnLoss):
    """Representation Misdirection for Unlearning (Li et al. 2024, WMDP): at layer l,
    mean ||h_l(x_f) - c*u||^2 + alpha * mean ||h_l(x_r) - h_l^frozen(x_r)||^2, u a fixed
    random unit vector. Averaged over all non-pad tokens of the sequence."""

    name = "rmu"
    needs_retain = True
    uses_retain = True
    needs_reference = True
    settings = RMUSettings
    full_finetune = False  # LoRA on the layers around the steered one

    def __init__(self) -> None:
        self._u: torch.Tensor | None = None
        self.layer = 0

    def configure(self, settings, n_layers: int) -> None:
        """The steered layer: ``rmu_layer``, else a third of the depth (``n // 4 + 1``, below the top)."""
        chosen = getattr(settings, "rmu_layer", None)
        self.layer = chosen if chosen is not None else min(n_layers - 1, n_layers // 4 + 1)

    def lora_layers(self, targets):
        """LoRA on the MLPs of the steered layer and the two below it (the WMDP paper's placement)."""
        return targets or ["gate_proj", "up_proj", "down_proj"], [i for i in range(self.layer - 2, self.layer + 1) if i >= 0]

    def context_extra(self) -> dict:
        return {"default_layer": self.layer}

    def describe(self) -> dict:
        return {"rmu_layer": self.layer}

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
