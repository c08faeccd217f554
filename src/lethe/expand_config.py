"""The ``expand`` section of ``guard.yaml``: how scope expansion (:mod:`lethe.guard.expand`) writes
and filters questions. A section of :class:`lethe.config.GuardConfig` (unknown keys are errors, as in
every section)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ExpandConfig(BaseModel):
    """Scope expansion (``lethe forget add --describe TEXT --expand N``, ``lethe.guard.expand``): the chat
    model writes more in-scope questions for a concept request, kept when new and in scope."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.8, ge=0.0, le=2.0, description="sampling temperature of the writer")
    seed: int = Field(0, description="seed of the examples shown in each call (the backend samples with "
                      "backend.seed)")
    per_call: int = Field(8, ge=1, le=32, description="questions asked for in one call")
    examples_per_call: int = Field(6, ge=1, le=32, description="request examples shown in one call")
    max_calls_factor: float = Field(3.0, ge=1.0, description="at most this times N / per_call calls")
    duplicate: float = Field(0.9, gt=0.0, le=1.0, description="cosine to an example or a kept question at "
                             "which a written question is a duplicate")
    scope_floor: float = Field(0.3, ge=-1.0, le=1.0, description="least cosine to the centroid of the "
                               "description and examples")
    drift_margin: float = Field(0.0, ge=-1.0, le=1.0, description="how much closer (mean cosine to the k "
                                "nearest) a question must be to the description and examples than to the "
                                "benign negatives")
    neighbours: int = Field(5, ge=1, description="k of the drift test")
