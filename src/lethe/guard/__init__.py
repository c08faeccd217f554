"""The DRAGON guard: negative unlearn store, dual-layer detector, CoT guider, intervention."""

from lethe.guard.detector import Detection, Detector
from lethe.guard.guard import Guard, GuardResponse
from lethe.guard.pipeline import GuardPlan

__all__ = ["Detection", "Detector", "Guard", "GuardPlan", "GuardResponse"]
