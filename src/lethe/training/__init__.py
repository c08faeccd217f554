"""Training-based unlearning: TRU (reasoning targets) and the standard baselines.

``lethe train --method M`` runs :func:`lethe.training.trainer.train`; losses live in
:data:`lethe.training.losses.LOSSES`. Heavy imports (torch, transformers) happen lazily.
"""

from __future__ import annotations

__all__ = ["LOSSES", "TrainConfig", "train"]


def __getattr__(name: str):
    if name == "LOSSES":
        from lethe.training.losses import LOSSES

        return LOSSES
    if name in ("TrainConfig", "train"):
        from lethe.training import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
