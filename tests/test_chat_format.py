"""Training and inference format prompts with the same function (lethe.backends.chat_format)."""

from __future__ import annotations

import pytest


def test_training_examples_start_with_the_prompt_the_hf_backend_sends(tmp_path):
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lethe.backends.chat_format import render, user_turn
    from lethe.backends.hf import HFBackend
    from lethe.training.data import encode_pair
    from lethe.training.tiny import make_tiny_model

    folder = make_tiny_model(tmp_path / "tiny")
    tok = AutoTokenizer.from_pretrained(folder)
    backend = HFBackend.from_model(AutoModelForCausalLM.from_pretrained(folder), tok)
    msgs = user_turn("Who wrote the play Romeo and Juliet?", "Answer briefly.")
    sent = backend.format_prompt(msgs)
    assert sent == render(tok, msgs) and sent.endswith("<|im_start|>assistant\n") and "Answer briefly." in sent
    enc = encode_pair(tok, "Who wrote the play Romeo and Juliet?", "Shakespeare.", system="Answer briefly.")
    prompt_ids = [i for i, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab == -100]
    assert tok.decode(prompt_ids) == sent  # the training prompt is the inference prompt, token for token
    assert backend.format_prompt(msgs, prefill="Reasoning:") == sent + "Reasoning:"


class _NoTemplate:
    chat_template = None


def test_tokenizers_without_a_template_get_role_lines():
    from lethe.backends.chat_format import render, user_turn

    assert render(_NoTemplate(), user_turn("Hi?")) == "user: Hi?\nassistant: "
