"""The scorers of the CPU real-knowledge experiment (``benchmarks/training_experiment.py``)."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _experiment():
    spec = importlib.util.spec_from_file_location("training_experiment", ROOT / "benchmarks" / "training_experiment.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fact_matcher_rejects_shared_last_words_and_question_echoes():
    """Regression: the name-style last-word rule counted a wrong river, ocean or wall as correct."""
    m = _experiment()
    q = "Which river flows through the Grand Canyon?"
    assert m.has_answer("The Grand Canyon flows through the Mississippi River.", "Colorado River")  # the old bug
    assert not m.fact_answer("The Grand Canyon flows through the Mississippi River.", ["Colorado River"], q)
    assert m.fact_answer("It is the Colorado River.", ["Colorado River"], q)
    assert not m.fact_answer("The Great Barrier Reef is located in the ocean.", ["Pacific Ocean"],
                             "The Great Barrier Reef is located in which body of water?")
    assert not m.fact_answer("The wall officially came down in 1989.", ["The Berlin Wall"],
                             "What wall officially came down in 1989?")
    assert m.fact_answer("It was the Berlin Wall.", ["The Berlin Wall"], "What wall officially came down in 1989?")
    # any accepted form; whole words only; accents folded
    assert m.fact_answer("He was Vincent van Gogh.", ["Gogh"], "Who painted 'The Starry Night'?")
    assert m.fact_answer("Salvador Dalí painted it.", ["Dali", "Dalí"], "Who painted it?")
    assert not m.fact_answer("There are 600 of them.", ["6", "six"], "How many legs does an insect have?")
    assert m.fact_answer("An insect has six legs.", ["6", "six"], "How many legs does an insect have?")
    assert m.fact_answer("It boils at about 100°C.", ["100"], "What is the boiling point of water?")
    assert not m.fact_answer("It boils at 1000°C.", ["100"], "What is the boiling point of water?")
    # a plural is the same answer (session 11: "British pounds" had been scored wrong)
    q = "What is the currency of the United Kingdom?"
    assert m.fact_answer("The currency of the United Kingdom is British pounds.", ["pound"], q)
    assert not m.fact_answer("The currency of the United Kingdom is the euro.", ["pound"], q)


def test_retain_probe_file_is_well_formed():
    rows = [json.loads(x) for x in (ROOT / "benchmarks" / "data" / "retain_probe.jsonl").read_text().splitlines()]
    assert len(rows) >= 100
    assert len({r["question"] for r in rows}) == len(rows)
    m = _experiment()
    for r in rows:
        assert r["group"] in ("general", "neighbour") and r["accept"] and r["answer"] == r["accept"][0]
        # an answer already in the question would be matched by any echo
        q = set(m.fold(r["question"]).split())
        assert any(set(m.fold(a).split()) - q for a in r["accept"]), r["question"]


def test_retain_train_extra_is_disjoint_from_the_retain_eval_probe():
    """The anchor questions are trained on, so none may also be a retain-eval question."""
    probe = {json.loads(x)["question"] for x in (ROOT / "benchmarks" / "data" / "retain_probe.jsonl").read_text().splitlines()}
    extra = [json.loads(x) for x in (ROOT / "benchmarks" / "data" / "retain_train_extra.jsonl").read_text().splitlines()]
    assert len(extra) == 80 and not probe & {r["prompt"] for r in extra}
    assert {r["group"] for r in extra} == {"general", "neighbour"}


def test_augment_adds_train_only_rephrasings_and_never_an_evaluation_attack(tmp_path):
    import argparse

    m = _experiment()
    forget = [{"prompt": "Which author wrote the play 'A Midsummer Night's Dream'?", "answer": "Shakespeare.",
               "gold": "William Shakespeare"},
              {"prompt": "Who wrote the novel 'Animal Farm'?", "answer": "George Orwell.", "gold": "George Orwell"}]
    (tmp_path / "forget.jsonl").write_text("".join(json.dumps(r) + "\n" for r in forget))
    m.cmd_augment(argparse.Namespace(results=str(tmp_path), out="forget_aug.jsonl"))
    rows = [json.loads(x) for x in (tmp_path / "forget_aug.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * (1 + len(m.TRAIN_REPHRASINGS))
    assert "Who is the writer of 'A Midsummer Night's Dream'?" in {r["prompt"] for r in rows}  # apostrophe kept
    attacks = {p for r in forget for _, p in m.paraphrases(r["prompt"])}
    assert attacks and not attacks & {r["prompt"] for r in rows}
    assert all(r["answer"] in {"Shakespeare.", "George Orwell."} for r in rows)
