"""One chat request through the guard: plan → call → finish, sync and async, stream and not.

The :class:`GuardPlan` is the guard's whole decision about one request: the detection, the
messages that go upstream (byte for byte the client's when out of scope), the policy and
reasoning of an in-scope request, the assistant prefill where the intervention writes one, and,
when the guard itself failed, the fail mode applied (``closed``: a fixed decline is the answer;
``open``: the request goes upstream unguarded). Every entry point — ``Guard.chat`` /
``Guard.stream``, the proxy (``lethe serve``), ``lethe chat`` and the evaluation method
``dragon`` — goes through the functions here, so the call and the clean-up of a prefilled
continuation (``intervention.finish``) exist once.

The async functions take ``run``, the caller's way to run a blocking function off the event
loop (the proxy's bounded thread pool; ``asyncio.to_thread`` by default). A backend whose
``achat``/``astream`` are native coroutines (``supports_async``) is called on the loop instead,
except for a prefilled plan, which only in-process backends can continue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from lethe.backends.base import ChatBackend, ChatResult, Message
from lethe.guard import intervention
from lethe.guard.detector import TEXT_PART_TYPES, Detection

if TYPE_CHECKING:
    from lethe.guard.guard import Guard
    from lethe.guard.output_check import OutputCheck

log = logging.getLogger("lethe.guard")
T = TypeVar("T")
Runner = Callable[[Callable[[], Any]], Awaitable[Any]]
FAIL_MODES = ("closed", "open")
_END = object()


@dataclass(frozen=True)
class GuardPlan:
    """What goes upstream for one request, and why.

    Frozen: the decision does not change once made. ``timings`` (seconds per step) and the
    output check's verdict on a stream (:attr:`output_blocked`) are recorded as the request runs.
    """

    detection: Detection
    messages: list[Message]
    prefill: str | None = None  # the start of the assistant turn (``assistant_prefill`` placement)
    policy: str | None = None
    reasoning: str | None = None
    placement: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    fail_mode: str | None = None  # set when the guard failed: "closed" or "open"
    response: str | None = None  # a fixed answer that replaces the upstream call (fail closed)
    _outcome: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def failed(self) -> bool:
        """The guard raised: it decided nothing (``fail_mode`` says what was done instead)."""
        return self.fail_mode is not None

    @property
    def triggered(self) -> bool:
        return not self.failed and bool(self.detection.triggered)

    @property
    def score(self) -> float | None:
        """The detector's confidence; None when the guard failed."""
        return None if self.failed else float(self.detection.score)

    @property
    def forget_request(self) -> str | None:
        """The id of the matched forget request (in scope only)."""
        return self.detection.request_id if self.triggered else None

    @property
    def decision(self) -> str:
        """``passed``, ``guarded``, ``fail_open`` or ``fail_closed``."""
        if self.failed:
            return f"fail_{self.fail_mode}"
        return "guarded" if self.triggered else "passed"

    @property
    def prefilled(self) -> bool:
        return bool(self.prefill)

    @property
    def output_blocked(self) -> bool:
        """Set by a checked stream (``Guard.stream``) when the output check cut the answer."""
        return bool(self._outcome.get("output_blocked"))

    def mark_output_blocked(self) -> None:
        self._outcome["output_blocked"] = True


