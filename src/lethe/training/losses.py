"""Unlearning objectives as small loss classes in the ``LOSSES`` registry.

Every loss gets a :class:`LossContext` (the model, a frozen reference, knobs) and a batch
``{"forget", "target"?, "retain"?}`` of collated tensors (see :mod:`lethe.training.data`),
and returns ``(loss, parts)`` where ``parts`` are floats for the progress bar and log.

Notation follows ``docs/baselines-and-attacks.md``: NLL over answer tokens, D_f forget,
D_r retain, pi_ref the frozen starting model (the LoRA base with adapters disabled).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from lethe.registry import Registry
from lethe.training.data import IGNORE, length_groups


@dataclass
class LossContext:
    """What a loss may use besides the batch.

    :meth:`ref_forward` runs the frozen reference: the LoRA base with ``peft``'s
    ``disable_adapter``, or ``ref_model`` for full fine-tuning. ``alpha`` weights the unlearning term of TRU (and RMU's retain
    term), ``lam`` the retain term, ``beta`` NPO/DPO/SimNPO's inverse temperature. ``retain_loss`` picks the
    retain anchor of every method that has one: ``nll`` (CE on the retain answers) or ``kl``
    (KL(pi_ref || pi_theta) on the retain answer tokens: keeps the whole next-token distribution of
    the starting model, not only its argmax, at the cost of one reference forward). ``retain_reduce``
    averages that KL over all answer tokens of the batch (``token``: long answers dominate) or per
    row first (``row``: every retain row weighs the same, as the NLL losses do). ``head_tokens`` /
    ``head_weight``: the target CE (TRU's reasoning targets, IDK's refusals) and the retain anchor add
    ``head_weight`` times the mean over each answer's first ``head_tokens`` tokens, where a chat model
    decides whether to answer or decline (:func:`row_mean`).
    """

    model: torch.nn.Module
    ref_model: torch.nn.Module | None = None
    alpha: float = 0.5
    lam: float = 1.0
    beta: float = 0.1
    gamma: float = 0.0
    wga_alpha: float = 1.0
    rmu_layer: int | None = None
    rmu_c: float = 6.5
    ga_term: str = "gd"
    retain_loss: str = "nll"
    retain_reduce: str = "token"
    head_tokens: int = 0
    head_weight: float = 0.0
    extra: dict = field(default_factory=dict)

    def ref_forward(self, enc: dict, **kw):
        with torch.no_grad():
            if self.ref_model is not None:
                return self.ref_model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kw)
            base = _unwrap(self.model)
            if not hasattr(base, "disable_adapter"):
                raise RuntimeError("reference-model losses need LoRA (adapters) or an explicit ref_model")
            with base.disable_adapter():
                return base(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kw)

    def ref_answer_logits(self, enc: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`answer_logits` of the frozen reference."""
        return _answer_logits(self.ref_forward, enc)


def _unwrap(model):
    return getattr(model, "module", model)


def forward(model, enc: dict, **kw):
    return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kw)


def _answer_logits(call, enc: dict) -> tuple[torch.Tensor, torch.Tensor]:
    labels = enc["labels"]
    answer = labels != IGNORE
    rows = answer.any(dim=1)
    start = int(answer.int().argmax(dim=1)[rows].min()) - 1 if bool(rows.any()) else 0
    keep = labels.shape[1] - max(start, 0)
    try:
        logits = call(enc, logits_to_keep=keep).logits
    except TypeError:  # an architecture without logits_to_keep: full logits, then the same slice
        logits = call(enc).logits[:, -keep:]
    return logits, labels[:, -keep:]


