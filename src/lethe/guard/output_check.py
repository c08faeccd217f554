"""The output check: a hard backstop on the model's answer, behind the guard's soft intervention.

DRAGON (Wang et al., ICLR 2026, arXiv 2511.05784, Sec. 7) names "layering hard constraints, e.g.
output filtering, to back up soft constraints" as future work. The input detector cannot see some
queries at all (an indirect reference: "Who wrote <a title>?" when the title's author is forgotten
and the title never appeared in the forget prompts), and an intervention can fail; the answer
then names the forgotten person. This module reads the answer on its way out with the store's
own evidence, never with names in clear:

- *names*: the detector's keyed-hash :class:`~lethe.guard.entities.EntityMatcher` (whole names,
  surnames by rarity, one-edit typos), on the answer and, for whole answers, on its decoded views
  (:mod:`lethe.guard.views`: an answer written in base64 or reversed at the user's request);
- *similarity*: each answer sentence embedded and compared with the store's live rewrites and
  augmentations (``UnlearnStore.search``); a sentence at or above ``threshold`` cosine blocks.

A blocked whole answer is replaced by the matched request's policy decline
(:meth:`lethe.guard.policies.Policy.decline_message`). A stream is scanned incrementally by
:class:`StreamScan`: the last ``holdback_chars`` characters are held back, and the name matcher
reads every complete word before anything is released, so a name no longer than the hold-back is
caught whole however the chunks split it and no character of it is sent; the delay a stream pays
is at most that many characters. A sentence that matches by similarity is known only once it
ends, so a stream is truncated after the part of it already released. Either way the stream ends
with the decline.

What it does not read: answers that describe the person without naming them and without a
sentence near the store, names longer than the hold-back split across a release, and decoded
views of streamed answers (a stream cannot be decoded until it ends).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lethe.config import OutputCheckConfig
from lethe.guard.views import decoded_views
from lethe.text import normalize

if TYPE_CHECKING:
    from lethe.guard.detector import Detector
    from lethe.guard.policies import PolicyLibrary

_SENTENCE = re.compile(r"(?<=[.?!;])\s+|\n+")  # a sentence ends at . ? ! ; followed by white space, or a line
_WORD_CHARS = "'’-_"  # besides letters and digits, characters inside a word
NAME_CONTEXT_CHARS = 64  # released text read again before the held part (a name's first half, other names)
GENERIC_DECLINE = "I'm sorry, but I can't share that."
log = logging.getLogger("lethe.guard.output_check")


@dataclass
class OutputVerdict:
    """What the output check found in an answer: blocked or not, why, and which request it matched."""

    blocked: bool = False
    reason: str | None = None  # "name" | "similarity"
    request_id: str | None = None
    score: float = 0.0
    read: str = "whole"  # how the deciding text was read: whole, view:<name>, stream, sentence
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"blocked": self.blocked, "reason": self.reason, "request_id": self.request_id,
                "score": round(self.score, 6), "read": self.read, "seconds": round(self.seconds, 6)}


def sentences(text: str) -> list[str]:
    """The sentences and lines of ``text``, white space collapsed (empty ones dropped)."""
    return [" ".join(s.split()) for s in _SENTENCE.split(text) if s.strip()]


class OutputCheck:
    """Scans answers for forgotten names and store content; builds the decline that replaces them.

    Reads the detector's live state (its matcher and the store), so adds and revokes are followed
    exactly as detection follows them.
    """

    def __init__(self, detector: Detector, policies: PolicyLibrary | None, config: OutputCheckConfig) -> None:
        self.detector = detector
        self.policies = policies
        self.config = config

    @property
    def enabled(self) -> bool:
        return self.config.enabled and (self.config.names or self.config.similarity)

    def _fresh(self) -> None:
        det = self.detector
        if det.store.version() != getattr(det, "_version", None):
            det.refresh()

    # -- whole answers ---------------------------------------------------------------
    def check(self, text: str) -> OutputVerdict:
        """The verdict on a whole answer: names first (microseconds), then sentence similarity."""
        t0 = time.perf_counter()
        self._fresh()
        verdict = self.check_names(text, views=self.config.views)
        if not verdict.blocked:
            verdict = self.check_sentences(sentences(text))
        verdict.seconds = time.perf_counter() - t0
        return verdict

    def check_names(self, text: str, views: bool = False, read: str = "whole") -> OutputVerdict:
        """Whether ``text`` names a forgotten person (entity score >= ``name_threshold``)."""
        if not self.config.names or not text.strip() or not len(self.detector.matcher):
            return OutputVerdict()
        matcher = self.detector.matcher
        texts = [(read, text)]
        if views:
            texts += [(f"view:{name}", v) for name, v in decoded_views(text, self._probe)]
        best = OutputVerdict()
        for how, t in texts:
            hits = matcher.match(t)
            if hits and hits[0].score > best.score:
                best = OutputVerdict(False, "name", hits[0].request_id, float(hits[0].score), how)
        best.blocked = best.score >= self.config.name_threshold
        return best if best.blocked else OutputVerdict(score=best.score)

    def _probe(self, text: str) -> bool:
        hits = self.detector.matcher.match(text)
        return bool(hits) and hits[0].score >= self.config.name_threshold

    def check_sentences(self, sents: list[str]) -> OutputVerdict:
        """Whether a sentence of at least ``min_words`` words is within ``threshold`` cosine of a
        live stored rewrite or augmentation."""
        if not self.config.similarity:
            return OutputVerdict()
        sents = [s for s in sents if len(s.split()) >= self.config.min_words]
        det = self.detector
        if not sents or det.empty:
            return OutputVerdict()
        emb = det.embedder.encode([normalize(s) for s in sents])
        best = OutputVerdict()
        for row in det.store.search(emb, k=1):
            if row and row[0].score > best.score:
                best = OutputVerdict(False, "similarity", row[0].sample.request_id, float(row[0].score), "sentence")
        best.blocked = best.score >= self.config.threshold
        return best if best.blocked else OutputVerdict(score=best.score)

    # -- streams ---------------------------------------------------------------------
    def scan(self) -> StreamScan:
        """A fresh incremental scan for one streamed answer."""
        self._fresh()
        return StreamScan(self)

    # -- the replacement -------------------------------------------------------------
    def decline(self, verdict: OutputVerdict | None = None) -> str:
        """The policy decline of the request the verdict matched (its named policy, else its kind's)."""
        if self.policies is None or (verdict is not None and verdict.reason == "error"):
            return GENERIC_DECLINE
        try:
            req = self.detector.store.get_request(verdict.request_id) if verdict and verdict.request_id else None
            kind = req.kind if req is not None else "privacy"
            return self.policies.retrieve(kind, name=req.policy if req is not None else None).decline_message()
        except Exception:  # a decline never fails (a policy file removed since the add, a store error)
            log.exception("output check: no policy decline for request %s", verdict.request_id if verdict else None)
            return GENERIC_DECLINE


class StreamScan:
    """The output check of one streamed answer, fed piece by piece.

    ``feed`` returns the text that may be sent now; ``finish`` the rest at the end of the stream.
    Invariant after every call: at most ``holdback_chars`` characters received are not yet
    released (``held``), and every complete word received has been read by the name matcher
    before any text is released. Once ``blocked``, nothing more is released.
    """

    def __init__(self, check: OutputCheck) -> None:
        self.check = check
        self.holdback = check.config.holdback_chars
        self.text = ""
        self.released = 0  # characters of ``text`` released
        self._names_to = 0  # end of the last name scan (a word boundary)
        self._sent_from = 0  # start of the first sentence not yet embedded
        self.verdict = OutputVerdict()
        self.seconds = 0.0  # time spent scanning
        self.passthrough = False  # the check failed and the caller fails open: release everything
        self._lock = threading.Lock()

    @property
    def blocked(self) -> bool:
        return self.verdict.blocked

    @property
    def held(self) -> int:
        return len(self.text) - self.released

    def needs_embedding(self, piece: str) -> bool:
        """Whether feeding ``piece`` completes a sentence to embed (a caller on an event loop runs
        that feed on a worker thread; every other feed costs microseconds)."""
        cfg = self.check.config
        return cfg.similarity and bool(_SENTENCE.search(self.text[self._sent_from:] + piece))

    def feed(self, piece: str) -> str:
        with self._lock:
            if self.blocked or not piece:
                return ""
            self.text += piece
            if self.passthrough:
                self.released = len(self.text)
                return piece
            return self._advance(final=False)

    def finish(self) -> str:
        with self._lock:
            if self.passthrough:
                out, self.released = self.text[self.released:], len(self.text)
                return out
            return "" if self.blocked else self._advance(final=True)

    def fail(self, closed: bool) -> str:
        """The check itself failed (an embedding error): closed blocks the stream (``reason`` "error"),
        open releases what is held and lets every later piece through unscanned."""
        with self._lock:
            if closed:
                self.verdict = OutputVerdict(True, "error", read="stream")
                return ""
            self.passthrough = True
            out, self.released = self.text[self.released:], len(self.text)
            return out

    def _advance(self, final: bool) -> str:
        t0 = time.perf_counter()
        text, cfg = self.text, self.check.config
        # names: every complete word up to the last word boundary (the last word may still grow)
        end = len(text) if final else _last_word_end(text)
        if len(text) - end > self.holdback:  # one run longer than the hold-back: read it as it stands
            end = len(text)
        if cfg.names and end > self._names_to:
            start = _word_start(text, max(0, min(self.released, self._names_to) - NAME_CONTEXT_CHARS))
            v = self.check.check_names(text[start:end], read="stream")
            self._names_to = end
            if v.blocked:
                return self._block(v, t0)
        # similarity: every sentence completed since the last embedding
        if cfg.similarity:
            parts = _SENTENCE.split(text[self._sent_from:])
            done = parts if final else parts[:-1]
            if done:
                v = self.check.check_sentences([" ".join(p.split()) for p in done if p.strip()])
                if final:
                    self._sent_from = len(text)
                else:
                    last = list(_SENTENCE.finditer(text, self._sent_from))
                    self._sent_from = last[-1].end() if last else self._sent_from
                if v.blocked:
                    return self._block(v, t0)
        upto = len(text) if final else max(self.released, len(text) - self.holdback)
        out = text[self.released:upto]
        self.released = upto
        self.seconds += time.perf_counter() - t0
        return out

    def _block(self, verdict: OutputVerdict, t0: float) -> str:
        self.verdict = verdict
        self.seconds += time.perf_counter() - t0
        verdict.seconds = self.seconds
        return ""

    def decline_piece(self) -> str:
        """What a blocked stream ends with: the decline, set apart from any text already released."""
        text = self.check.decline(self.verdict)
        return ("\n\n" + text) if self.released else text


def _last_word_end(text: str) -> int:
    """The end of the last complete word: the position after the last character that ends a word."""
    for i in range(len(text) - 1, -1, -1):
        if not _in_word(text[i]):
            return i + 1
    return 0


def _in_word(ch: str) -> bool:
    return ch.isalnum() or ch in _WORD_CHARS


def _word_start(text: str, pos: int) -> int:
    """``pos`` moved forward to the start of a word (never into the middle of one)."""
    if pos <= 0:
        return 0
    while pos < len(text) and _in_word(text[pos - 1]):
        pos += 1
    return pos
