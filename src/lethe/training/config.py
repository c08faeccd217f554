"""``TrainConfig``: one training run's settings, its loss fields derived from the losses' own settings.

The run's own fields (data, model, LoRA, schedule, checkpoints) are written here; the loss fields are
the union of every registered loss's settings dataclass (:mod:`lethe.training.losses.settings`).
A field whose default differs between methods is ``None`` in ``TrainConfig`` and filled from the
method's settings when the run starts (:func:`fill_defaults`); ``METHOD_DEFAULTS`` lists those
differences and ``GENERIC_DEFAULTS`` the shared values, both read from the dataclasses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lethe.training.losses import LOSSES
from lethe.training.losses.settings import LossSettings, defaults


@dataclass
class RunConfig:
    """The fields of a run that no loss reads (``TrainConfig`` adds the loss fields)."""

    method: str
    forget: str
    out: str
    model: str | None = None  # None/"default": the embedded default model
    retain: str | None = None
    targets: str | None = None
    refusals: str | None = None
    teacher: str | None = "template"
    kind: str = "knowledge"
    scope: str | None = None
    epochs: int = 3
    rephrase: int = 0  # new rephrasings per forget prompt, rotated across epochs (training/rephrase.py)
    rephraser: str = "default"  # rule, or a backend spec as for teacher
    batch_size: int = 4
    grad_accum: int = 1
    max_length: int = 256
    max_steps: int | None = None
    retain_sampling: str = "uniform"  # uniform (cursor over the set) | boundary (data.boundary_weights)
    lora_rank: int = 16
    lora_alpha: int | None = None
    lora_targets: list[str] | str | None = None  # None: all-linear; preset or names (model.lora_target_modules)
    lora_top_layers: int | None = None  # LoRA on the last N decoder layers only (None: every layer)
    prefix_cache: bool = True  # adapters on the top layers only: cache the frozen layers' states per row
    prefix_cache_mb: float = 2048.0  # keep those states under $LETHE_CACHE/prefix for later runs (0: never)
    full_finetune: bool = False
    init_adapter: str | None = None  # train this LoRA adapter further (e.g. a TOFU target); it is the reference
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # constant | linear (decay to 0 at the last step) | cosine, after warmup
    max_grad_norm: float = 1.0
    seed: int = 0
    dtype: str = "float32"
    save_merged: bool = False
    checkpoint_every: int = 25
    resume: bool = True
    progress: bool = True
    system: str | None = None
    extra: dict = field(default_factory=dict)


def _settings_classes() -> list[type[LossSettings]]:
    return [LossSettings, *(LOSSES.get(n).settings for n in LOSSES.names())]


METHOD_DEFAULTS: dict[str, dict[str, Any]] = {}
"""Per method, the shared settings whose default it changes (read from its settings class)."""
for _name in LOSSES.names():
    _base, _own = defaults(LossSettings), defaults(LOSSES.get(_name).settings)
    if diff := {k: v for k, v in _own.items() if k in _base and _base[k] != v}:
        METHOD_DEFAULTS[_name] = diff

GENERIC_DEFAULTS: dict[str, Any] = {k: v for k, v in defaults(LossSettings).items()
                                    if any(k in d for d in METHOD_DEFAULTS.values())}
"""The shared value of each setting some method changes (a ``None`` in ``TrainConfig`` becomes it)."""


def loss_fields() -> dict[str, dataclasses.Field]:
    """Every loss setting once (the first class that declares it), in declaration order."""
    out: dict[str, dataclasses.Field] = {}
    for cls in _settings_classes():
        for f in dataclasses.fields(cls):
            out.setdefault(f.name, f)
    return out


def _config_field(f: dataclasses.Field) -> tuple[str, Any, dataclasses.Field]:
    per_method = f.name in GENERIC_DEFAULTS
    return (f.name, Any, field(default=None if per_method else f.default, metadata=f.metadata))


TrainConfig = dataclasses.make_dataclass(
    "TrainConfig", [_config_field(f) for f in loss_fields().values()], bases=(RunConfig,),
    namespace={"__doc__": "One training run: :class:`RunConfig`'s fields and every loss setting (``None``: the "
                          "method's default, see :func:`fill_defaults`).", "__module__": __name__},
)


def fill_defaults(cfg: Any) -> Any:
    """Set every ``None`` setting that depends on the method to the method's default (in place)."""
    for k, v in {**GENERIC_DEFAULTS, **METHOD_DEFAULTS.get(cfg.method, {})}.items():
        if getattr(cfg, k) is None:
            setattr(cfg, k, v)
    return cfg


def default_text(name: str) -> str | None:
    """The per-method default of a setting as ``lethe train --help`` shows it ("tru: 0.1, rmu: 100, others: 1")."""
    if name not in GENERIC_DEFAULTS:
        return None
    meta = loss_fields()[name].metadata
    parts = [f"{m}: {d[name]:g}" if isinstance(d[name], float) else f"{m}: {d[name]}"
             for m, d in sorted(METHOD_DEFAULTS.items()) if name in d]
    g = GENERIC_DEFAULTS[name]
    others = meta.get("none_means") if g is None else (f"{g:g}" if isinstance(g, float) else str(g))
    return ", ".join([*parts, f"others: {others}"])
