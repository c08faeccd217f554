"""``lethe check``, ``chat``, ``calibrate``, ``benign add`` and ``demo``: the guard on queries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from lethe.cli.common import (
    ConfigOpt,
    JsonOpt,
    _guard,
    _read_jsonl,
    _require_requests,
    abbreviate,
)
from lethe.cli.options import HomeOpt
from lethe.errors import InputError

# top-level commands, registered on the root app by lethe.cli.main
commands = typer.Typer()

@commands.command("check")
def check(
    query: Annotated[str | None, typer.Argument(metavar="QUERY", help="The query to check (or give --file).",
                                                show_default=False)] = None,
    file: Annotated[Path | None, typer.Option("--file", metavar="FILE",
                                              help="JSON Lines with a 'prompt' field: check each (UTF-8).")] = None,
    json_: JsonOpt = False,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Detection only: is each query inside a forget scope? (No model is loaded.)"""
    if (query is None) == (file is None):
        raise InputError("give either a QUERY or --file")
    queries = [query] if query is not None else [r["prompt"] for r in _read_jsonl(file)]  # type: ignore[arg-type]
    _require_requests(home, config)
    guard = _guard(home, config=config)
    guard.require_nonempty()
    for q, d in zip(queries, guard.detect_many(queries), strict=True):
        if json_:
            typer.echo(json.dumps({"query": q, **d.to_dict()}, ensure_ascii=False))
        else:
            typer.echo(f"{d.explain()}  <- {abbreviate(q)}")


@commands.command("chat")
def chat(
    query: Annotated[str, typer.Argument(metavar="QUERY", help="The user's message.")],
    json_: JsonOpt = False,
    no_guard: Annotated[bool, typer.Option("--no-guard", help="Send the query straight to the model, without "
                                                              "detection (the output then has no detection fields).")] = False,
    max_tokens: Annotated[int, typer.Option(help="Most tokens in the answer.")] = 200,
    model: Annotated[str | None, typer.Option(help="Chat model to use instead of guard.yaml's backend.model.",
                                              show_default="guard.yaml's")] = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The configured model's answer, guarded: in-scope queries are declined, others pass unchanged."""
    res = _guard(home, model, config).chat(query, max_tokens=max_tokens, use_guard=not no_guard)
    if json_:
        if no_guard:  # no detection ran: no score, components or decision to report
            row = {"response": res.response, "guarded": False,
                   "timings": {k: round(v, 4) for k, v in res.timings.items() if k != "detect_s"}}
        else:
            row = {**res.to_dict(), "guarded": True}
        typer.echo(json.dumps(row, ensure_ascii=False))
    else:
        typer.echo(res.response)


@commands.command("calibrate")
def calibrate(
    file: Annotated[Path | None, typer.Option("--file", metavar="FILE",
                                              help="In-domain benign queries, JSON Lines with 'prompt' (UTF-8): "
                                                   "what your users ask that must pass.",
                                              show_default="the shipped general hold-out")] = None,
    target_fpr: Annotated[float, typer.Option(help="Share of those benign queries allowed to trigger.",
                                              min=0.0, max=0.5)] = 0.01,
    force: Annotated[bool, typer.Option("--force", help="Calibrate even on a benign set that is too small or out "
                                                        "of domain (tau still never goes below the floor).")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report, but leave guard.yaml unchanged.")] = False,
    json_: JsonOpt = False,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Choose tau for a target false-positive rate on benign queries and save it in guard.yaml.

    Prints tau with the FPR measured on the benign queries and the TPR on fresh variants of the
    store's own rewrites. Refuses (tau unchanged) when the benign set is too small for the target
    (at least 3 / target-fpr queries) or out of domain (no closer to the store than general
    questions); tau never goes below the floor of 0.5, where no single half-strength signal decides.
    """
    benign = [r["prompt"] for r in _read_jsonl(file)] if file else None
    _require_requests(home, config)
    guard = _guard(home, config=config)
    cal = guard.calibrate(benign, target_fpr=target_fpr, force=force, save=not dry_run, details=True)
    for w in cal.warnings:
        typer.echo(f"warning: {w}", err=True)
    if json_:
        typer.echo(json.dumps(cal.to_dict() | {"benign_file": str(file) if file else None}))
        return
    for line in cal.summary(source=str(file) if file else "shipped general hold-out"):
        typer.echo(line)


benign_app = typer.Typer(help="In-domain benign queries the detector must not flag.", no_args_is_help=True)


@benign_app.command("add")
def benign_add(
    file: Annotated[Path, typer.Option("--file", metavar="FILE",
                                       help="JSON Lines, one {\"prompt\": ...} a line (UTF-8).")],
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add benign queries as extra scorer negatives (e.g. your users' everyday traffic)."""
    n = _guard(home, config=config).add_benign([r["prompt"] for r in _read_jsonl(file)])
    typer.echo(json.dumps({"added": n}))


@commands.command("demo")
def demo(
    home: Annotated[str | None, typer.Option("--home", metavar="DIR", help="Home folder for the demo's guard "
                                             "(not LETHE_HOME: the demo never touches your store).",
                                             show_default="a fresh temporary folder, removed at the end")] = None,
    max_tokens: Annotated[int, typer.Option(help="Most tokens per answer.")] = 80,
    rewriter: Annotated[str, typer.Option(help="Who writes the stored paraphrases: rule (fast) | llm (the model).")] = "rule",
    keep: Annotated[bool, typer.Option("--keep", help="Keep the temporary home.")] = False,
) -> None:
    """Forget a real person the embedded model knows; show each query's decision and both answers."""
    from lethe.cli.demo import run_demo

    run_demo(home, max_tokens, rewriter=rewriter, keep=keep)
