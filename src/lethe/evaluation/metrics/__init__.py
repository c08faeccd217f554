"""Metric functions and the METRICS registry of metric classes (name -> class with direction)."""

from __future__ import annotations

from lethe.evaluation.metrics import dragon, mc, rouge, tofu
from lethe.evaluation.metrics.base import METRICS, Metric, direction_of
from lethe.registry import import_submodules

import_submodules(__name__)  # every metric module registers its classes

__all__ = ["METRICS", "Metric", "direction_of", "dragon", "mc", "rouge", "tofu"]
