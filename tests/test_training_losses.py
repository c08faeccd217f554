"""Loss unit tests on a tiny random-weight model (built locally, nothing downloaded)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from lethe.errors import LetheError  # noqa: E402
from lethe.training.data import IGNORE, Pair, UnlearnBatches, encode_pair, length_groups  # noqa: E402
from lethe.training.losses import (  # noqa: E402
    LOSSES,
    LossContext,
    answer_logits,
    decision_nll,
    kl_to_reference,
    model_nll,
    row_mean,
    token_kl,
    token_logprobs,
)
from lethe.training.model import apply_lora  # noqa: E402
from lethe.training.tiny import make_tiny_model  # noqa: E402

FORGET = [Pair("Who wrote the play Romeo and Juliet?", "William Shakespeare wrote it."),
          Pair("What is the capital of France?", "The capital of France is Paris.")]
RETAIN = [Pair("Which planet is known as the Red Planet?", "Mars is the Red Planet."),
          Pair("What is 2 plus 2?", "It is 4.")]
TARGETS = ["The question asks for knowledge within a restricted scope, so I should decline. "
           "I'm sorry, but I can't help with that question."] * 2


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _setup(tiny_dir, *, seed=0, lora=True, layers=None, targets=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    if lora:
        model = apply_lora(model, rank=4, layers=layers,
                           target_modules=["gate_proj", "up_proj", "down_proj"] if layers else None)
    batches = UnlearnBatches(tok, FORGET, targets=targets or TARGETS, retain=RETAIN, batch_size=2, max_length=96)
    batch = next(batches.epoch(0))
    return model, tok, batch


def _step(model, ctx, loss, batch, lr=5e-2, n=1):
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    vals = []
    for _ in range(n):
        value, _parts = loss(ctx, batch)
        opt.zero_grad()
        value.backward()
        opt.step()
        vals.append(float(value.detach()))
    return vals


def _nll(model, enc):
    with torch.no_grad():
        return float(model_nll(model, enc))


def test_labels_cover_answer_tokens_only(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    enc = encode_pair(tok, "Who wrote it?", "Shakespeare.")
    answer_ids = [t for t, lab in zip(enc["input_ids"], enc["labels"], strict=True) if lab != IGNORE]
    assert tok.decode(answer_ids) == "Shakespeare." + tok.eos_token
    prompt_part = tok.decode(enc["input_ids"][: len(enc["input_ids"]) - len(answer_ids)])
    assert prompt_part.endswith("assistant\n") and "Who wrote it?" in prompt_part


def test_answer_logits_skip_prompt_positions_without_changing_the_losses(tiny_dir):
    from lethe.training.losses import answer_logits, forward, nll

    model, _, batch = _setup(tiny_dir, lora=False)
    for enc in (batch["forget"], batch["target"], batch["retain"]):
        logits, labels = answer_logits(model, enc)
        assert logits.shape[1] < enc["input_ids"].shape[1]  # the prompt's LM-head work is skipped
        with torch.no_grad():
            full = float(nll(forward(model, enc).logits, enc["labels"]))
            assert float(nll(logits, labels)) == pytest.approx(full, rel=1e-5)
        assert int((labels != IGNORE).sum()) == int((enc["labels"] != IGNORE).sum())  # no answer token lost


def test_novel_forget_tokens_leave_the_words_echoing_the_question_alone(tiny_dir):
    from transformers import AutoTokenizer

    from lethe.training.data import novel_token_mask

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    q, a = "Who wrote the play Romeo and Juliet?", "The play Romeo and Juliet was written by William Shakespeare."
    ids = tok(a + tok.eos_token, add_special_tokens=False)["input_ids"]
    mask = novel_token_mask(tok, q, a)
    kept = tok.decode([i for i, k in zip(ids, mask, strict=True) if k])
    assert "Shakespeare" in kept and "William" in kept and "written" in kept
    assert "Romeo" not in kept and "play" not in kept and "The" not in kept
    enc = encode_pair(tok, q, a, max_length=96, novel_only=True)
    assert sum(t != IGNORE for t in enc["labels"]) == sum(mask)
    echo = encode_pair(tok, q, "Romeo and Juliet.", max_length=96, novel_only=True)  # nothing new: all kept
    assert echo["labels"] == encode_pair(tok, q, "Romeo and Juliet.", max_length=96)["labels"]
    b = UnlearnBatches(tok, FORGET, batch_size=2, max_length=96, forget_tokens="novel")
    full = UnlearnBatches(tok, FORGET, batch_size=2, max_length=96)
    n = lambda x: int((next(x.epoch(0))["forget"]["labels"] != IGNORE).sum())  # noqa: E731
    assert 0 < n(b) < n(full)


def test_registry_has_all_methods():
    for name in ["tru", "ga", "gd", "kl", "npo", "npo_rt", "simnpo", "idk", "dpo", "rmu", "wga"]:
        assert name in LOSSES


@pytest.mark.parametrize("method", ["ga", "gd", "kl", "npo", "npo_rt", "simnpo", "wga"])
def test_forgetting_losses_raise_forget_nll(tiny_dir, method):
    model, _tok, batch = _setup(tiny_dir)
    ctx = LossContext(model=model, lam=0.0)  # isolate the forget term
    before = _nll(model, batch["forget"])
    _step(model, ctx, LOSSES.create(method), batch, n=3)
    after = _nll(model, batch["forget"])
    assert after > before + 1e-3, f"{method}: forget NLL {before:.4f} -> {after:.4f}"


@pytest.mark.parametrize("method", ["idk", "tru", "dpo"])
def test_target_losses_lower_target_nll(tiny_dir, method):
    model, _tok, batch = _setup(tiny_dir)
    ctx = LossContext(model=model, alpha=0.1, lam=0.0)
    before = _nll(model, batch["target"])
    _step(model, ctx, LOSSES.create(method), batch, n=3)
    after = _nll(model, batch["target"])
    assert after < before - 1e-3, f"{method}: target NLL {before:.4f} -> {after:.4f}"


def test_retain_term_lowers_retain_nll(tiny_dir):
    model, _tok, batch = _setup(tiny_dir)
    ctx = LossContext(model=model, lam=1.0)
    before = _nll(model, batch["retain"])
    # a GD step with the forget term removed: only the retain CE acts
    loss = LOSSES.create("gd")
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    for _ in range(3):
        parts: dict = {}
        value = loss._retain(ctx, batch, parts)
        opt.zero_grad()
        value.backward()
        opt.step()
    assert _nll(model, batch["retain"]) < before


def test_kl_retain_anchor_pulls_a_drifted_model_back_to_the_reference(tiny_dir):
    model, _tok, batch = _setup(tiny_dir)
    ctx = LossContext(model=model, lam=1.0, retain_loss="kl")
    parts: dict = {}
    with torch.no_grad():
        assert float(LOSSES.create("gd")._retain(ctx, batch, parts)) == pytest.approx(0.0, abs=1e-6)
    assert "retain_kl" in parts and "retain_nll" not in parts
    _step(model, LossContext(model=model), LOSSES.create("ga"), batch, n=2)  # drift away
    with torch.no_grad():
        drifted = float(kl_to_reference(ctx, batch["retain"]))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(10):
        value = LOSSES.create("gd")._retain(ctx, batch, {})
        opt.zero_grad()
        value.backward()
        opt.step()
    with torch.no_grad():
        assert float(kl_to_reference(ctx, batch["retain"])) < 0.7 * drifted


def test_retain_cursor_covers_the_whole_retain_set(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    retain = [Pair(f"Question number {i}?", f"Answer {i}.") for i in range(7)]
    b = UnlearnBatches(tok, FORGET, retain=retain, batch_size=2, retain_batch_size=3, max_length=32)
    # one forget batch per epoch, 3 retain rows each: after 7 epochs every retain row was drawn 3 times
    seen = [b._retain_rows(n) for n in range(7)]
    assert all(len(r) == 3 for r in seen)
    flat = [i for r in seen for i in r]
    assert sorted(flat) == sorted(list(range(7)) * 3)
    assert next(b.epoch(0))["retain"]["input_ids"].shape[0] == 3


def test_weighted_retain_draws_are_distinct_seeded_and_follow_the_weights(tiny_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dir)
    retain = [Pair(f"Question number {i}?", f"Answer {i}.") for i in range(6)]
    weights = [8.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    b = UnlearnBatches(tok, FORGET, retain=retain, batch_size=2, retain_batch_size=3, max_length=32,
                       retain_weights=weights)
    draws = [b._retain_rows(n) for n in range(200)]
    assert all(len(set(d)) == 3 for d in draws)  # without replacement inside a batch
    assert draws == [b._retain_rows(n) for n in range(200)]  # seeded: a resumed run draws the same
    counts = [sum(i in d for d in draws) for i in range(6)]
    assert counts[0] > 1.5 * max(counts[1:]) and min(counts[1:]) > 0
    with pytest.raises(LetheError, match="one positive weight per retain row"):
        UnlearnBatches(tok, FORGET, retain=retain, retain_weights=[1.0] * 5)


def test_boundary_weights_favour_retain_rows_near_the_forget_prompts():
    from lethe.training.data import boundary_weights

    forget = ["Who wrote the novel 'Pride and Prejudice'?", "Who wrote the play 'Hamlet'?"]
    retain = ["Summarize the plot of 'Hamlet' in two sentences.", "How many legs does a spider have?",
              "Which gas do plants absorb from the air?"]
    w = boundary_weights(forget, retain)
    assert len(w) == 3 and sum(w) == pytest.approx(3.0)
    assert w[0] > 1.5 * max(w[1:]) and min(w) >= 0.5 * (1 - 0.5)  # the uniform share keeps every row
    assert boundary_weights(forget, retain, share=0.0) == pytest.approx([1.0, 1.0, 1.0])


def test_npo_and_dpo_equal_2_over_beta_log2_at_reference_and_npo_bounded(tiny_dir):
    model, _tok, batch = _setup(tiny_dir)
    beta = 0.5
    ctx = LossContext(model=model, beta=beta)
    with torch.no_grad():
        npo0, _ = LOSSES.create("npo")(ctx, batch)
        dpo0, _ = LOSSES.create("dpo")(LossContext(model=model, beta=beta, lam=0.0), batch)
    assert math.isclose(float(npo0), 2 / beta * math.log(2), rel_tol=1e-4)
    assert math.isclose(float(dpo0), 2 / beta * math.log(2), rel_tol=1e-4)
    vals = _step(model, ctx, LOSSES.create("npo"), batch, lr=1e-1, n=15)
    assert all(v >= 0 for v in vals)
    assert vals[-1] < vals[0]
    # GA on the same data is unbounded below; NPO stays >= 0 however far the model moves
    model2, _tok, batch2 = _setup(tiny_dir)
    ga_vals = _step(model2, LossContext(model=model2), LOSSES.create("ga"), batch2, lr=1e-1, n=15)
    assert ga_vals[-1] < ga_vals[0] and ga_vals[-1] < 0


def test_kl_is_zero_at_reference_and_positive_after_training(tiny_dir):
    model, _tok, batch = _setup(tiny_dir)
    ctx = LossContext(model=model)
    with torch.no_grad():
        assert float(kl_to_reference(ctx, batch["retain"])) == pytest.approx(0.0, abs=1e-6)
    _step(model, ctx, LOSSES.create("ga"), batch, n=2)
    with torch.no_grad():
        assert float(kl_to_reference(ctx, batch["retain"])) > 1e-6


def test_chunked_token_kl_matches_autograd_in_value_and_gradient():
    """The memory-lean KL (closed-form backward, row chunks) equals autograd on the plain formula."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 50, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(7, 50, generator=g, dtype=torch.float64)
    w = torch.rand(7, generator=g, dtype=torch.float64)  # an uneven upstream gradient
    lp, lq = torch.log_softmax(ref, -1), torch.log_softmax(z, -1)
    plain = (lp.exp() * (lp - lq)).sum(-1)
    (gz_plain,) = torch.autograd.grad((plain * w).sum(), z)
    lean = token_kl(z, ref, chunk=3)  # 7 rows in chunks of 3: a ragged last chunk
    (gz_lean,) = torch.autograd.grad((lean * w).sum(), z)
    assert torch.allclose(lean.double(), plain, atol=1e-6)
    assert torch.allclose(gz_lean, gz_plain, atol=1e-10)
    assert float(token_kl(ref, ref).abs().max()) < 1e-6  # zero at the reference
    assert torch.autograd.gradcheck(lambda x: token_kl(x, ref, 2), (z,))