def answer_logits(model, enc: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels from the position before the batch's earliest answer token to the end.

    The LM head of a 150k-token vocabulary is about a quarter of a 0.5B model's compute; asking
    the model for these positions only (``logits_to_keep``) skips it on the prompt tokens, which
    carry no loss. Every loss below reads logits through this (or ``ctx.ref_answer_logits``).
    """
    return _answer_logits(lambda e, **kw: forward(model, e, **kw), enc)


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities of the label tokens (shifted) and the mask of answer positions.

    The softmax runs over answer positions only (prompt positions are skipped), which
    saves most of the memory of a 150k-token vocabulary.
    """
    tgt = labels[:, 1:]
    mask = tgt != IGNORE
    sel = logits[:, :-1][mask].float()
    vals = torch.log_softmax(sel, dim=-1).gather(-1, tgt[mask].unsqueeze(-1)).squeeze(-1)
    lp = torch.zeros(tgt.shape, dtype=vals.dtype, device=vals.device).masked_scatter(mask, vals)
    return lp, mask


def seq_logprob(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence sum of answer-token log-probabilities and answer lengths."""
    lp, mask = token_logprobs(logits, labels)
    return lp.sum(-1), mask.sum(-1).clamp(min=1)


def nll(logits, labels) -> torch.Tensor:
    """Mean over sequences of the token-averaged NLL of the answer (ordinary CE)."""
    s, n = seq_logprob(logits, labels)
    return (-s / n).mean()


def model_nll(model, enc: dict) -> torch.Tensor:
    return nll(*answer_logits(model, enc))


def head_mask(mask: torch.Tensor, head_tokens: int) -> torch.Tensor:
    """The first ``head_tokens`` answer positions of each row of ``mask``."""
    return mask & (mask.cumsum(-1) <= head_tokens)


def row_mean(per_tok: torch.Tensor, mask: torch.Tensor, head_tokens: int = 0, head_weight: float = 0.0) -> torch.Tensor:
    """Mean over rows of each row's mean of ``per_tok`` over its answer positions, plus
    ``head_weight`` times its mean over the first ``head_tokens`` answer positions.

    Whether a chat model answers or declines is settled in the first few tokens of its reply
    (Qi et al. 2024, "Safety alignment should be made more than just a few tokens deep", arXiv
    2406.05946); in a plain token mean those few tokens are ~1 % of a 100-token reasoning target.
    The head term weighs that decision on both sides of the boundary: decline on the forget
    prompts (target CE), keep the starting model's opening on the retain prompts (anchor)."""
    rows = mask.any(dim=1)
    if not bool(rows.any()):
        return per_tok.sum() * 0
    m = mask.to(per_tok.dtype)
    out = (per_tok * m).sum(-1)[rows] / m.sum(-1)[rows]
    if head_tokens > 0 and head_weight:
        head = head_mask(mask, head_tokens).to(per_tok.dtype)
        out = out + head_weight * (per_tok * head).sum(-1)[rows] / head.sum(-1)[rows]
    return out.mean()


def by_length(enc: dict, per_token: Callable[[dict], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_token(sub)`` (the flat values over ``sub``'s answer tokens, row-major) run on groups of
    rows of similar length (:func:`~lethe.training.data.length_groups`), each trimmed of its
    padding, then put back as one ``rows x positions`` tensor with its answer mask (the layout of
    :func:`token_logprobs`). Same values as one padded call, fewer tokens through the model."""
    labels = enc["labels"]
    mask = labels[:, 1:] != IGNORE
    lengths = enc["attention_mask"].sum(-1).tolist()
    groups = length_groups(lengths)
    if len(groups) == 1 and max(lengths) == labels.shape[1]:
        flat = per_token(enc)
    else:
        pieces: list[torch.Tensor | None] = [None] * labels.shape[0]
        for rows in groups:
            width = max(lengths[r] for r in rows)
            idx = torch.tensor(rows, device=labels.device)
            sub = {k: v[idx, :width] for k, v in enc.items()}
            vals = per_token(sub)
            counts = (sub["labels"][:, 1:] != IGNORE).sum(-1).tolist()
            for r, piece in zip(rows, vals.split(counts), strict=True):
                pieces[r] = piece
        flat = torch.cat([p for p in pieces if p is not None])
    return torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device).masked_scatter(mask, flat), mask


def decision_nll(ctx: LossContext, enc: dict) -> torch.Tensor:
    """Token-averaged NLL per row (as :func:`model_nll`) with the ``ctx.head_*`` decision term."""
    def flat_nll(sub: dict) -> torch.Tensor:
        lp, m = token_logprobs(*answer_logits(ctx.model, sub))
        return -lp[m]

    per_tok, mask = by_length(enc, flat_nll)
    return row_mean(per_tok, mask, ctx.head_tokens, ctx.head_weight)


class UnlearnLoss:
    """Base class: ``needs_retain`` (error if no retain set), ``uses_retain`` (uses it if given),
    ``needs_reference`` (pi_ref), ``target_kind`` (``"reasoning"``, ``"refusal"`` or ``None``)."""

    name = "base"
    needs_retain = False
    uses_retain = False
    needs_reference = False
    target_kind: str | None = None

    def __call__(self, ctx: LossContext, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def uses_reference(self, *, retain_loss: str, has_retain: bool, ga_term: str = "gd") -> bool:
        """Whether this run calls pi_ref: the method itself, or a KL retain anchor."""
        return self.needs_reference or (self.uses_retain and has_retain and retain_loss == "kl")

    def _retain(self, ctx: LossContext, batch: dict, parts: dict) -> torch.Tensor:
        if "retain" not in batch or ctx.lam == 0:
            return torch.zeros((), device=batch["forget"]["input_ids"].device)
        if ctx.retain_loss == "kl":
            r = kl_to_reference(ctx, batch["retain"])
            parts["retain_kl"] = float(r.detach())
        else:
            r = decision_nll(ctx, batch["retain"])
            parts["retain_nll"] = float(r.detach())
        return ctx.lam * r


LOSSES: Registry[UnlearnLoss] = Registry("loss")


def _causal_lm(model):
    """The transformers ``*ForCausalLM`` inside accelerate/peft wrappers (LoRA layers injected)."""
    m = _unwrap(model)
    return m.get_base_model() if hasattr(m, "get_base_model") else m


@contextmanager
def _only_layers(lm, layers: slice, *, final_norm: bool = True):
    """Run ``lm`` through a slice of its decoder layers (the modules themselves, LoRA included)."""
    inner = lm.model
    orig_layers, orig_norm = inner.layers, inner.norm
    inner.layers = torch.nn.ModuleList(list(orig_layers)[layers])
    if not final_norm:
        inner.norm = torch.nn.Identity()
    try:
        yield
    finally:
        inner.layers, inner.norm = orig_layers, orig_norm


def prefix_states(ctx: LossContext, enc: dict, rows: list[int], start: int) -> torch.Tensor:
    """Hidden states entering decoder layer ``start``, one ``[len, hidden]`` tensor per training row,
    computed once and kept in ``ctx.extra["_prefix_cache"]``; returned padded like ``enc``.

    Valid only when nothing below layer ``start`` trains (LoRA on the top layers, frozen embeddings):
    those layers then map a row to the same states every epoch, so each later step runs the top
    layers only, forward and backward (the trainer turns this on; ``TrainConfig.lora_top_layers``)."""
    cache: dict[int, torch.Tensor] = ctx.extra.setdefault("_prefix_cache", {})
    lengths = enc["attention_mask"].sum(-1).tolist()
    missing = [j for j, r in enumerate(rows) if r not in cache]
    if missing:
        lm = _causal_lm(ctx.model)
        idx = torch.tensor(missing, device=enc["input_ids"].device)
        width = max(lengths[j] for j in missing)
        with torch.no_grad(), _only_layers(lm, slice(0, start), final_norm=False):
            h = lm.model(input_ids=enc["input_ids"][idx, :width],
                         attention_mask=enc["attention_mask"][idx, :width]).last_hidden_state
        for k, j in enumerate(missing):
            cache[rows[j]] = h[k, : lengths[j]].detach().clone()
    first = cache[rows[0]]
    out = torch.zeros((len(rows), enc["input_ids"].shape[1], first.shape[-1]), dtype=first.dtype, device=first.device)
    for j, r in enumerate(rows):
        out[j, : lengths[j]] = cache[r]
    return out


def top_forward(model, enc: dict, start: int, **kw):
    """The model's output from ``enc["prefix_h"]`` (states entering layer ``start``) through the top layers."""
    lm = _causal_lm(model)
    with _only_layers(lm, slice(start, None)):
        return lm(inputs_embeds=enc["prefix_h"], attention_mask=enc["attention_mask"], **kw)


@LOSSES.register("sft")
class SFT(UnlearnLoss):
    """Plain supervised fine-tuning: NLL of the answer tokens, prompt masked (no unlearning term).

    The batch's ``forget`` slot simply holds the (prompt, answer) pairs to learn; ``lethe guider
    train`` uses it to teach the guider its JSON output and ``lethe tofu prepare`` to teach a base
    model the TOFU authors. Rows run in groups of similar length (:func:`by_length`): the same
    loss as one padded batch (mean over rows of each row's token-averaged NLL), fewer tokens."""

    name = "sft"
    supports_prefix_cache = True

    def __call__(self, ctx, batch):
        enc = batch["forget"]
        start = ctx.extra.get("prefix_layer")
        if start:  # frozen bottom layers: their states are cached, only the top layers run
            enc = {**enc, "prefix_h": prefix_states(ctx, enc, list(batch["index"]), start)}

            def call(sub: dict, **kw):
                return top_forward(ctx.model, sub, start, **kw)
        else:
            def call(sub: dict, **kw):
                return forward(ctx.model, sub, **kw)

        def flat_nll(sub: dict) -> torch.Tensor:
            lp, m = token_logprobs(*_answer_logits(call, sub))
            return -lp[m]

        per_tok, mask = by_length(enc, flat_nll)
        t = row_mean(per_tok, mask)
        return t, {"nll": float(t.detach())}


@LOSSES.register("ga")
class GradientAscent(UnlearnLoss):
    """GA: minimise -NLL(y_f | x_f), i.e. raise the forget loss (Jang et al. 2023)."""

    name = "ga"

    def __call__(self, ctx, batch):
        f = model_nll(ctx.model, batch["forget"])
        return -f, {"forget_nll": float(f.detach())}


@LOSSES.register("gd")
class GradDiff(UnlearnLoss):
    """GradDiff: -NLL on D_f + lambda * NLL on D_r (Liu et al. 2022; TOFU baseline)."""

    name = "gd"
    needs_retain = True
    uses_retain = True

    def __call__(self, ctx, batch):
        f = model_nll(ctx.model, batch["forget"])
        parts = {"forget_nll": float(f.detach())}
        return -f + self._retain(ctx, batch, parts), parts


def _log_normalise(x: torch.Tensor) -> torch.Tensor:
    """log-softmax over the last axis, written out so both sides of :func:`token_kl` round alike
    (the KL of a model to itself is then exactly 0)."""
    return x - torch.logsumexp(x, -1, keepdim=True)


class _TokenKL(torch.autograd.Function):
    """Per-row KL(p || softmax(z)) from logits ``z`` (rows x vocab) and the reference's log-probs,
    worked through ``chunk`` rows at a time.

    Autograd's version of the same formula keeps three tokens x vocabulary tensors for its backward
    (log q, p, log p - log q); this one keeps only the logits and log p and uses the closed-form
    gradient softmax(z) - p, in the manner of fused-loss kernels such as Liger-Kernel's. (Measured
    on the default model with 16 retain rows: peak RSS 20.7 -> 20.2 GB; the padding that
    :func:`by_length` removes mattered more.)"""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, ref_logp: torch.Tensor, chunk: int) -> torch.Tensor:
        wide = torch.promote_types(logits.dtype, torch.float32)  # bf16 logits: fp32 softmax
        out = torch.empty(logits.shape[0], dtype=wide, device=logits.device)
        for i in range(0, logits.shape[0], chunk):
            lp = ref_logp[i : i + chunk]
            lq = _log_normalise(logits[i : i + chunk].to(wide))
            out[i : i + chunk] = (lp.exp() * (lp - lq)).sum(-1)
        ctx.save_for_backward(logits, ref_logp)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, ref_logp = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for i in range(0, logits.shape[0], ctx.chunk):
            sl = slice(i, i + ctx.chunk)
            d = torch.softmax(logits[sl].to(ref_logp.dtype), -1) - ref_logp[sl].exp()
            grad[sl] = (d * grad_out[sl, None]).to(grad.dtype)
        return grad, None, None


def token_kl(logits: torch.Tensor, ref_logits: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """KL(softmax(ref_logits) || softmax(logits)) per row; the gradient flows into ``logits`` only."""
    with torch.no_grad():
        ref_logp = _log_normalise(ref_logits.to(torch.promote_types(ref_logits.dtype, torch.float32)))
    return _TokenKL.apply(logits, ref_logp, chunk)


def kl_to_reference(ctx: LossContext, enc: dict) -> torch.Tensor:
    """KL(pi_ref || pi_theta) per answer token, averaged over the batch's answer tokens
    (``ctx.retain_reduce == "token"``) or over each row's tokens and then over rows (``"row"``)."""
    def flat_kl(sub: dict) -> torch.Tensor:
        logits, labels = answer_logits(ctx.model, sub)
        m = labels[:, 1:] != IGNORE
        sel = logits[:, :-1][m]
        del logits  # only the answer positions are kept (padding and prompt rows freed)
        return token_kl(sel, ctx.ref_answer_logits(sub)[0][:, :-1][m])

    if not bool((enc["labels"] != IGNORE).any()):
        return answer_logits(ctx.model, enc)[0].sum() * 0
    per_tok, mask = by_length(enc, flat_kl)
    if ctx.retain_reduce == "token":  # token mean (+ the head term)
        kl = per_tok[mask].mean()
        if ctx.head_tokens and ctx.head_weight:
            kl = kl + ctx.head_weight * row_mean(per_tok, head_mask(mask, ctx.head_tokens))
        return kl
    return row_mean(per_tok, mask, ctx.head_tokens, ctx.head_weight)


@LOSSES.register("kl")
class KLMin(UnlearnLoss):
    """GA on D_f + lambda * KL(pi_ref || pi_theta) on D_r (TOFU's KL baseline)."""

    name = "kl"
    needs_retain = True
    uses_retain = True
    needs_reference = True

    def __call__(self, ctx, batch):
        f = model_nll(ctx.model, batch["forget"])
        kl = kl_to_reference(ctx, batch["retain"])
        return -f + ctx.lam * kl, {"forget_nll": float(f.detach()), "retain_kl": float(kl.detach())}


def npo_term(ctx: LossContext, enc: dict) -> tuple[torch.Tensor, dict]:
    """NPO: -(2/beta) E log sigma(-beta log(pi_theta(y|x) / pi_ref(y|x))) (Zhang et al. 2024)."""
    s, _ = seq_logprob(*answer_logits(ctx.model, enc))
    r, _ = seq_logprob(*ctx.ref_answer_logits(enc))
    ratio = s - r
    loss = -(2.0 / ctx.beta) * F.logsigmoid(-ctx.beta * ratio).mean()
    return loss, {"npo": float(loss.detach()), "log_ratio": float(ratio.mean().detach())}


@LOSSES.register("npo")
class NPO(UnlearnLoss):
    """Negative Preference Optimization on D_f only; bounded below by 0, 2/beta*log 2 at pi_ref."""

    name = "npo"
    needs_reference = True

    def __call__(self, ctx, batch):
        return npo_term(ctx, batch["forget"])


@LOSSES.register("npo_rt")
class NPORetain(UnlearnLoss):
    """NPO + lambda * NLL on D_r."""

    name = "npo_rt"
    needs_retain = True
    uses_retain = True
    needs_reference = True

    def __call__(self, ctx, batch):
        loss, parts = npo_term(ctx, batch["forget"])
        return loss + self._retain(ctx, batch, parts), parts


@LOSSES.register("simnpo")
class SimNPO(UnlearnLoss):
    """SimNPO: -(2/beta) E log sigma(-(beta/|y|) log pi_theta(y|x) - gamma), no reference
    (Fan et al. 2024); + lambda * NLL on D_r when a retain set is given."""

    name = "simnpo"
    uses_retain = True

    def __call__(self, ctx, batch):
        enc = batch["forget"]
        s, n = seq_logprob(*answer_logits(ctx.model, enc))
        loss = -(2.0 / ctx.beta) * F.logsigmoid(-(ctx.beta / n) * s - ctx.gamma).mean()
        parts = {"simnpo": float(loss.detach())}
        return loss + self._retain(ctx, batch, parts), parts


@LOSSES.register("wga")
class WeightedGA(UnlearnLoss):
    """Weighted GA: each forget token's log-prob weighted by p_theta^alpha, no gradient through
    the weight (Wang et al. 2025, "Rethinking LLM unlearning objectives"); + retain NLL if given."""

    name = "wga"
    uses_retain = True

    def __call__(self, ctx, batch):
        enc = batch["forget"]
        lp, mask = token_logprobs(*answer_logits(ctx.model, enc))
        w = (lp.detach() * ctx.wga_alpha).exp() * mask
        loss = ((w * lp).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
        f = float((-(lp.sum(-1)) / mask.sum(-1).clamp(min=1)).mean().detach())
        parts = {"forget_nll": f}
        return loss + self._retain(ctx, batch, parts), parts


@LOSSES.register("idk")
class IDK(UnlearnLoss):
    """PO / IDK: NLL of a refusal answer on forget questions + lambda * NLL on D_r (TOFU)."""

    name = "idk"
    uses_retain = True
    target_kind = "refusal"

    def __call__(self, ctx, batch):
        t = decision_nll(ctx, batch["target"])
        parts = {"target_nll": float(t.detach())}
        return t + self._retain(ctx, batch, parts), parts


@LOSSES.register("dpo")
class DPO(UnlearnLoss):
    """DPO with the refusal preferred and the original answer rejected (Rafailov et al. 2023;
    the TOFU/NPO papers' unlearning variant): -(2/beta) E log sigma(beta*Delta_pref - beta*Delta_rej)."""

    name = "dpo"
    uses_retain = True
    needs_reference = True
    target_kind = "refusal"

    def __call__(self, ctx, batch):
        pref, rej = batch["target"], batch["forget"]
        sp, _ = seq_logprob(*answer_logits(ctx.model, pref))
        sr, _ = seq_logprob(*answer_logits(ctx.model, rej))
        rp, _ = seq_logprob(*ctx.ref_answer_logits(pref))
        rr, _ = seq_logprob(*ctx.ref_answer_logits(rej))
        margin = ctx.beta * ((sp - rp) - (sr - rr))
        loss = -(2.0 / ctx.beta) * F.logsigmoid(margin).mean()
        parts = {"dpo": float(loss.detach()), "margin": float(margin.mean().detach())}
        return loss + self._retain(ctx, batch, parts), parts


@LOSSES.register("tru")
class TRU(UnlearnLoss):
    """Targeted Reasoning Unlearning (Liao et al. 2026, arXiv 2603.09980):
    L_target + alpha * L_GA, with L_target the CE on the reasoning target r ++ s and L_GA
    by default the GradDiff form (NLL-raise on D_f + lambda * NLL on D_r when given);
    ``ga_term`` may be ``gd`` (default), ``ga``, ``npo`` or ``wga``."""

    name = "tru"
    uses_retain = True
    target_kind = "reasoning"

    def uses_reference(self, *, retain_loss: str, has_retain: bool, ga_term: str = "gd") -> bool:
        return ga_term == "npo" or super().uses_reference(retain_loss=retain_loss, has_retain=has_retain)

    def __call__(self, ctx, batch):
        t = decision_nll(ctx, batch["target"])
        parts = {"target_nll": float(t.detach())}
        term = ctx.ga_term
        if term == "npo":
            g, p = npo_term(ctx, batch["forget"])
            parts.update(p)
        elif term == "wga":
            g, p = LOSSES.create("wga")(ctx, {"forget": batch["forget"]})
            parts.update(p)
        else:
            f = model_nll(ctx.model, batch["forget"])
            g = -f
            parts["forget_nll"] = float(f.detach())
        loss = t + ctx.alpha * g
        if term in ("gd", "npo", "wga") and "retain" in batch:
            loss = loss + ctx.alpha * self._retain(ctx, batch, parts)
        return loss, parts


@LOSSES.register("rmu")
class RMU(UnlearnLoss):
    """Representation Misdirection for Unlearning (Li et al. 2024, WMDP): at layer l,
    mean ||h_l(x_f) - c*u||^2 + alpha * mean ||h_l(x_r) - h_l^frozen(x_r)||^2, u a fixed
    random unit vector. Averaged over all non-pad tokens of the sequence."""

    name = "rmu"
    needs_retain = True
    uses_retain = True
    needs_reference = True

    def __init__(self) -> None:
        self._u: torch.Tensor | None = None

    def _hidden(self, model_out, layer: int) -> torch.Tensor:
        return model_out.hidden_states[layer + 1]  # hidden_states[0] are the embeddings

    def _control(self, dim: int, device, seed: int = 0) -> torch.Tensor:
        if self._u is None or self._u.shape[0] != dim:
            g = torch.Generator().manual_seed(seed)
            u = torch.rand(dim, generator=g)
            self._u = u / u.norm()
        return self._u.to(device)

    def __call__(self, ctx, batch):
        layer = ctx.rmu_layer if ctx.rmu_layer is not None else ctx.extra.get("default_layer", 0)
        f, r = batch["forget"], batch["retain"]
        hf = self._hidden(forward(ctx.model, f, output_hidden_states=True), layer).float()
        u = self._control(hf.shape[-1], hf.device)
        mf = f["attention_mask"].unsqueeze(-1).float()
        lf = (((hf - ctx.rmu_c * u) ** 2).mean(-1, keepdim=True) * mf).sum() / mf.sum()
        hr = self._hidden(forward(ctx.model, r, output_hidden_states=True), layer).float()
        href = self._hidden(ctx.ref_forward(r, output_hidden_states=True), layer).float()
        mr = r["attention_mask"].unsqueeze(-1).float()
        lr = (((hr - href) ** 2).mean(-1, keepdim=True) * mr).sum() / mr.sum()
        return lf + ctx.alpha * lr, {"forget_mse": float(lf.detach()), "retain_mse": float(lr.detach())}
