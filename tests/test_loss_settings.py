"""Hyperparameters declared once: each loss's settings dataclass drives TrainConfig, the per-method
defaults and the options of ``lethe train``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

pytest.importorskip("torch")


def test_per_method_defaults_come_from_the_settings_classes():
    from lethe.training.trainer import GENERIC_DEFAULTS, METHOD_DEFAULTS, TrainConfig

    # the values the trainer carried by hand before they moved into the losses
    assert METHOD_DEFAULTS == {
        "tru": {"alpha": 0.1, "lam": 40.0, "lr": 2e-4, "retain_loss": "kl", "retain_reduce": "row",
                "retain_batch_size": 16, "head_weight": 0.5},
        "rmu": {"alpha": 100.0},
    }
    assert GENERIC_DEFAULTS == {"alpha": 1.0, "lam": 1.0, "lr": 1e-4, "retain_loss": "nll", "retain_reduce": "token",
                                "head_weight": 0.0, "retain_batch_size": None}
    cfg = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    assert {k: cfg[k] for k in GENERIC_DEFAULTS} == dict.fromkeys(GENERIC_DEFAULTS)  # None: the method decides
    assert (cfg["beta"], cfg["gamma"], cfg["ga_term"], cfg["head_tokens"], cfg["rmu_c"], cfg["forget_tokens"]) == (
        0.1, 0.0, "gd", 4, 6.5, "all")


def test_fill_defaults_keeps_what_the_user_set():
    from lethe.training.config import TrainConfig, fill_defaults

    tru = fill_defaults(TrainConfig(method="tru", forget="f", out="o", lam=2.0))
    assert (tru.lam, tru.alpha, tru.lr, tru.retain_loss, tru.retain_batch_size) == (2.0, 0.1, 2e-4, "kl", 16)
    ga = fill_defaults(TrainConfig(method="ga", forget="f", out="o"))
    assert (ga.alpha, ga.lr, ga.retain_loss, ga.retain_batch_size, ga.head_weight) == (1.0, 1e-4, "nll", None, 0.0)


def test_a_new_loss_with_its_own_setting_reaches_the_config_and_the_command_line():
    import lethe.training.config as C
    from lethe.training.losses import LOSSES, UnlearnLoss
    from lethe.training.losses.settings import LossSettings, option

    @dataclass
    class ClipSettings(LossSettings):
        ceiling: float = option(8.0, "Forget NLL above which GA stops pushing.")

    class Clip(UnlearnLoss):
        name = "clip_settings_test"
        settings = ClipSettings

    LOSSES.register("clip_settings_test")(Clip)
    try:
        assert C.loss_fields()["ceiling"].default == 8.0
        from lethe.training.cli import _loss_options

        opt = {p.name: p for p in _loss_options()}["ceiling"]
    finally:
        LOSSES._items.pop("clip_settings_test")
    info = opt.annotation.__metadata__[0]  # typer keeps an Annotated option's first name in ``default``
    assert opt.default == 8.0 and (info.default, *info.param_decls) == ("--ceiling",)
    assert info.help == "Forget NLL above which GA stops pushing."


def test_rmu_places_its_adapters_and_steered_layer_itself():
    from lethe.training.losses import LOSSES

    rmu = LOSSES.create("rmu")
    assert not rmu.full_finetune
    rmu.configure(type("S", (), {"rmu_layer": None})(), 24)
    assert rmu.layer == 7 and rmu.context_extra() == {"default_layer": 7} and rmu.describe() == {"rmu_layer": 7}
    assert rmu.lora_layers(None) == (["gate_proj", "up_proj", "down_proj"], [5, 6, 7])
    rmu.configure(type("S", (), {"rmu_layer": 1})(), 24)
    assert rmu.lora_layers(["q_proj"]) == (["q_proj"], [0, 1])
    assert LOSSES.create("ga").lora_layers(None) is None and LOSSES.create("ga").full_finetune


def test_trainer_has_no_method_name_checks():
    from pathlib import Path

    import lethe.training.trainer as T

    text = Path(T.__file__).read_text()
    assert "method ==" not in text and '"rmu"' not in text