def test_length_groups_cut_padding_and_cover_every_row_once():
    lengths = [30, 190, 28, 35, 185, 31, 192, 29]
    groups = length_groups(lengths, max_groups=2)
    assert sorted(r for g in groups for r in g) == list(range(len(lengths)))
    assert [sorted(g) for g in groups] == [[0, 2, 3, 5, 7], [1, 4, 6]]  # the facts, the long answers
    padded = sum(len(g) * max(lengths[r] for r in g) for g in groups)
    assert padded < 0.6 * len(lengths) * max(lengths)
    assert length_groups([40, 40, 40]) == [[0, 1, 2]]  # nothing to gain: one group
    assert length_groups([]) == []


def test_retain_anchors_by_length_groups_equal_one_padded_call(tiny_dir):
    """Grouping rows by length changes what is computed, not the loss or its gradient."""
    model, _tok, batch = _setup(tiny_dir)
    _step(model, LossContext(model=model), LOSSES.create("ga"), batch, n=2)  # drift from the reference
    enc = batch["retain"]
    assert len(length_groups(enc["attention_mask"].sum(-1).tolist())) > 1  # the test batch is mixed
    params = [p for p in model.parameters() if p.requires_grad]
    ctx = LossContext(model=model, retain_reduce="row", head_tokens=2, head_weight=0.5)

    def padded_kl():  # the plain formula on the whole padded batch
        logits, labels = answer_logits(model, enc)
        m = labels[:, 1:] != IGNORE
        with torch.no_grad():
            lp = torch.log_softmax(ctx.ref_answer_logits(enc)[0][:, :-1][m], -1)
        kl = (lp.exp() * (lp - torch.log_softmax(logits[:, :-1][m], -1))).sum(-1)
        return row_mean(torch.zeros(m.shape).masked_scatter(m, kl), m, 2, 0.5)

    def padded_nll():
        lp, m = token_logprobs(*answer_logits(model, enc))
        return row_mean(-lp, m, 2, 0.5)

    for grouped, plain in ((lambda: kl_to_reference(ctx, enc), padded_kl), (lambda: decision_nll(ctx, enc), padded_nll)):
        a, b = grouped(), plain()
        ga, gb = torch.autograd.grad(a, params), torch.autograd.grad(b, params)
        assert float(a.detach()) == pytest.approx(float(b.detach()), rel=1e-4) and float(a.detach()) > 0
        assert all(torch.allclose(x, y, rtol=1e-3, atol=1e-6) for x, y in zip(ga, gb, strict=True))


