"""The shipped benign queries (``resources/benign_queries.jsonl``): the detector's scorer negatives
and, split off deterministically, the hold-out that calibration measures false positives on."""

from __future__ import annotations

import json
import random
from importlib import resources
from pathlib import Path


def load_benign(path: Path | None = None) -> list[dict]:
    """Rows (``{"prompt": ...}``) of the shipped benign set, or of a JSONL file."""
    if path is None:
        text = (resources.files("lethe") / "resources" / "benign_queries.jsonl").read_text(encoding="utf-8")
    else:
        text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def benign_split(rows: list[dict], seed: int = 0, holdout: float = 0.2) -> tuple[list[str], list[str]]:
    """Deterministic train / calibration split of the benign set."""
    prompts = [r["prompt"] for r in rows]
    rng = random.Random(seed)
    idx = list(range(len(prompts)))
    rng.shuffle(idx)
    cut = int(len(idx) * (1 - holdout))
    return [prompts[i] for i in idx[:cut]], [prompts[i] for i in idx[cut:]]
