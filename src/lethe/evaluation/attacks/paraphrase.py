"""LLM paraphrase of the question."""

from __future__ import annotations

from lethe.evaluation.attacks.base import ATTACKS, LLMAttack


@ATTACKS.register("paraphrase")
class Paraphrase(LLMAttack):
    """LLM paraphrase of the question (greedy on the configured backend, so it is reproducible)."""

    name = "paraphrase"
    instruction = "Rephrase the following question with different words, keeping its meaning. Reply with the question only."