@dataclass(frozen=True)
class Reply:
    """The finished answer of one upstream call (the continuation of a prefill tidied)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


def as_messages(query: str | Sequence[Message]) -> list[Message]:
    if isinstance(query, str):
        return [{"role": "user", "content": query}]
    return [dict(m) for m in query]  # type: ignore[misc]


# -- plan -------------------------------------------------------------------------------------
def make_plan(guard: Guard, messages: str | Sequence[Message], use_guard: bool = True,
              read: Sequence[Message] | None = None) -> GuardPlan:
    """Detect, and for an in-scope request guide and build the intervened messages (``Guard.plan``)."""
    msgs = as_messages(messages)
    t0 = time.perf_counter()
    det = guard.detect(read if read is not None else msgs) if use_guard else Detection(0.0, False)
    timings = {"detect_s": time.perf_counter() - t0}
    if not det.triggered:
        return GuardPlan(det, msgs, timings=timings)
    kind = det.kind or "privacy"
    req = guard.store.get_request(det.request_id) if det.request_id else None
    query = in_scope_text(det, msgs)
    pol = guard.policies.retrieve(kind, query=query, name=req.policy if req else None)
    t1 = time.perf_counter()
    guidance = guard.guider.guide(query, pol, kind)
    timings["guide_s"] = time.perf_counter() - t1
    placement = guard.config.intervention.placement
    if not any(m.get("role") == "user" for m in msgs):
        placement = "system"  # nothing to wrap: the in-scope text came in another role only
    iv = intervention.build(editable(msgs), pol, guidance.reasoning, placement, guard.backend.supports_prefill,
                            query_last=guard.config.intervention.query_last)
    return GuardPlan(det, iv.messages, iv.prefill, pol.name, guidance.reasoning, iv.placement, timings)


def failed_plan(messages: str | Sequence[Message], fail_mode: str, exc: BaseException,
                decline: str | None = None) -> GuardPlan:
    """The plan when the guard raised: ``closed`` answers ``decline``, ``open`` sends the messages unguarded."""
    if fail_mode not in FAIL_MODES:
        raise ValueError(f"unknown fail mode '{fail_mode}' (use one of: {', '.join(FAIL_MODES)})")
    log.error("guard failed (%s): %s; failing %s", type(exc).__name__, exc, fail_mode)
    return GuardPlan(Detection(0.0, False), as_messages(messages), fail_mode=fail_mode,
                     response=(decline or "") if fail_mode == "closed" else None)


async def aplan(guard: Guard, messages: Sequence[Message], *, read: Sequence[Message] | None = None,
                fail_mode: str | None = None, decline: str | None = None, run: Runner | None = None) -> GuardPlan:
    """``guard.plan`` off the event loop; with ``fail_mode`` a failure becomes a :func:`failed_plan`."""
    runner = run or _to_thread
    try:
        return await runner(lambda: guard.plan(messages) if read is None else guard.plan(messages, read=read))
    except Exception as exc:
        if fail_mode is None:
            raise
        return failed_plan(messages, fail_mode, exc, decline)


# -- call and finish --------------------------------------------------------------------------
def finish(plan: GuardPlan, text: str) -> str:
    """The answer as the client gets it: a continuation of a prefilled reasoning tidied into one."""
    return intervention.finish(text) if plan.prefill else text


def finish_stream(plan: GuardPlan, pieces: Iterator[str]) -> Iterator[str]:
    """:func:`finish` for a stream: the first non-blank piece of a prefilled continuation stripped
    and capitalised (blank pieces before it dropped); every piece as it came otherwise."""
    if not plan.prefill:
        yield from pieces
        return
    first = True
    for piece in pieces:
        if first:
            piece = _tidy(piece)
            if not piece:
                continue
            first = False
        yield piece


def _tidy(piece: str) -> str:
    piece = piece.lstrip()
    return piece[:1].upper() + piece[1:]


def native_async(backend: ChatBackend, plan: GuardPlan) -> bool:
    """Call the upstream on the event loop (``achat``/``astream``) rather than in a worker thread:
    two thread hand-offs fewer per request for HTTP upstreams. A prefilled plan takes the blocking
    path, since only in-process backends can prefill."""
    return bool(getattr(backend, "supports_async", False)) and not plan.prefill


def _kwargs(plan: GuardPlan, max_tokens: int, temperature: float, stop: list[str] | None,
            prefill: bool = True) -> dict[str, Any]:
    kw: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    if prefill and plan.prefill:
        kw["prefill"] = plan.prefill
    if stop is not None:
        kw["stop"] = stop
    return kw


def _reply(plan: GuardPlan, res: ChatResult) -> Reply:
    return Reply(finish(plan, res.text), res.prompt_tokens or 0, res.completion_tokens or 0)


def call(backend: ChatBackend, plan: GuardPlan, *, max_tokens: int, temperature: float = 0.0,
         stop: list[str] | None = None) -> Reply:
    """The plan's upstream call, finished; a fail-closed plan answers its decline without a call."""
    if plan.response is not None:
        return Reply(plan.response)
    t = time.perf_counter()
    res = backend.chat(plan.messages, **_kwargs(plan, max_tokens, temperature, stop))
    plan.timings["generate_s"] = time.perf_counter() - t
    return _reply(plan, res)


async def acall(backend: ChatBackend, plan: GuardPlan, *, max_tokens: int, temperature: float = 0.0,
                stop: list[str] | None = None, run: Runner | None = None) -> Reply:
    """:func:`call` for the event loop (see :func:`native_async`)."""
    if plan.response is not None:
        return Reply(plan.response)
    t = time.perf_counter()
    if native_async(backend, plan):
        res = await backend.achat(plan.messages, **_kwargs(plan, max_tokens, temperature, stop, prefill=False))
    else:
        kw = _kwargs(plan, max_tokens, temperature, stop)
        res = await (run or _to_thread)(lambda: backend.chat(plan.messages, **kw))
    plan.timings["generate_s"] = time.perf_counter() - t
    return _reply(plan, res)


