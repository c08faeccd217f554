"""Safety policies: a YAML library, retrieved by request kind and then by similarity.

Built-in policies live in ``lethe/resources/policies``; users add their own YAML files
to ``<home>/policies`` (same fields), which take precedence by name.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ValidationError

from lethe.backends.embeddings import Embedder
from lethe.errors import ConfigError


class Policy(BaseModel):
    name: str
    kind: str
    title: str
    description: str
    guideline: str
    reason: str
    redirect: str
    refusal_style: str = ""
    decline: str = ""  # the fixed answer of a hard block (output check); default: built from reason + redirect

    def decline_message(self) -> str:
        """The answer that replaces a blocked one: ``decline`` when the policy gives it, else a
        sentence built from its reason and redirect (no model call, so it cannot leak)."""
        if self.decline.strip():
            return self.decline.strip()
        return f"I'm sorry, but I can't help with that: {self.reason.rstrip('.')}. " \
               f"I can help with {self.redirect.rstrip('.')} instead."


def _load_dir(folder: Path) -> list[Policy]:
    out = []
    for f in sorted(folder.glob("*.yaml")):
        try:
            out.append(Policy.model_validate(yaml.safe_load(f.read_text())))
        except (yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"bad policy file {f}: {str(exc).splitlines()[0]}") from None
    return out


class PolicyLibrary:
    def __init__(self, extra_dir: Path | None = None, embedder: Embedder | None = None) -> None:
        builtin = Path(str(resources.files("lethe") / "resources" / "policies"))
        policies = {p.name: p for p in _load_dir(builtin)}
        if extra_dir is not None and extra_dir.exists():
            policies.update({p.name: p for p in _load_dir(extra_dir)})
        self.policies = policies
        self.embedder = embedder
        self._emb: dict[str, np.ndarray] = {}

    def get(self, name: str) -> Policy:
        if name not in self.policies:
            raise ConfigError(f"unknown policy '{name}' (known: {', '.join(sorted(self.policies))})")
        return self.policies[name]

    def retrieve(self, kind: str, query: str | None = None, name: str | None = None) -> Policy:
        """The named policy, else the kind's policies ranked by similarity to the query."""
        if name:
            return self.get(name)
        cands = [p for p in self.policies.values() if p.kind == kind] or list(self.policies.values())
        if len(cands) == 1 or not query or self.embedder is None:
            return cands[0]
        missing = [p for p in cands if p.name not in self._emb]
        if missing:
            vecs = self.embedder.encode([p.description for p in missing])
            self._emb.update({p.name: v for p, v in zip(missing, vecs, strict=True)})
        q = self.embedder.encode([query])[0]
        return max(cands, key=lambda p: float(self._emb[p.name] @ q))
