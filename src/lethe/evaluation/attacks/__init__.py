"""Robustness attacks applied to forget queries, each reproducible from a seed.

An attack rewrites the *user's* text before anything else sees it (the attacker controls the
input, so wrapping happens before detection). ``target`` says what is rewritten for
multiple-choice items: ``question`` (typos, translation, paraphrase, homoglyphs: the question
text inside the MC prompt) or ``message`` (jailbreak wrappers and long-task embedding: the
whole user message). The per-item randomness is ``Random(f"{seed}:{name}:{index}")``.

Each attack family is one module of this package, registered in ``ATTACKS`` when the package is
imported (every module here is discovered, so a new attack is one new file; see docs/extending.md).
"""

from __future__ import annotations

from lethe.evaluation.attacks.base import ATTACKS, Attack, LLMAttack, NoAttack, Wrapper
from lethe.registry import import_submodules

import_submodules(__name__)

__all__ = ["ATTACKS", "Attack", "LLMAttack", "NoAttack", "Wrapper"]
