"""The DRAGON guard: negative unlearn store, dual-layer detector, CoT guider, intervention."""

from lethe.guard.detector import Detection, Detector
from lethe.guard.guard import Guard, GuardPlan, GuardResponse

__all__ = ["Detection", "Detector", "Guard", "GuardPlan", "GuardResponse"]
