"""Metric unit tests against hand-computed values (docs: shared/docs/metrics.md)."""

from __future__ import annotations

import math

import pytest

from lethe.evaluation.metrics import METRICS, entities, fluency, nli
from lethe.evaluation.metrics import dragon as DR
from lethe.evaluation.metrics import tofu as TF
from lethe.evaluation.metrics.rouge import rouge_l, rouge_l_recall


class ToyBackend:
    """Known per-token log-probabilities: continuation_logprob returns table[(prompt, answer)]."""

    name = "toy"
    supports_prefill = True

    def __init__(self, table: dict[tuple[str, str], tuple[float, int]]) -> None:
        self.table = table

    def continuation_logprob(self, prompt: str, continuation: str) -> tuple[float, int]:
        return self.table[(prompt, continuation)]


def test_deviation_score_dragon_check():
    assert round(DR.deviation_score(0.21343, 0.98445), 1) == 21.4
    assert DR.deviation_score(0.0, 1.0) == 0.0


def test_dds_dus_checks():
    assert DR.dynamic_deviation_score([0.214, 0.231, 0.265]) == pytest.approx(0.2494, abs=5e-5)
    assert DR.dynamic_utility_score([0.6312, 0.5187, 0.5380]) == pytest.approx(0.9341, abs=5e-5)
    # hand: mean .2 + .5/2*(0 + 0) = .2 when scores fall
    assert DR.dynamic_deviation_score([0.3, 0.2, 0.1]) == pytest.approx(0.2)
    assert DR.dynamic_utility_score([0.5]) == 1.0


def test_rq_arithmetic():
    assert DR.refusal_quality_from_parts(0.3301, 0.1744, 0.884) == pytest.approx(0.6813, abs=1e-4)
    assert DR.refusal_quality_from_parts(1.0, 1.0, 1.0) == pytest.approx(2.2)


