"""One refusal definition (``lethe.evaluation.metrics.refusal``) and one fact matcher, used everywhere."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from lethe.evaluation.metrics import facts, refusal
from lethe.evaluation.metrics.refusal import GENERIC_REFUSALS, REFUSALS, RefusalDetector, has_refusal_phrase

ROOT = Path(__file__).resolve().parents[1]


def test_phrase_test_catches_refusals_in_english_and_spanish_and_passes_answers():
    for text in ("I'm sorry, I can't share that.", "I must decline.", "That is off limits.",
                 "I don't know who wrote it.", "Lo siento, no puedo ayudar.", *REFUSALS[:5]):
        assert has_refusal_phrase(text), text
    for text in ("William Shakespeare wrote it.", "The capital of France is Paris.", *refusal.NON_REFUSALS[:10]):
        assert not has_refusal_phrase(text), text


def test_every_user_takes_its_refusals_from_the_one_module(tmp_path):
    from lethe.evaluation.data import load_refusal_templates
    from lethe.evaluation.methods import create_method
    from lethe.training.data import Pair, load_refusals
    from lethe.training.targets import template_target

    assert load_refusals(None) == list(REFUSALS)
    assert load_refusals(tmp_path / "missing.jsonl") == list(REFUSALS)
    assert load_refusal_templates("hf") == list(REFUSALS)
    assert create_method("guardrail", backend=None).refusals == [REFUSALS[0]]
    declines = {template_target(Pair(f"Who wrote book {i}?", f"Author {i}"), kind="privacy").response.split(" It falls")[0]
                for i in range(40)}
    assert declines == set(GENERIC_REFUSALS)  # every generic refusal is used, nothing else


def test_no_other_module_defines_a_refusal_list():
    """No module in src/ (other than the definition) holds a literal list of refusal sentences (a list
    whose strings are mostly refusals; a tokenizer corpus with one refusal in it is not one)."""
    offenders = []
    for path in (ROOT / "src" / "lethe").rglob("*.py"):
        if path.name == "refusal.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.List | ast.Tuple | ast.Set):
                texts = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                hits = sum(has_refusal_phrase(t) and len(t.split()) >= 4 for t in texts)
                if hits >= 2 and hits > len(node.elts) / 2:  # mostly refusal sentences
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_detector_uses_phrase_or_classifier():
    class Never:
        name = "never"

        def predict(self, texts):
            return [0] * len(texts)

    class Always(Never):
        def predict(self, texts):
            return [1] * len(texts)

    replies = ["I'm sorry, I can't answer.", "I've no insight into that subject.", "Paris."]
    assert RefusalDetector(classifier=Never()).flags(replies) == [True, False, False]
    assert RefusalDetector(classifier=Always()).flags(replies) == [True, True, True]
    assert RefusalDetector(classifier=Never()).flags([]) == []


def test_embedding_classifier_flags_idk_style_refusals(embedder):
    det = RefusalDetector(embedder=embedder)
    assert det.flags(["I have no knowledge about this person, so I cannot say.",
                      "The treaty was signed in Vienna in 1815."]) == [True, False]


def test_benchmark_uses_the_package_scorers():
    spec = importlib.util.spec_from_file_location("training_experiment", ROOT / "benchmarks" / "training_experiment.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.fact_answer is facts.fact_answer and mod.has_answer is facts.has_answer
    assert mod.repetition is facts.repetition
    assert mod.has_refusal_phrase is has_refusal_phrase


def test_fact_matchers():
    assert facts.has_answer("It was written by Shakespeare.", "William Shakespeare")
    assert not facts.has_answer("It was written by Marlowe.", "William Shakespeare")
    assert facts.fact_answer("An insect has six legs.", ["6", "six"], "How many legs does an insect have?")
    assert not facts.fact_answer("It boils at 1000°C.", ["100"], "What is the boiling point of water?")
    assert facts.repetition("a b c a b c a b c") == pytest.approx(1 - 3 / 7)
    assert facts.repetition("one two") == 0.0
