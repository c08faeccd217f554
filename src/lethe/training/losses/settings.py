"""The hyperparameters of a loss, declared once: a dataclass per method, defaults and help included.

:class:`LossSettings` holds the knobs every loss reads from its :class:`LossContext` (weights,
retain anchor, decision-token weighting, the learning rate); a method whose defaults differ
declares a subclass (``TRUSettings``, ``RMUSettings``) and names it as its loss class's
``settings``. Everything else is derived from these classes: ``TrainConfig``'s loss fields, the
per-method defaults (``METHOD_DEFAULTS``) and the options of ``lethe train`` with their help.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def option(default: Any, help: str, *flags: str, cli: bool = True, none_means: str | None = None) -> Any:
    """A settings field: its default, the ``lethe train`` help and option names (default: ``--name``);
    ``cli=False`` keeps it out of the command line; ``none_means`` says what a ``None`` default does."""
    return field(default=default, metadata={"help": help, "flags": flags, "cli": cli, "none_means": none_means})


@dataclass
class LossSettings:
    """The settings of every loss (a method's own class changes defaults or adds fields)."""

    lr: float = option(1e-4, "AdamW learning rate.")
    alpha: float = option(1.0, "TRU: weight of the GA term; RMU: retain weight.")
    lam: float = option(1.0, "Retain-term weight (tru: inside alpha*(...)).", "--lambda", "--lam")
    beta: float = option(0.1, "NPO/DPO/SimNPO beta.")
    gamma: float = option(0.0, "SimNPO's reward margin.", cli=False)
    ga_term: str = option("gd", "TRU's unlearning term: gd, ga, npo, wga.", "--ga-term")
    retain_loss: str = option("nll", "Retain anchor: nll (CE on retain answers) or kl (to the starting model).",
                              "--retain-loss")
    retain_batch_size: int | None = option(None, "Retain rows per step.", "--retain-batch-size",
                                           none_means="--batch-size")
    forget_tokens: str = option("all", "Forget-answer tokens the unlearning term sees: all, or novel (words the "
                                "question does not contain).", "--forget-tokens")
    retain_reduce: str = option("token", "KL anchor mean: token (long answers weigh more) or row (every retain "
                                "row the same).", "--retain-reduce")
    head_tokens: int = option(4, "First answer tokens that decide answer-or-decline (see --head-weight).",
                              "--head-tokens")
    head_weight: float = option(0.0, "Extra weight of those tokens in the target CE (tru, idk) and the retain "
                                "anchor; 0: off.", "--head-weight")


def defaults(settings: type[LossSettings]) -> dict[str, Any]:
    """Every field's default."""
    return {f.name: f.default for f in dataclasses.fields(settings)}


def overrides(settings: type[LossSettings]) -> dict[str, Any]:
    """The defaults in which ``settings`` differs from :class:`LossSettings`."""
    base = defaults(LossSettings)
    return {k: v for k, v in defaults(settings).items() if k not in base or base[k] != v}