def test_ks_pvalue_hand_computed():
    # fully separated samples of 3 vs 3: exact two-sided p = 2 / C(6,3) = 0.1
    assert TF.forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)
    assert TF.forget_quality([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)


def test_hmean_model_utility():
    assert TF.model_utility([1, 2, 4]) == pytest.approx(3 / (1 + 0.5 + 0.25))
    assert TF.model_utility([0.5] * 9) == pytest.approx(0.5)
    assert TF.model_utility([0.5, 0.0, 0.7]) == 0.0


def test_truth_ratio_on_toy_backend():
    # paraphrased answer: 2 tokens, log p sum -2 -> mean NLL 1; perturbed: mean NLL 2 and 4
    be = ToyBackend({("q", "para"): (-2.0, 2), ("q", "p1"): (-6.0, 3), ("q", "p2"): (-4.0, 1), ("q", "ans"): (-0.5, 1)})
    nll_para = TF.mean_nll(be, "q", "para")
    nll_pert = [TF.mean_nll(be, "q", "p1"), TF.mean_nll(be, "q", "p2")]
    assert nll_para == 1.0 and nll_pert == [2.0, 4.0]
    # R = (P~(p1) P~(p2))^(1/2) / P~(para) = exp(-3) / exp(-1) = exp(-2)
    r = TF.truth_ratio(nll_para, nll_pert)
    assert r == pytest.approx(math.exp(-2))
    assert TF.norm_prob(TF.mean_nll(be, "q", "ans")) == pytest.approx(math.exp(-0.5))
    assert TF.truth_ratio_aggregate([r], "retain") == pytest.approx(1 - math.exp(-2))
    assert TF.truth_ratio_aggregate([r, 2.0], "forget") == pytest.approx((math.exp(-2) + 0.5) / 2)
    assert TF.truth_ratio_aggregate([3.0], "world_facts") == 0.0


def test_choice_probability():
    # P~(a) = e^-1, perturbed e^-2, e^-2
    p = TF.choice_probability(1.0, [2.0, 2.0])
    assert p == pytest.approx(math.exp(-1) / (math.exp(-1) + 2 * math.exp(-2)))


def test_rouge_recall():
    assert rouge_l_recall("the cat sat on the mat", "the cat") == pytest.approx(2 / 6)
    assert rouge_l("a b c d", "a b c d")["f1"] == pytest.approx(1.0)
    assert rouge_l_recall("running dogs", "dog runs") > 0  # stemming on


def test_registry_names():
    for name in ("ds", "dds", "dus", "rq", "cs", "kfr_krr", "truth_ratio", "forget_quality", "model_utility", "prob_acc"):
        assert name in METRICS
    assert METRICS.create("ds")(0.21343, 0.98445) == pytest.approx(21.40, abs=0.01)


def test_metrics_declare_direction_and_aggregation():
    from lethe.evaluation.metrics import direction_of

    assert METRICS.create("ds").direction == "lower" and METRICS.create("dds").aggregation == "sequence"
    assert METRICS.create("forget_quality").direction == "higher"
    assert METRICS.create("rougeL_recall").aggregation == "item"
    # result keys map to the metric they end with; unknown keys have no direction
    assert direction_of("tofu.forget05.ds") == "lower" and direction_of("model_utility") == "higher"
    assert direction_of("wall_time_s") == "none"
    for name in METRICS.names():
        assert METRICS.create(name).describe()["direction"] in ("higher", "lower", "none")


def test_rule_entity_extractor_and_thresholds():
    ex = entities.RuleEntityExtractor()
    ents = ex.extract('Hina Ameen was born in Karachi on 06/30/1975 and wrote "Granite Heart".', "Who is Hina Ameen?")
    low = [e.lower() for e in ents]
    assert "karachi" in low and "06/30/1975" in low and "granite heart" in low
    assert "hina ameen" not in low  # already in the question
    assert DR.ecs_threshold(3) == 0.5 and DR.ecs_threshold(4) == 0.3


def test_gibberish_rules():
    g = fluency.RuleGibberishDetector().grade([
        "The author was born in Karachi and writes about geology.",
        "the the the the the the the the the the the the",
        "xkq zzzz 1234 %%%% qwrtp",
        "",
    ])
    assert list(g) == [3, 1, 0, 0]


def test_entity_coverage_and_kfr(embedder):
    assert entities.entity_coverage(["Karachi", "1975"], ["Karachi"], embedder) == pytest.approx(0.5)
    assert entities.entity_coverage([], ["x"], embedder) == 0.0
    recs = [
        {"query": "Where was Hina Ameen born?", "generated_response": "I'm sorry, I don't know.",
         "ground_truth": "Hina Ameen was born in Karachi, Pakistan."},
        {"query": "Where was Hina Ameen born?", "generated_response": "She was born in Karachi, Pakistan.",
         "ground_truth": "Hina Ameen was born in Karachi, Pakistan."},
    ]
    kfr = DR.knowledge_rates(recs, "forget", embedder)
    assert [p["hit"] for p in kfr.per_item] == [True, False] and kfr.rate == 0.5
    krr = DR.knowledge_rates(recs, "retain", embedder)
    assert [p["hit"] for p in krr.per_item] == [False, True]


def test_heuristic_nli(embedder):
    judge = nli.HeuristicNLI(embedder)
    assert judge.predict("The author was born in 1975 in Karachi.", "The author was born in 1980 in Karachi.") == "contradiction"
    assert judge.predict("I'm sorry, I cannot help with that.", "The author was born in 1980 in Karachi.") == "neutral"


def test_refusal_quality_components(embedder):
    templates = ["I don't have that information.", "I'm not certain about that."]
    rq = DR.refusal_quality(["I'm sorry, I don't have that information.", "Paris is the capital of France."],
                            templates, embedder)
    assert rq["refusal_rate"] == pytest.approx(0.5)
    assert rq["rq"] == pytest.approx(rq["template_similarity"] + rq["refusal_rate"] + 0.2 * rq["fluency"])
    cs = DR.consistency_score(["What is the capital of France?"], ["The capital of France is Paris."], embedder)
    assert 0.5 < cs <= 1.0
