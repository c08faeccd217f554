"""The loss interface and the shared machinery: context, answer log-probabilities, row means,
length grouping, the retain anchors (CE or a chunked KL to the reference) and the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from lethe.registry import Registry
from lethe.training.data import IGNORE, length_groups
from lethe.training.losses.prefix import _unwrap, cache_of
from lethe.training.losses.settings import LossSettings


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
                return forward(self.ref_model, enc, **kw)
            base = _unwrap(self.model)
            if not hasattr(base, "disable_adapter"):
                raise RuntimeError("reference-model losses need LoRA (adapters) or an explicit ref_model")
            with base.disable_adapter():
                return forward(base, enc, **kw)

    def ref_answer_logits(self, enc: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`answer_logits` of the frozen reference."""
        return _answer_logits(self.ref_forward, enc)


def forward(model, enc: dict, **kw):
    """``model`` on ``enc``; from the cached frozen-prefix states when the trainer attached a
    :class:`~lethe.training.losses.prefix.PrefixCache` (not for ``output_hidden_states``, whose lower
    layers the cache skips)."""
    cache = None if kw.get("output_hidden_states") else cache_of(model)
    if cache is not None:
        return cache.forward(model, enc, **kw)
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
    ``needs_reference`` (pi_ref), ``target_kind`` (``"reasoning"``, ``"refusal"`` or ``None``),
    ``settings`` (its hyperparameters and their defaults, :mod:`lethe.training.losses.settings`).

    Hooks the trainer calls: :meth:`configure` (once the model's depth is known), :meth:`lora_layers`
    (where the adapters go, when the method needs particular layers), :meth:`context_extra` (what it
    passes itself through the :class:`LossContext`) and :meth:`describe` (for the run summary)."""

    name = "base"
    needs_retain = False
    uses_retain = False
    needs_reference = False
    target_kind: str | None = None
    settings: ClassVar[type[LossSettings]] = LossSettings
    full_finetune = True
    """Whether the method may train all weights (``--full-finetune``)."""

    def configure(self, settings: Any, n_layers: int) -> None:  # noqa: B027 - optional hook
        """Called with the run's settings and the model's number of decoder layers before training."""

    def lora_layers(self, targets: list[str] | None) -> tuple[list[str] | None, list[int]] | None:
        """``(target modules, layer indices)`` for the adapters, or ``None`` for the trainer's choice."""
        return None

    def context_extra(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {}

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


def _log_normalise(x: torch.Tensor) -> torch.Tensor:
    """log-softmax over the last axis, written out so both sides of :func:`token_kl` round alike
    (the KL of a model to itself is then exactly 0)."""
    return x - torch.logsumexp(x, -1, keepdim=True)


class _TokenKL(torch.autograd.Function):
    """Per-row KL(p || softmax(z)) from logits ``z`` (rows x vocab) and the reference's log-probs,
    worked through ``chunk`` rows at a time.

    Autograd's version of the same formula keeps three tokens x vocabulary tensors for its backward
    (log q, p, log p - log q); this one keeps only the logits and log p and uses the closed-form
    gradient softmax(z) - p, in the manner of fused-loss kernels such as Liger-Kernel's."""

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
