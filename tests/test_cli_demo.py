"""`lethe demo` end to end on the embedded default model: it must teach what the guard does."""

from __future__ import annotations

import re
import tempfile

from rich.console import Console

from lethe.cli.demo import DEMO_FORGET, SUBJECT, run_demo


def test_demo_shows_request_leak_decline_and_identical_pass_through(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the demo's temporary home lands here
    console = Console(record=True, width=220, force_terminal=False)
    outcomes = run_demo(None, max_tokens=24, console=console)
    text = console.export_text()
    # the forget request: what is forgotten, in which scope, what is stored
    assert "the forget request" in text and SUBJECT in text and "not in scope" in text
    assert all(p in text for p in DEMO_FORGET) and "the prompts themselves are not written" in text
    # per query: the decision with score and threshold, and what fired for the in-scope ones
    assert len(re.findall(r"detection: (IN SCOPE|out of scope)\s+score \d\.\d\d [>≤] τ", text)) == len(outcomes)
    assert "fired:" in text
    # the queries chosen to be in scope are caught, those chosen to be out of scope are not
    assert [o.triggered for o in outcomes] == [o.query.expect == "in scope" for o in outcomes], text
    # at least one query where the unguarded model leaks and the guarded one does not
    assert any(o.triggered and o.leaks(o.unguarded) and not o.leaks(o.guarded) for o in outcomes), text
    # at least one out-of-scope query answered identically with and without the guard
    assert any(not o.triggered and o.query.expect == "out of scope" and o.identical and o.unguarded.strip()
               for o in outcomes), text
    # every step says how long it took; the temporary home is gone
    assert text.count("done in") == 3 and re.search(r"total \d+\.\d s", text)
    assert "removed the temporary home" in text
    assert not list(tmp_path.glob("lethe-demo-*"))