def test_kl_row_reduce_weighs_every_retain_row_the_same(tiny_dir):
    model, _tok, batch = _setup(tiny_dir)
    _step(model, LossContext(model=model), LOSSES.create("ga"), batch, n=2)  # drift away
    enc = batch["retain"]
    lengths = (enc["labels"][:, 1:] != IGNORE).sum(-1).tolist()
    assert len(set(lengths)) > 1  # answers of different lengths: the two means differ
    tok_ctx, row_ctx = LossContext(model=model), LossContext(model=model, retain_reduce="row")
    with torch.no_grad():
        per_row = [float(kl_to_reference(tok_ctx, {k: v[i : i + 1] for k, v in enc.items()}))
                   for i in range(len(lengths))]
        row, token = float(kl_to_reference(row_ctx, enc)), float(kl_to_reference(tok_ctx, enc))
    assert row == pytest.approx(sum(per_row) / len(per_row), rel=1e-4)
    assert token == pytest.approx(sum(k * n for k, n in zip(per_row, lengths, strict=True)) / sum(lengths), rel=1e-4)
    assert row != pytest.approx(token, rel=1e-3)


def test_head_weight_adds_the_mean_of_each_answers_first_tokens(tiny_dir):
    model, _tok, batch = _setup(tiny_dir)
    enc = batch["target"]
    with torch.no_grad():
        lp, mask = token_logprobs(*answer_logits(model, enc))
        first = [-float(lp[i][mask[i]][:2].mean()) for i in range(lp.shape[0])]
        plain = float(decision_nll(LossContext(model=model), enc))
        headed = float(decision_nll(LossContext(model=model, head_tokens=2, head_weight=3.0), enc))
    assert plain == pytest.approx(_nll(model, enc), rel=1e-5)  # off: the ordinary per-row CE
    assert headed == pytest.approx(plain + 3.0 * sum(first) / len(first), rel=1e-5)
    # on the retain anchor the head term is a KL too: zero at the reference, positive after drift
    ctx = LossContext(model=model, retain_reduce="row", head_tokens=2, head_weight=3.0)
    with torch.no_grad():
        assert float(kl_to_reference(ctx, batch["retain"])) == pytest.approx(0.0, abs=1e-6)
    _step(model, LossContext(model=model), LOSSES.create("ga"), batch, n=2)
    with torch.no_grad():
        row = float(kl_to_reference(LossContext(model=model, retain_reduce="row"), batch["retain"]))
        assert float(kl_to_reference(ctx, batch["retain"])) > row > 0


