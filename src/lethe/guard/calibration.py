"""Choosing the trigger threshold tau from benign queries, with the checks that keep a
calibration from silently breaking the guard.

``Guard.calibrate`` sets tau so that at most ``target_fpr`` of a benign set scores above it.
That is only as good as the benign set, so before tau changes:

- **Size.** The set must hold at least ``MIN_FALSE_POSITIVES / target_fpr`` queries, so the
  chosen tau lets at least ``MIN_FALSE_POSITIVES`` of them through: with fewer, the FPR is
  not measured at all (three is the rule of three: zero hits in ``3 / p`` trials bound the rate
  below ``p`` at 95 %).
- **Domain.** The benign queries must sit closer to the store than general questions do: their
  median cosine to the nearest stored sample at least ``DOMAIN_MARGIN`` (0.1) above that of the
  shipped general hold-out against the same store (so the shipped set itself never passes).
  Queries that resemble nothing forgotten score near zero whatever tau is, and a tau chosen on
  them is far too low for the real neighbours of a request (other people with a shared first
  name, the same questions about another book).
- **Floor.** tau never goes below ``TAU_FLOOR`` = 0.5. The score is a noisy-OR of parts in
  [0, 1]; at 0.5 it takes one part at half strength or several weaker ones agreeing, and below
  it a first-name match plus a loosely similar question (two parts near 0.3) triggers.

Refusals raise ``CalibrationError`` (tau unchanged); ``force=True`` turns size and domain
problems into warnings, the floor still holds. Every calibration reports the FPR measured at
the chosen tau and the TPR on held-out positives: fresh variants (typos, a jailbreak wrapper,
seeded apart from the store's own augmentations) of the store's stored rewrites, which
calibration never sees as negatives, at the new and the previous tau.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from lethe.backends.embeddings import cached_encode
from lethe.errors import LetheError
from lethe.guard.augment import WRAPPERS, typo

if TYPE_CHECKING:  # pragma: no cover
    from lethe.guard.guard import Guard

TAU_FLOOR = 0.5
TAU_CEILING = 0.99
MIN_FALSE_POSITIVES = 3
DOMAIN_MARGIN = 0.1
TPR_DROP_WARN = 0.02
HELD_OUT_SEED = "lethe-calibration-held-out"


class CalibrationError(LetheError):
    """The benign set cannot support the requested calibration; tau is left as it was."""


@dataclass
class Calibration:
    """What a calibration chose and measured."""

    tau: float
    previous_tau: float
    target_fpr: float
    n_benign: int
    benign_above: int
    fpr: float
    fpr_previous: float
    benign_cosine: float
    general_cosine: float
    requested_tau: float
    at_floor: bool
    floor: float = TAU_FLOOR
    n_held_out: int = 0
    tpr: float | None = None
    tpr_previous: float | None = None
    saved: bool = False
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in d.items()}

    def summary(self, source: str) -> list[str]:
        """Human-readable lines: tau, the FPR behind it, the TPR it keeps."""
        where = "saved in guard.yaml" if self.saved else "not saved"
        floor = f"; the benign set asked for {self.requested_tau:.3f}, held at the floor" if self.at_floor else ""
        lines = [f"tau {self.previous_tau:.3f} -> {self.tau:.3f} ({where}{floor})",
                 f"benign: {self.n_benign:,} queries ({source}), {self.benign_above} above tau: FPR {self.fpr:.4f} "
                 f"(target {self.target_fpr:g}; {self.fpr_previous:.4f} at the previous tau); median cosine "
                 f"to the store {self.benign_cosine:.3f} (general questions: {self.general_cosine:.3f})"]
        if self.tpr is None:
            lines.append("held-out positives: none (the store keeps embeddings only, no rewrite text)")
        else:
            lines.append(f"held-out positives: {self.n_held_out:,} fresh variants of the store's rewrites: "
                         f"TPR {self.tpr:.3f} ({self.tpr_previous:.3f} at the previous tau)")
        return lines


def held_out_variants(texts: list[str], per_text: int = 3) -> list[str]:
    """In-scope queries the store does not hold: two lightly typo'd copies of each stored rewrite
    (5 % and 8 % of its letters) and one, with 3 %, wrapped in a jailbreak-style frame; seeded
    apart from ``augment``'s, so none is a stored augmentation."""
    out: list[str] = []
    for text in texts:
        rng = random.Random(f"{HELD_OUT_SEED}:{text}")
        cands = [typo(text, rng, 0.05), typo(text, rng, 0.08), rng.choice(WRAPPERS).format(q=typo(text, rng, 0.03))]
        out += [c for c in cands[:per_text] if c and c != text]
    return list(dict.fromkeys(out))