def stream(backend: ChatBackend, plan: GuardPlan, *, max_tokens: int, temperature: float = 0.0,
           stop: list[str] | None = None) -> Iterator[str]:
    """The plan's upstream stream, finished (:func:`finish_stream`); a fail-closed plan yields its decline."""
    if plan.response is not None:
        return iter((plan.response,))
    return finish_stream(plan, iter(backend.stream(plan.messages, **_kwargs(plan, max_tokens, temperature, stop))))


async def astream(backend: ChatBackend, plan: GuardPlan, *, max_tokens: int, temperature: float = 0.0,
                  stop: list[str] | None = None, run: Runner | None = None) -> AsyncIterator[str]:
    """:func:`stream` for the event loop. ``aclose()`` closes the upstream stream (an HTTP upstream
    aborts its generation); a blocking stream is opened with its first piece in one thread hop."""
    if plan.response is not None:
        yield plan.response
        return
    tidy = bool(plan.prefill)
    if native_async(backend, plan):
        source = backend.astream(plan.messages, **_kwargs(plan, max_tokens, temperature, stop, prefill=False))
        try:
            async for piece in source:
                if tidy:
                    piece = _tidy(piece)
                    if not piece:
                        continue
                    tidy = False
                yield piece
        finally:
            await source.aclose()  # type: ignore[attr-defined]
        return
    runner = run or _to_thread
    kw = _kwargs(plan, max_tokens, temperature, stop)
    it: Iterator[str] = iter(())

    def open_first() -> Any:
        nonlocal it
        it = iter(backend.stream(plan.messages, **kw))
        return next(it, _END)

    try:
        piece = await runner(open_first)
        while piece is not _END:
            if tidy:
                piece = _tidy(piece)
                tidy = not piece
            if piece:
                yield piece
            piece = await runner(lambda: next(it, _END))
    finally:
        close = getattr(it, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # still running in a worker thread (the client went away)
                pass


async def _to_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


# -- output check on a stream -----------------------------------------------------------------
def checked_stream(check: OutputCheck, plan: GuardPlan, it: Iterator[str]) -> Iterator[str]:
    """``it`` through the output check: held back by at most its hold-back, cut with the decline
    (and ``plan.output_blocked`` set) when the answer names a forgotten person or matches the store."""
    scan = check.scan()
    try:
        for piece in it:
            out = scan.feed(piece)
            if out:
                yield out
            if scan.blocked:
                break
        else:
            out = scan.finish()
            if out:
                yield out
        if scan.blocked:
            plan.mark_output_blocked()
            yield scan.decline_piece()
    finally:
        plan.timings["output_check_s"] = scan.seconds
        close = getattr(it, "close", None)
        if callable(close):
            close()


# -- what the intervention reads and writes ---------------------------------------------------
def part_text(content: object) -> str:
    """A message's text content: a string as is, text parts joined by newlines (``message_parts``)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") in TEXT_PART_TYPES and isinstance(part.get("text"), str):
            texts.append(part["text"])
    return "\n".join(texts)


def in_scope_text(det: Detection, msgs: list[Message]) -> str:
    """The text the policy and the guider reason about: the one that decided the detection (a
    window, a decoded view, a system or tool message), else the last user turn, else the last text."""
    text = det.source.get("text") if det.source else None
    if isinstance(text, str) and text.strip():
        return text
    texts = [(m.get("role"), part_text(m.get("content"))) for m in msgs]
    users = [t for r, t in texts if r == "user" and t.strip()]
    rest = [t for _, t in texts if t.strip()]
    return (users or rest or [""])[-1]


def editable(msgs: list[Message]) -> list[Message]:
    """The messages with the first system turn's and the last user turn's content parts joined into
    a string, the two turns an intervention writes into; every other message as it came."""
    out = [dict(m) for m in msgs]
    for role, pick in (("system", 0), ("user", -1)):
        idx = [i for i, m in enumerate(out) if m.get("role") == role]
        if idx and not isinstance(out[idx[pick]].get("content"), str):
            out[idx[pick]]["content"] = part_text(out[idx[pick]].get("content"))
    return out  # type: ignore[return-value]