def test_head_weight_moves_the_first_target_tokens_faster(tiny_dir):
    """Same steps, same lr: the weighted run lowers the NLL of the decision tokens more."""
    def first_nll(head_weight):
        model, _tok, batch = _setup(tiny_dir)
        ctx = LossContext(model=model, head_tokens=2, head_weight=head_weight, lam=0.0)
        _step(model, ctx, LOSSES.create("tru"), batch, lr=1e-2, n=3)
        with torch.no_grad():
            lp, mask = token_logprobs(*answer_logits(model, batch["target"]))
            return -float(torch.stack([lp[i][mask[i]][:2].mean() for i in range(lp.shape[0])]).mean())
    assert first_nll(5.0) < first_nll(0.0)


@pytest.mark.parametrize("method", ["tru", "npo", "dpo", "kl", "rmu"])
def test_only_lora_params_change_and_reference_stays_frozen(tiny_dir, method):
    layers = [0, 1] if method == "rmu" else None
    model, _tok, batch = _setup(tiny_dir, layers=layers)
    ctx = LossContext(model=model, rmu_layer=1, alpha=1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    enc = batch["retain"]
    with torch.no_grad():
        ref_before = ctx.ref_forward(enc).logits.clone()
    _step(model, ctx, LOSSES.create(method), batch, n=2)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing was trained"
    assert all("lora_" in n for n in changed), f"non-LoRA params changed: {sorted(changed)[:3]}"
    assert any("lora_B" in n for n in changed)
    with torch.no_grad():
        ref_after = ctx.ref_forward(enc).logits
        live = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    assert torch.equal(ref_before, ref_after), "reference model moved"
    assert not torch.allclose(live, ref_after), "adapter had no effect"
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)


