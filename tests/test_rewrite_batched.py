"""Rewriting in one pass: many sampled sequences of many prompts in one llama.cpp generation
(``lethe.backends.llamacpp_parallel``), the LLM rewriter on top of it, and the copy bound on its choice."""

from __future__ import annotations

import pytest

from lethe.guard.rewrite import REWRITERS, LLMRewriter, Rewriter, RuleRewriter, rewrite_prompts, within_bound


@pytest.fixture(scope="module")
def backend():
    from lethe.backends.llamacpp import LlamaCppBackend

    return LlamaCppBackend(n_ctx=2048)


def _repeat(word: str) -> list[dict]:
    return [{"role": "system", "content": "You repeat what you are told, and nothing else."},
            {"role": "user", "content": f"Reply with exactly these words and nothing else: {word}"}]


def test_each_sequence_continues_its_own_prompt(backend):
    """Two prompts that share everything but their last words, decoded in one batch with a shared
    prefix: greedy samples (top-k 1) of each repeat that prompt's words, never the other's."""
    words = ["purple elephant", "golden teapot"]
    drawn = backend.sample_many([_repeat(w) for w in words], 3, max_tokens=8, temperature=0.7, top_p=0.9)
    assert len(drawn) == 2 and all(len(d) == 3 for d in drawn)
    from lethe.backends.llamacpp_parallel import ParallelSampler

    sampler = ParallelSampler(backend.llm, n_seq_max=8, n_ctx=1024)
    try:
        toks = [backend._completion_tokens(backend.format_prompt(_repeat(w))) for w in words]
        k = next(i for i, (a, b) in enumerate(zip(*toks, strict=False)) if a != b)
        greedy = sampler.sample(toks[0][:k], [t[k:] for t in toks], 2, max_tokens=8, top_k=1)
    finally:
        sampler.close()
    for w, other, lines in zip(words, reversed(words), greedy, strict=True):
        assert all(w in line.lower() and other not in line.lower() for line in lines), (w, lines)
        assert all("\n" not in line for line in lines)


def test_samples_are_seeded_and_capped_per_prompt(backend):
    convs = [_repeat("blue whale"), [{"role": "user", "content": "Write a long story about a ship."}]]
    a = backend.sample_many(convs, 2, max_tokens=[6, 3], temperature=1.0, seed=7)
    b = backend.sample_many(convs, 2, max_tokens=[6, 3], temperature=1.0, seed=7)
    assert a == b
    for line in a[1]:
        assert len(backend._tokens(line, add_bos=False)) <= 4  # 3 tokens (+1 for re-tokenising a piece)


def test_batched_sampling_leaves_the_chat_path_unchanged(backend):
    q = [{"role": "user", "content": "What is the capital of France?"}]
    before = backend.chat(q, max_tokens=12).text
    backend.sample_many([q, _repeat("red fox")], 4, max_tokens=10)
    assert backend.chat(q, max_tokens=12).text == before


def test_llm_rewriter_draws_k_candidates_of_many_prompts_at_once(backend):
    rw = REWRITERS.create("llm", backend=backend)
    assert isinstance(rw, LLMRewriter) and rw.batched
    prompts = ["In which city was Hina Ameen born?", "What genre does Hina Ameen primarily write in?"]
    cands = rw.candidates_many(prompts, 4)
    assert len(cands) == 2 and all(1 <= len(c) <= 4 for c in cands)
    assert all(len(x) >= 8 and "\n" not in x for c in cands for x in c)
    from lethe.backends.embeddings import get_embedder

    class Fixed(Rewriter):  # the candidates drawn above, handed out again (sampling is seeded anyway)
        def candidates(self, prompt: str, k: int) -> list[str]:
            return cands[prompts.index(prompt)]

    chosen = rewrite_prompts(prompts, Fixed(), get_embedder(), 4)
    for p, r, cs in zip(prompts, chosen, cands, strict=True):
        usable = [c for c in cs if within_bound(c, p) and 0.3 <= len(c) / len(p) <= 3.0]
        rule = [a for a in RuleRewriter().attempts(p) if within_bound(a, p)]
        # a model candidate inside the copy bound when there is one, else the rule fallback's
        assert r in usable if usable else r in rule, (p, r, cs)


def test_numbered_list_path_and_rule_rewriter_are_still_rewriters(backend):
    rw = LLMRewriter(backend, batched=False)
    assert not rw.batched
    out = rw.candidates("Where was Hina Ameen born?", 2)
    assert 0 < len(out) <= 2 and all(len(x) >= 8 for x in out)
    rule = REWRITERS.create("rule")
    assert isinstance(rule, Rewriter) and isinstance(rule, RuleRewriter)
    q = "Which city did Hina Ameen grow up in?"
    assert rule.candidates_many([q], 4) == [[rule.rewrite(q)]]
