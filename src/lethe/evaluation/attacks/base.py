"""The attack interface, its registry and the shared shapes (identity, wrappers, LLM rewrites)."""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from pathlib import Path

from lethe.registry import Registry


class Attack(ABC):
    name = "base"
    target = "question"

    def __init__(self, seed: int = 0, data_root: Path | str | None = None, backend=None) -> None:
        self.seed, self.data_root, self.backend = seed, data_root, backend

    def rng(self, index: int) -> random.Random:
        return random.Random(f"{self.seed}:{self.name}:{index}")

    @abstractmethod
    def apply(self, text: str, index: int = 0) -> str: ...

    def describe(self) -> dict:
        return {"attack": self.name, "target": self.target, "seed": self.seed}


ATTACKS: Registry[Attack] = Registry("attack")


@ATTACKS.register("none")
class NoAttack(Attack):
    name = "none"

    def apply(self, text: str, index: int = 0) -> str:
        return text


class Wrapper(Attack):
    target = "message"
    template = "{q}"

    def apply(self, text: str, index: int = 0) -> str:
        return self.template.replace("{q}", text)


class LLMAttack(Attack):
    instruction = ""

    def apply(self, text: str, index: int = 0) -> str:
        if self.backend is None:
            from lethe.errors import ConfigError

            raise ConfigError(f"attack '{self.name}' needs a model backend")
        out = self.backend.chat(
            [{"role": "user", "content": f"{self.instruction}\n\n{text}"}], max_tokens=120, temperature=0.0,
        ).text.strip()
        out = re.sub(r"^(here is|sure|rephrased|paraphrase)[^:\n]*:\s*", "", out, flags=re.I).strip().strip('"')
        return out.splitlines()[0].strip() if out else text
