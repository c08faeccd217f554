"""The DRAGON guard: detect, guide, intervene — in front of any chat backend.

Wang et al., "DRAGON: Guard LLM Unlearning in Context via Negative Detection and
Reasoning", ICLR 2026 (arXiv 2511.05784). The base model is never modified; queries
below the threshold reach it byte-for-byte unchanged.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from lethe.backends import load_backend
from lethe.backends.base import ChatBackend, Message
from lethe.backends.embeddings import Embedder, get_embedder
from lethe.config import GuardConfig, lethe_home, load_config
from lethe.errors import EmptyStoreError, LetheError
from lethe.guard import pipeline
from lethe.guard.augment import augment
from lethe.guard.detector import Detection, Detector
from lethe.guard.entities import entity_record
from lethe.guard.expand import Expansion, expand_scope
from lethe.guard.expand import check_request as check_expand
from lethe.guard.guider import Guider, guider_from_config
from lethe.guard.output_check import OutputCheck
from lethe.guard.pipeline import GuardPlan, as_messages
from lethe.guard.pipeline import in_scope_text as _in_scope_text  # noqa: F401 - imported from here too
from lethe.guard.policies import PolicyLibrary
from lethe.guard.rewrite import REWRITERS, rewrite_prompts, within_bound
from lethe.guard.scope import scope_records, swap_entities
from lethe.guard.subject import guess_subject
from lethe.guard.translate import Translator
from lethe.packs import get_pack, load_pack
from lethe.store import KINDS, ForgetRequest, NegativeSample, UnlearnStore, open_store
from lethe.store.base import CONCEPT_KINDS
from lethe.text import normalize

CONFIG_FILE = "guard.yaml"
# Names used to build name-swapped hard negatives (other people, same question shape).
_SWAP_NAMES = [
    "Maria Gonzalez", "Kenji Watanabe", "Amara Okafor", "Lars Eriksson", "Priya Raman", "Tomasz Nowak",
    "Fatima Haddad", "Liam O'Connor", "Chen Wei", "Sofia Rossi", "Dmitri Volkov", "Aisha Bello",
    "Jonas Weber", "Isabel Duarte", "Mehmet Yilmaz", "Grace Mensah", "Hiroshi Tanaka", "Elena Petrova",
]


@dataclass
class GuardResponse:
    response: str
    triggered: bool
    score: float
    policy: str | None
    reasoning: str | None
    detection: Detection
    timings: dict[str, float] = field(default_factory=dict)
    output_blocked: bool = False  # the output check replaced the model's answer with the decline
    plan: GuardPlan | None = field(default=None, repr=False, compare=False)  # the plan behind the answer

    def to_dict(self) -> dict:
        return {"response": self.response, "triggered": self.triggered, "score": round(self.score, 6),
                "policy": self.policy, "reasoning": self.reasoning, "output_blocked": self.output_blocked,
                "components": {k: round(v, 6) for k, v in self.detection.components.items()},
                "timings": {k: round(v, 4) for k, v in self.timings.items()}}


class Guard:
    def __init__(
        self,
        store: UnlearnStore,
        config: GuardConfig | None = None,
        backend: ChatBackend | None = None,
        embedder: Embedder | None = None,
        home: Path | None = None,
    ) -> None:
        self.config = config or GuardConfig()
        self.store = store
        self.home = home
        self.embedder = embedder or get_embedder(self.config.embedder, self.config.embedder_quantize)
        self._backend = backend
        self.detector = Detector(store, self.embedder, self.config.detector, extra_benign=self._read_benign())
        if self.config.detector.translate:  # a translation view of non-English texts (lethe.guard.translate)
            self.detector.translator = Translator(lambda: self.backend)
        self.policies = PolicyLibrary(home / "policies" if home else None, self.embedder)
        self._guider: Guider | None = None
        self.output_check = OutputCheck(self.detector, self.policies, self.config.output_check)
        self.last_expansion: Expansion | None = None  # what the last forget(expand=N) wrote and kept

    @classmethod
    def open(
        cls,
        home: str | Path | None = None,
        config: GuardConfig | None = None,
        backend: ChatBackend | None = None,
        store: UnlearnStore | None = None,
    ) -> Guard:
        """Open (or create) the guard living in a Lethe home folder, on the store its configuration names."""
        path = lethe_home(home)
        cfg = config or load_config(path)
        embedder = get_embedder(cfg.embedder, cfg.embedder_quantize)
        st = store if store is not None else open_store(cfg, path, dim=embedder.dim)
        return cls(st, cfg, backend, embedder, path)

    # -- in-domain benign queries (scorer negatives) -------------------------------------
    BENIGN_FILE = "benign.jsonl"

    def _read_benign(self) -> list[str]:
        import json

        path = self.home / self.BENIGN_FILE if self.home else None
        if path is None or not path.exists():
            return []
        return [json.loads(line)["prompt"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def add_benign(self, prompts: Sequence[str]) -> int:
        """Register in-domain benign queries as extra scorer negatives (kept in ``<home>/benign.jsonl``)."""
        import json

        prompts = [p for p in prompts if isinstance(p, str) and p.strip()]
        if not prompts:
            raise LetheError("no benign prompts given")
        if self.home is not None:
            with open(self.home / self.BENIGN_FILE, "a", encoding="utf-8") as f:
                for p in prompts:
                    f.write(json.dumps({"prompt": p}, ensure_ascii=False) + "\n")
        self.detector.add_benign(list(prompts))
        return len(prompts)

    # -- lazily built parts -------------------------------------------------------------
    @property
    def backend(self) -> ChatBackend:
        if self._backend is None:
            self._backend = load_backend(self.config.backend)
        return self._backend

    @property
    def guider(self) -> Guider:
        if self._guider is None:
            self._guider = guider_from_config(self.config.guider, lambda: self.backend, self.home)
        return self._guider

    def save_config(self) -> None:
        if self.home is not None:
            self.config.save(self.config.source or self.home / CONFIG_FILE)  # the file it was loaded from

    # -- forget requests ----------------------------------------------------------------
    def forget(
        self,
        prompts: list[str],
        kind: str | None = None,
        subject: str | None = None,
        entities: list[str] | None = None,
        policy: str | None = None,
        progress: bool = True,
        rewriter: str = "llm",
        seed: int = 0,
        answers: list[str | None] | None = None,
        describe: str | None = None,
        expand: int = 0,
        pack: str | None = None,
    ) -> ForgetRequest:
        """Register a forget request. The prompts are used in memory only and never stored.

        Names (``entities``, ``subject``, or the one guessed from the prompts) are stored only
        as keyed hashes. ``subject`` is also kept as the request's label, in clear, because
        the operator gave it; a guessed name never is.

        Privacy requests also keep the *scope* the prompts imply (``lethe.guard.scope``): the salient
        entities they name — quoted titles, prizes, places, dates — as keyed hashes of their tokens.
        ``answers`` (aligned with ``prompts``, optional) adds the salient entities of the answers the
        same way; the answer text itself is never stored or embedded.

        ``expand`` (concept kinds, with ``describe``): the chat model writes that many more in-scope
        questions, stored as rewrites (:mod:`lethe.guard.expand`); ``last_expansion`` reports them.

        ``pack`` adds a shipped scope pack's questions (:mod:`lethe.packs`). They are public text
        (they ship with the package), so they are stored as they are, as the request's rewrites, with
        their augmentations, the way expanded questions are; only ``prompts`` go through the rewriter.
        The kind defaults to the pack's, the subject to its name, ``describe`` (with ``expand``) to its
        description. Without a pack the kind defaults to ``privacy``.
        """
        shipped: list[str] = []
        if pack is not None:
            p = get_pack(pack)
            if kind not in (None, p.kind):
                raise LetheError(f"scope pack '{pack}' is a {p.kind} request, not {kind}")
            kind, subject = p.kind, subject or p.name
            shipped = [t for t in (normalize(q) for q in load_pack(pack)) if t]
            describe = describe or (p.describe if expand else None)
        kind = kind or "privacy"
        if kind not in KINDS:
            raise LetheError(f"unknown kind '{kind}' (use one of: {', '.join(KINDS)})")
        if answers is not None and len(answers) != len(prompts):
            raise LetheError(f"got {len(answers)} answers for {len(prompts)} prompts")
        check_expand(kind, describe, expand)
        pairs = [(normalize(p), normalize(a or "")) for p, a in zip(prompts, answers or [None] * len(prompts),
                                                                     strict=True)]
        answers = [a for p, a in pairs if p and a]
        prompts = [p for p, _ in pairs if p]
        if not prompts and not shipped:
            raise LetheError("a forget request needs at least one non-empty prompt")
        if policy:
            self.policies.get(policy)
        names = list(dict.fromkeys((entities or []) + ([subject] if subject and not pack else [])))
        if not names and kind == "privacy":
            guessed = guess_subject(prompts)
            names = [guessed] if guessed else []
        key = self.store.secret()
        records = [entity_record(n, key) for n in names]
        if kind == "privacy":
            records += scope_records(prompts + answers, names, key)
        extra = (expand_scope(self, prompts + shipped, describe or "", expand, progress=progress, seed=seed)
                 if expand else None)
        rewrites, aug, hard = (self._sample_texts(prompts, names, rewriter, seed, progress, kind) if prompts
                               else ([], [], []))
        shipped_aug = [a for q in shipped for a in augment(q, seed=seed)]
        vecs = self.embedder.encode(rewrites + aug + hard + shipped + shipped_aug)
        keep_text = not self.config.embedding_only
        # a rewrite outside the copy bound (lethe.guard.rewrite) is stored as its embedding only
        samples = [NegativeSample("", vecs[i], "rewrite",
                                  rewrites[i] if keep_text and within_bound(rewrites[i], prompts[i], names) else None)
                   for i in range(len(rewrites))]
        samples += [NegativeSample("", vecs[len(rewrites) + j], "augment") for j in range(len(aug))]
        off = len(rewrites) + len(aug)
        samples += [NegativeSample("", vecs[off + j], "hard_negative") for j in range(len(hard))]
        off += len(hard)
        samples += [NegativeSample("", vecs[off + j], "rewrite", q if keep_text else None)
                    for j, q in enumerate(shipped)]
        off += len(shipped)
        samples += [NegativeSample("", vecs[off + j], "augment") for j in range(len(shipped_aug))]
        self.last_expansion = extra
        samples += extra.samples if extra else []
        req = ForgetRequest(kind=kind, subject=subject, policy=policy,
                            entities=records, n_prompts=len(prompts) + len(shipped))
        self.detector.stage(req.id, samples)
        self.store.add_request(req, samples)
        self.detector.refresh()
        if kind in CONCEPT_KINDS:
            self.detector.wait_refit()  # the add returns with its scorer in place
        return req

    def _sample_texts(self, prompts: list[str], names: list[str], rewriter: str, seed: int,
                      progress: bool = False, kind: str = "privacy") -> tuple[list[str], list[str], list[str]]:
        """(rewrites, augmentations, hard negatives) of normalised forget prompts.

        Hard negatives are the same questions about someone else: for privacy requests two name swaps and
        one entity swap (other title, place, prize or year) per rewrite, so
        the per-request similarity test can tell the subject of a question from its shape; concept
        requests keep two name swaps per text (scorer negatives)."""
        rw = REWRITERS.create(rewriter, backend=self.backend) if rewriter == "llm" else REWRITERS.create(rewriter)
        with tqdm(total=len(prompts), desc="rewriting forget prompts", disable=not progress, unit="prompt") as bar:
            rewrites = rewrite_prompts(prompts, rw, self.embedder, self.config.rewrites_per_prompt,
                                       progress=bar.update)
        # augmentations and name-swapped hard negatives are derived from the rewrites only
        aug = [a for r in rewrites for a in augment(r, seed=seed)]
        rng = random.Random(seed)
        if kind != "privacy":
            return rewrites, aug, _name_swaps(rewrites + aug, names, rng, per_text=2)
        hard = _name_swaps(rewrites, names, rng, per_text=2)
        hard += [t for t in (swap_entities(r, rng) for r in rewrites) if t]
        return rewrites, aug, list(dict.fromkeys(hard))

    def sample_texts(self, prompts: list[str], names: list[str], rewriter: str = "rule", seed: int = 0,
                     kind: str = "privacy") -> list[str]:
        """Every text ``forget`` would embed for these prompts (callers batch-embed many requests at once)."""
        prompts = [p for p in (normalize(p) for p in prompts) if p]
        return [t for part in self._sample_texts(prompts, names, rewriter, seed, kind=kind) for t in part]

    def revoke(self, request_id: str) -> bool:
        ok = self.store.revoke(request_id)
        if ok:
            self.detector.refresh()
        return ok

    def requests(self, include_revoked: bool = False) -> list[ForgetRequest]:
        return self.store.list_requests(include_revoked)

    # -- detection ----------------------------------------------------------------------
    def detect(self, query: str | Sequence[Message]) -> Detection:
        return self.detector.detect_messages(as_messages(query))

    def detect_many(self, queries: list[str], batch_size: int = 128) -> list[Detection]:
        """Batched ``detect`` of single-turn user queries: each read as ``detect`` reads a user turn
        (whole, in windows when long, and through its decoded views); the highest score wins."""
        out: list[Detection] = []
        for i in range(0, len(queries), batch_size):
            chunk = queries[i:i + batch_size]
            texts, owner, how = [], [], []
            for j, q in enumerate(chunk):
                for read, t in self.detector.expand(q):
                    texts.append(t)
                    owner.append(j)
                    how.append(read)
            best: dict[int, Detection] = {}
            for j, read, t, d in zip(owner, how, texts, self.detector.score_texts(texts), strict=True):
                d = self.detector.as_read(d, read)
                if j not in best or d.score > best[j].score:
                    d.source = {"role": "user", "message": 0, "field": "content", "read": read, "text": t}
                    best[j] = d
            out.extend(best[j] if j in best else Detection(0.0, False) for j in range(len(chunk)))
        return out

    def require_nonempty(self) -> None:
        if self.detector.empty:
            raise EmptyStoreError("the unlearn store is empty: add a request with 'lethe forget add' first")

    def calibrate(self, benign: list[str] | None = None, target_fpr: float = 0.01, *, force: bool = False,
                  save: bool = True, details: bool = False):
        """Choose tau so that at most ``target_fpr`` of benign queries trigger, and save it.

        ``benign``: in-domain queries that must pass (default: the shipped general hold-out,
        which is out of domain for most stores and so refused). Raises ``CalibrationError``,
        tau unchanged, when the set is smaller than ``3 / target_fpr`` or too few of its queries
        resemble the store's requests (``force=True`` only warns); tau never goes below the
        floor 0.5 (``lethe.guard.calibration``). Returns tau, or with ``details=True`` the
        ``Calibration`` (FPR at the chosen tau, TPR on held-out variants of the store's rewrites,
        warnings).
        """
        from lethe.guard.calibration import choose_tau

        self.require_nonempty()
        queries = list(benign) if benign is not None else list(self.detector.benign_holdout)
        cal = choose_tau(self, queries, target_fpr, force=force, shipped=benign is None)
        if save:
            self.config.detector.tau = cal.tau
            self.detector.config.tau = cal.tau
            self.save_config()
            cal.saved = True
        return cal if details else cal.tau

    # -- one chat request: plan -> call -> finish (lethe.guard.pipeline) ------------------
    def plan(self, messages: str | Sequence[Message], use_guard: bool = True,
             read: Sequence[Message] | None = None) -> GuardPlan:
        """Detect, and for an in-scope request guide and build the intervened messages.

        ``read`` is what detection reads when it differs from what goes upstream (a proxy that
        forwards role and text only passes the client's messages with their names and tool calls);
        by default detection reads ``messages``. The policy and guider reason about the text that
        decided the detection, whatever its role (``pipeline.in_scope_text``)."""
        return pipeline.make_plan(self, messages, use_guard, read)

    async def aplan(self, messages: Sequence[Message], *, read: Sequence[Message] | None = None,
                    fail_mode: str | None = None, decline: str | None = None,
                    run: pipeline.Runner | None = None) -> GuardPlan:
        """:meth:`plan` off the event loop; with ``fail_mode`` (``closed``/``open``) a failure of the
        guard becomes a plan that declines with ``decline`` or forwards the messages unguarded."""
        return await pipeline.aplan(self, messages, read=read, fail_mode=fail_mode, decline=decline, run=run)

    def call(self, plan: GuardPlan, max_tokens: int | None = None, temperature: float = 0.0,
             stop: list[str] | None = None) -> pipeline.Reply:
        """The plan's upstream call, its prefilled continuation finished (no output check)."""
        return pipeline.call(self.backend, plan, max_tokens=max_tokens or self.config.max_new_tokens,
                             temperature=temperature, stop=stop)

    async def acall(self, plan: GuardPlan, max_tokens: int | None = None, temperature: float = 0.0,
                    stop: list[str] | None = None, run: pipeline.Runner | None = None) -> pipeline.Reply:
        return await pipeline.acall(self.backend, plan, max_tokens=max_tokens or self.config.max_new_tokens,
                                    temperature=temperature, stop=stop, run=run)

    def call_stream(self, plan: GuardPlan, max_tokens: int | None = None, temperature: float = 0.0,
                    stop: list[str] | None = None) -> Iterator[str]:
        return pipeline.stream(self.backend, plan, max_tokens=max_tokens or self.config.max_new_tokens,
                               temperature=temperature, stop=stop)

    def acall_stream(self, plan: GuardPlan, max_tokens: int | None = None, temperature: float = 0.0,
                     stop: list[str] | None = None, run: pipeline.Runner | None = None) -> AsyncIterator[str]:
        return pipeline.astream(self.backend, plan, max_tokens=max_tokens or self.config.max_new_tokens,
                                temperature=temperature, stop=stop, run=run)

    def chat(
        self,
        messages: str | Sequence[Message],
        max_tokens: int | None = None,
        temperature: float = 0.0,
        use_guard: bool = True,
    ) -> GuardResponse:
        plan = self.plan(messages, use_guard=use_guard)
        text = self.call(plan, max_tokens, temperature).text
        blocked = False
        if use_guard and self.output_check.enabled:  # the hard backstop (lethe.guard.output_check)
            verdict = self.output_check.check(text)
            plan.timings["output_check_s"] = verdict.seconds
            if verdict.blocked:
                text, blocked = self.output_check.decline(verdict), True
        return GuardResponse(text, plan.detection.triggered, plan.detection.score, plan.policy,
                             plan.reasoning, plan.detection, plan.timings, blocked, plan)

    def stream(
        self, messages: str | Sequence[Message], max_tokens: int | None = None, temperature: float = 0.0,
        use_guard: bool = True,
    ) -> tuple[GuardPlan, Iterator[str]]:
        plan = self.plan(messages, use_guard=use_guard)
        it = self.call_stream(plan, max_tokens, temperature)
        if use_guard and self.output_check.enabled:
            it = pipeline.checked_stream(self.output_check, plan, it)
        return plan, it


def _name_swaps(texts: list[str], names: list[str], rng: random.Random, per_text: int) -> list[str]:
    """Hard negatives: the same questions about other people (forgotten name swapped out)."""
    out: list[str] = []
    for text in texts:
        low = text.lower()
        for name in names:
            parts = name.split()
            for tok in [name, parts[-1], parts[0]]:
                if len(tok) > 2 and tok.lower() in low:
                    for _ in range(per_text):
                        swap = rng.choice(_SWAP_NAMES)
                        repl = swap if tok == name else swap.split()[-1 if tok == parts[-1] else 0]
                        out.append(_replace_ci(text, tok, repl))
                    break
    return list(dict.fromkeys(out))


def _replace_ci(text: str, old: str, new: str) -> str:
    import re

    return re.sub(re.escape(old), new, text, flags=re.IGNORECASE)
