"""The metric interface: one small class per metric, with its direction and how it aggregates.

A metric is registered in ``METRICS`` under a short name; ``METRICS.create(name)`` returns an instance
that is called like the function it wraps. ``direction`` ("higher" / "lower" is better, or "none"
for a descriptive number such as a probability) lets reports mark the better side without a table
of names; ``aggregation`` says what the value summarises: ``item`` (one value per item, averaged by
the runner), ``set`` (computed from a whole split), ``sequence`` (a continual-unlearning trajectory).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from lethe.registry import Registry

Direction = Literal["higher", "lower", "none"]
Aggregation = Literal["item", "set", "sequence"]


class Metric:
    name: ClassVar[str] = "base"
    direction: ClassVar[Direction] = "none"
    aggregation: ClassVar[Aggregation] = "set"
    description: ClassVar[str] = ""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def describe(self) -> dict[str, str]:
        return {"metric": self.name, "direction": self.direction, "aggregation": self.aggregation,
                "description": self.description}


METRICS: Registry[Metric] = Registry("metric")


def direction_of(name: str) -> Direction:
    """The better direction of a metric name as it appears in results (``forget_rougeL_recall`` ...):
    the longest registered metric name the key ends with decides; unknown keys are ``none``."""
    known = [m for m in METRICS.names() if name == m or name.endswith("_" + m) or name.endswith("." + m)]
    if not known:
        return "none"
    return METRICS.get(max(known, key=len)).direction
