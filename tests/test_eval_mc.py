"""Multiple-choice formatting, parsing, sampling and scoring with a toy backend."""

from __future__ import annotations

import pytest

from lethe.evaluation import data as D
from lethe.evaluation.methods import ForgetTarget, create_method
from lethe.evaluation.metrics import mc as MC
from lethe.evaluation.runner import mc_aggregate, run_mc_items

ITEM = {"id": "x-0", "question": "What is 2+2?", "choices": ["3", "4", "5", "6"], "answer": 1, "subject": "elementary_mathematics"}


class LetterBackend:
    """Puts most mass on the correct letter unless the prompt carries the unlearning prompt."""

    name = "letters"
    supports_prefill = True

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def format_prompt(self, messages, prefill=None):
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>" + (prefill or "")

    def next_token_logprobs(self, prompt, candidates):
        self.prompts.append(prompt)
        good = 0 if "knows nothing" in prompt else 1
        return [-0.1 if i == good else -3.0 for i in range(len(candidates))]

    def chat(self, messages, *, max_tokens=200, temperature=0.0, prefill=None, stop=None):
        class R:
            text = " B"

        return R()

    def describe(self):
        return {"backend": self.name}


def test_chat_messages_move_subject_header_to_system_turn():
    msgs = MC.chat_messages(MC.format_mc_prompt(ITEM))
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "elementary mathematics" in msgs[0]["content"]
    assert msgs[1]["content"] == MC.user_turn(ITEM) == "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6"
    assert MC.chat_messages("plain question\nAnswer:") == [{"role": "user", "content": "plain question"}]


def test_format_mc_prompt_exact():
    p = MC.format_mc_prompt(ITEM)
    assert p == ("The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
                 "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer:")
    shot = dict(ITEM, question="What is 1+1?", choices=["2", "3", "4", "5"], answer=0)
    p2 = MC.format_mc_prompt(ITEM, [shot])
    assert "What is 1+1?\nA. 2\nB. 3\nC. 4\nD. 5\nAnswer: A\n\nWhat is 2+2?" in p2
    assert MC.split_answer_cue(p).endswith("D. 6")


def test_letter_prompt_prefill():
    be = LetterBackend()
    msgs = [{"role": "user", "content": "Q"}]
    assert MC.letter_prompt(be, msgs, None).endswith("<assistant>Answer:")
    assert MC.letter_prompt(be, msgs, "I must decline. Therefore,").endswith("Therefore,\nAnswer:")
    assert MC.letter_prompt(be, msgs, None, fmt="raw") == "Q\nAnswer:"


@pytest.mark.parametrize("text,expected", [
    ("B", 1), (" (C) because", 2), ("The answer is D.", 3), ("Answer: A. 3", 0), ("I cannot answer that.", None),
])
def test_parse_letter(text, expected):
    assert MC.parse_letter(text) == expected


def test_prob_acc():
    assert MC.prob_acc([0, 1, None, 3], [0, 1, 2, 2]) == 50.0


def test_stratified_sample():
    items = [{"id": i, "subject": "a" if i < 80 else "b"} for i in range(100)]
    s1 = D.stratified_sample(items, 10, seed=3)
    assert s1 == D.stratified_sample(items, 10, seed=3)
    assert len(s1) == 10 and sum(x["subject"] == "a" for x in s1) == 8
    assert s1 != D.stratified_sample(items, 10, seed=4)
    assert D.stratified_sample(items, None) == items


def test_run_mc_none_and_prompt_methods():
    be = LetterBackend()
    recs = run_mc_items([ITEM] * 4, create_method("none", be), be, is_forget=True)
    assert mc_aggregate(recs)["prob_acc"] == 100.0
    m = create_method("prompt", be)
    m.add(ForgetTarget(kind="harmful", subject="arithmetic", prompts=["x"]))
    recs = run_mc_items([ITEM] * 4, m, be, is_forget=True)
    assert mc_aggregate(recs)["prob_acc"] == 0.0  # the system prompt moves the toy's mass to A
    assert "<system>" in be.prompts[-1]


def test_generate_scorer_agreement():
    be = LetterBackend()
    recs = run_mc_items([ITEM] * 3, create_method("none", be), be, is_forget=False, scorer="both")
    agg = mc_aggregate(recs)
    assert agg["gen_acc"] == 100.0 and agg["gen_logprob_agreement"] == 1.0 and agg["gen_parse_fail"] == 0.0


def test_icul_builds_flipped_demos():
    be = LetterBackend()
    m = create_method("icul", be, seed=1)
    m.add(ForgetTarget(kind="harmful", subject="s", prompts=[], forget_examples=[(f"f{i}", "Answer: A") for i in range(6)],
                       retain_examples=[(f"r{i}", "Answer: B") for i in range(8)]))
    plan = m.plan([{"role": "user", "content": "Q"}], index=0)
    users = [x["content"] for x in plan.messages if x["role"] == "user"]
    assert len(users) == 4 + 6 + 1 and users[-1] == "Q"
    assert all(u.startswith("f") for u in users[:4]) and all(u.startswith("r") for u in users[4:10])
    assert plan.messages == m.plan([{"role": "user", "content": "Q"}], index=0).messages  # seeded
    plus = create_method("icul+", be)
    plus.setup(m.targets)
    assert len(plus.plan([{"role": "user", "content": "Q"}], 0, is_forget=False).messages) == 1