def test_rmu_pulls_forget_activations_toward_control_vector(tiny_dir):
    model, _tok, batch = _setup(tiny_dir, layers=[0, 1])
    ctx = LossContext(model=model, rmu_layer=1, rmu_c=2.0, alpha=1.0)
    loss = LOSSES.create("rmu")
    first = loss(ctx, batch)[1]["forget_mse"]
    _step(model, ctx, loss, batch, n=5)
    assert loss(ctx, batch)[1]["forget_mse"] < first


def test_reference_is_needed_by_reference_methods_kl_anchor_and_tru_npo_only():
    tru, gd, npo, ga = (LOSSES.create(m) for m in ("tru", "gd", "npo", "ga"))
    assert not tru.uses_reference(retain_loss="nll", has_retain=True)
    assert tru.uses_reference(retain_loss="kl", has_retain=True)
    assert not tru.uses_reference(retain_loss="kl", has_retain=False)
    assert tru.uses_reference(retain_loss="nll", has_retain=False, ga_term="npo")
    assert gd.uses_reference(retain_loss="kl", has_retain=True) and not gd.uses_reference(retain_loss="nll", has_retain=True)
    assert npo.uses_reference(retain_loss="nll", has_retain=False)
    assert not ga.uses_reference(retain_loss="kl", has_retain=True)  # GA has no retain term
