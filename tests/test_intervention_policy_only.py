"""The ``none`` guider (DRAGON's "w/o CoT" ablation): the policy goes in, no reasoning line does."""

from __future__ import annotations

from lethe.config import GuiderConfig
from lethe.guard import intervention
from lethe.guard.guider import GUIDERS
from lethe.guard.policies import Policy

POLICY = Policy(name="privacy", kind="privacy", title="Privacy", description="erased people", guideline="Do not disclose facts about erased people.",
                reason="a deletion request", redirect="public topics")


def test_none_guider_is_registered_and_gives_no_reasoning():
    cfg = GuiderConfig(kind="none")
    guider = GUIDERS.get(cfg.kind).from_config(cfg, backend=lambda: None, home=None)  # type: ignore[arg-type]
    g = guider.guide("Where was Hina Ameen born?", POLICY, "privacy")
    assert g.requires_refusal and g.reasoning == "" and g.source == "none"


def test_policy_only_intervention_has_policy_and_question_but_no_steps():
    msgs = [{"role": "user", "content": "Where was Hina Ameen born?"}]
    for placement in ("user_prefix", "system", "assistant_prefill"):
        iv = intervention.build(msgs, POLICY, "", placement, supports_prefill=True)
        text = "\n".join(m["content"] for m in iv.messages)
        assert POLICY.guideline in text and "Where was Hina Ameen born?" in text
        assert "step by step" not in text and "Reasoning" not in text and iv.prefill is None
    with_cot = intervention.build(msgs, POLICY, "I must decline. Therefore,", "user_prefix", True)
    assert with_cot.messages[-1]["content"].endswith("Let's think step by step. I must decline. Therefore,")


def test_query_last_puts_everything_constant_before_the_question():
    reasoning = "The user is asking about an erased person. So I must decline. Therefore,"
    turns = []
    for q in ("Where was Hina Ameen born?", "Who are Hina Ameen's parents?"):
        iv = intervention.build([{"role": "user", "content": q}], POLICY, reasoning, "user_prefix", True,
                                query_last=True)
        assert iv.placement == "user_prefix" and iv.prefill is None and len(iv.messages) == 1
        turns.append(iv.messages[0]["content"])
        text = turns[-1]
        # DRAGON's content, in prefix-cache order: context, steps, question, one constant closing sentence
        assert text.index(POLICY.guideline) < text.index("Let's think step by step. The user is asking")
        assert text.index("So I must decline.") < text.index(f"Question: {q}")
        assert text.endswith(f"Question: {q}\n\n{intervention.QUERY_LAST_CLOSE}") and text.count("Therefore,") == 1
    shared = len(turns[0].split("Question: ")[0])
    assert turns[0][:shared] == turns[1][:shared] and "So I must decline." in turns[0][:shared]
    # DRAGON's order stays the default; system already has the question last; no reasoning: no steps
    default = intervention.build([{"role": "user", "content": "Q?"}], POLICY, reasoning, "user_prefix", True)
    assert default.messages[0]["content"].endswith(f"Question: Q?\n\nLet's think step by step. {reasoning}")
    system = intervention.build([{"role": "user", "content": "Q?"}], POLICY, reasoning, "system", True,
                                query_last=True)
    assert system.messages[-1] == {"role": "user", "content": "Q?"} and reasoning in system.messages[0]["content"]
    bare = intervention.build([{"role": "user", "content": "Q?"}], POLICY, "", "user_prefix", True, query_last=True)
    assert bare.messages[0]["content"].endswith("\n\nQuestion: Q?") and "step by step" not in bare.messages[0]["content"]
