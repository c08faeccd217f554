"""Evaluation: benchmarks (TOFU, WMDP, MMLU, MUSE), metrics, methods under test, attacks,
continual unlearning and reports. Entry points: ``lethe eval ...`` and ``lethe report``."""

from lethe.evaluation.attacks import ATTACKS
from lethe.evaluation.methods import METHODS
from lethe.evaluation.metrics import METRICS

__all__ = ["ATTACKS", "METHODS", "METRICS"]
