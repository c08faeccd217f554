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
