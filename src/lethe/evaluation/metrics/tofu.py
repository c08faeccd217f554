"""TOFU metrics (Maini et al. 2024, arXiv 2401.06121; locuslab/open-unlearning ``src/evals/metrics``).

All answer probabilities are length-normalised: P~(a|q) = exp(-mean token NLL of a given q).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lethe.backends.base import ChatBackend


def mean_nll(backend: ChatBackend, prompt: str, answer: str) -> float:
    """Mean per-token negative log-likelihood of ``answer`` after the raw ``prompt``."""
    total, n = backend.continuation_logprob(prompt, answer)
    return -total / max(n, 1)


def norm_prob(nll: float) -> float:
    """P~ = exp(-mean NLL)."""
    return math.exp(-nll)


def truth_ratio(nll_correct: float, nll_perturbed: Sequence[float]) -> float:
    """R = (prod_k P~(a_k~))^(1/K) / P~(a^) = exp(NLL(a^) - mean_k NLL(a_k~)).

    ``nll_correct`` is the paraphrased answer's NLL on forget/retain, the answer's on real/world."""
    return math.exp(nll_correct - float(np.mean(nll_perturbed)))


def truth_ratio_aggregate(ratios: Sequence[float], split: str) -> float:
    """Forget split: mean min(R, 1/R); retain / real authors / world facts: mean max(0, 1 - R)."""
    r = np.asarray(ratios, dtype=np.float64)
    if r.size == 0:
        return float("nan")
    if split.startswith("forget"):
        return float(np.mean(np.minimum(r, 1.0 / r)))
    return float(np.mean(np.maximum(0.0, 1.0 - r)))


def choice_probability(nll_correct: float, nll_perturbed: Sequence[float]) -> float:
    """Real authors / world facts probability: P~(a) / (P~(a) + sum_k P~(a_k~))."""
    pa = norm_prob(nll_correct)
    return pa / (pa + sum(norm_prob(x) for x in nll_perturbed))


def forget_quality(truth_ratios: Sequence[float], reference_truth_ratios: Sequence[float]) -> float:
    """p-value of the two-sample KS test between per-item forget truth ratios (unlearned vs reference)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(np.asarray(truth_ratios), np.asarray(reference_truth_ratios)).pvalue)


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean of {probability, truth-ratio aggregate, ROUGE-L} x {retain, real authors, world facts}.

    A zero anywhere gives 0 (scipy's hmean would warn)."""
    from scipy.stats import hmean

    v = np.asarray([float(x) for x in values], dtype=np.float64)
    if v.size == 0 or np.any(~np.isfinite(v)):
        return float("nan")
    if np.any(v <= 0):
        return 0.0
    return float(hmean(v))