def _median_nearest(guard: Guard, emb: np.ndarray) -> float:
    """Median over queries of the cosine to the nearest live stored sample."""
    if len(emb) == 0:
        return 0.0
    return float(np.median([m[0].score if m else 0.0 for m in guard.store.search(emb, k=1)]))


def _tau_for(scores: np.ndarray, target_fpr: float) -> float:
    """The smallest tau (trigger: score > tau) that lets at most ``target_fpr`` of ``scores`` through."""
    s = np.sort(scores)
    allowed = int(math.floor(target_fpr * len(s)))
    return float(s[len(s) - allowed - 1]) + 1e-6 if allowed < len(s) else 0.0


def choose_tau(guard: Guard, benign: list[str], target_fpr: float, force: bool = False,
               shipped: bool = False) -> Calibration:
    """Measure, check and choose (``Guard.calibrate`` saves); see the module docstring."""
    if not 0.0 < target_fpr < 0.5:
        raise CalibrationError(f"target FPR must be between 0 and 0.5, got {target_fpr:g}")
    queries = [q for q in benign if isinstance(q, str) and q.strip()]
    if not queries:
        raise CalibrationError("calibration needs at least one benign query")
    previous = float(guard.config.detector.tau)
    problems: list[str] = []
    need = math.ceil(MIN_FALSE_POSITIVES / target_fpr - 1e-9)
    if len(queries) < need:
        problems.append(f"{len(queries)} benign queries are too few for a target FPR of {target_fpr:g} "
                        f"(at least {need}, so that {MIN_FALSE_POSITIVES} of them may trigger)")
    benign_cos = _median_nearest(guard, guard.embedder.encode(queries))
    general_cos = _median_nearest(guard, cached_encode(guard.embedder, list(guard.detector.benign_holdout)))
    if benign_cos < general_cos + DOMAIN_MARGIN:
        what = "the shipped hold-out is general questions" if shipped else "they read like general questions"
        problems.append(f"the benign queries are out of domain: their median cosine to the store is "
                        f"{benign_cos:.3f}, general questions' {general_cos:.3f} ({DOMAIN_MARGIN} more needed; "
                        f"{what})")
    if problems and not force:
        raise CalibrationError("; ".join(problems) + f". tau stays {previous:.3f}: give benign queries your users "
                               "ask near these topics with --file (or --force)")
    warnings = list(problems)
    scores = np.array([d.score for d in guard.detect_many(queries)], dtype=np.float64)
    requested = _tau_for(scores, target_fpr)
    tau = float(min(TAU_CEILING, max(TAU_FLOOR, requested)))
    at_floor = requested < TAU_FLOOR
    if at_floor:
        warnings.append(f"the benign queries allow tau {requested:.3f}, below the floor {TAU_FLOOR}: tau is held "
                        "at the floor")
    cal = Calibration(tau=tau, previous_tau=previous, target_fpr=target_fpr, n_benign=len(queries),
                      benign_above=int((scores > tau).sum()), fpr=float((scores > tau).mean()),
                      fpr_previous=float((scores > previous).mean()), benign_cosine=benign_cos,
                      general_cosine=general_cos,
                      requested_tau=requested, at_floor=at_floor, warnings=warnings)
    texts = [s.text for s in guard.store.samples(live_only=True) if s.role == "rewrite" and s.text]
    positives = held_out_variants(texts)
    if positives:
        pos = np.array([d.score for d in guard.detect_many(positives)], dtype=np.float64)
        cal.n_held_out, cal.tpr, cal.tpr_previous = len(pos), float((pos > tau).mean()), float((pos > previous).mean())
        if cal.tpr < cal.tpr_previous - TPR_DROP_WARN:
            warnings.append(f"TPR on held-out variants of the store's rewrites falls from {cal.tpr_previous:.3f} "
                            f"to {cal.tpr:.3f} at the new tau")
    return cal
