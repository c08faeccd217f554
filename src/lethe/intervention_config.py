"""The ``intervention`` section of ``guard.yaml``: where the guidance goes in the conversation sent
upstream (:mod:`lethe.guard.intervention`). A section of :class:`lethe.config.GuardConfig` (unknown
keys are errors, as in every section)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Placement = Literal["system", "user_prefix", "assistant_prefill"]


class InterventionConfig(BaseModel):
    """Where the guidance goes in the conversation sent upstream."""

    model_config = ConfigDict(extra="forbid")

    placement: Placement = Field("user_prefix", description="system, user_prefix or assistant_prefill")
    fake_profile: bool = Field(False, description="answer with a fictitious profile instead of declining")
    query_last: bool = Field(
        False, description="user_prefix: the policy and the reasoning before the question, then one constant "
        "closing sentence, so in-scope prompts of one kind share all but the question as a prefix that "
        "llama.cpp's prefix_reuse_chunk or vLLM's prefix caching decodes once; false: DRAGON's order "
        "(context, question, reasoning)")
