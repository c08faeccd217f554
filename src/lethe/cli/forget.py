"""``lethe forget add|list|revoke|verify``: forget requests in the store the configuration names."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from lethe.cli.common import ConfigOpt, JsonOpt, _guard, _read_jsonl, _store, iso_time
from lethe.cli.options import HomeOpt
from lethe.errors import InputError, LetheError

forget_app = typer.Typer(help="Add, list and revoke forget requests.", no_args_is_help=True)


@forget_app.command("add")
def forget_add(
    file: Annotated[Path | None, typer.Option("--file", metavar="FILE",
                                              help="JSON Lines, one {\"prompt\": ..., \"entities\": [...]} a line "
                                                   "(UTF-8).")] = None,
    kind: Annotated[str | None, typer.Option(help="What is forgotten: privacy | copyright | harmful | knowledge.",
                                             show_default="privacy, or the pack's kind")] = None,
    pack: Annotated[str | None, typer.Option(metavar="NAME", help="Also register a shipped scope pack's questions "
                                             "('lethe forget packs' lists them).")] = None,
    subject: Annotated[str | None, typer.Option(help="Name or title the request is about (kept as its label).",
                                                show_default="guessed from the prompts")] = None,
    policy: Annotated[str | None, typer.Option(help="Policy to apply when it triggers.",
                                               show_default="retrieved by kind")] = None,
    rewriter: Annotated[str, typer.Option(help="Who writes the stored paraphrases: llm (the chat model, slow) | "
                                               "rule (deterministic, fast).")] = "llm",
    describe: Annotated[str | None, typer.Option(metavar="TEXT", help="What a concept request covers, for "
                                                 "--expand (never stored).")] = None,
    expand: Annotated[int, typer.Option(metavar="N", help="Concept kinds: the chat model writes N more in-scope "
                                        "questions, stored as rewrites (needs --describe or --pack).")] = 0,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Register a forget request. Only rewrites (and embeddings) of your prompts are stored, never the
    prompts; a --pack's questions, public, are stored as they are."""
    from lethe.packs import get_pack
    from lethe.store.base import CONCEPT_KINDS, KINDS

    # every check before any model loads
    if file is None and pack is None:
        raise InputError("give the request's prompts with --file FILE, a shipped scope with --pack NAME, or both")
    if pack is not None:
        try:
            p = get_pack(pack)
        except LetheError as exc:
            raise InputError(str(exc)) from None
        if kind not in (None, p.kind):
            raise InputError(f"scope pack '{pack}' is a {p.kind} request, not --kind {kind}")
        kind = p.kind
    kind = kind or "privacy"
    if kind not in KINDS:
        raise InputError(f"unknown kind '{kind}' (use one of: {', '.join(KINDS)})")
    has_describe = bool((describe or "").strip()) or pack is not None
    if expand and kind not in CONCEPT_KINDS or expand < 0 or (expand and not has_describe) \
            or (describe and not expand):
        raise InputError("--expand N (N > 0) goes with --describe TEXT (or --pack), on a concept request "
                         f"({', '.join(sorted(CONCEPT_KINDS))})")
    rows = _read_jsonl(file) if file is not None else []
    entities = sorted({e for r in rows for e in r.get("entities", []) if isinstance(e, str)})
    guard = _guard(home, config=config)
    bar = sys.stderr.isatty()
    req = guard.forget([r["prompt"] for r in rows], kind=kind, subject=subject, entities=entities or None,
                       policy=policy, rewriter=rewriter, progress=(rewriter == "llm" or expand > 0) and bar,
                       describe=describe, expand=expand, pack=pack)
    if guard.last_expansion is not None:
        st = guard.last_expansion.stats
        typer.echo(f"expanded: kept {st['kept']} of {st['written']} written ({st['duplicate']} duplicates, "
                   f"{st['out_of_scope']} out of scope, {st['calls']} calls, {st['seconds']} s)", err=True)
    typer.echo(req.id)


@forget_app.command("packs")
def forget_packs(json_out: JsonOpt = False) -> None:
    """The shipped scope packs (for 'lethe forget add --pack NAME'): kind, questions per area, scope."""
    from lethe.packs import PACKS, pack_areas

    rows = [{"name": p.name, "kind": p.kind, "areas": pack_areas(p.name), "describe": p.describe}
            for p in PACKS.values()]
    for r in rows:
        if json_out:
            typer.echo(json.dumps(r))
            continue
        typer.echo(f"{r['name']} ({r['kind']}, {sum(r['areas'].values())} questions): {r['describe']}")
        typer.echo("  areas: " + ", ".join(f"{a} {n}" for a, n in r["areas"].items()))


@forget_app.command("list")
def forget_list(
    all_: Annotated[bool, typer.Option("--all", help="Include revoked requests.")] = False,
    json_: JsonOpt = False,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Ids, kinds and counts of the requests, and the label where the operator gave one (--subject)."""
    store = _store(home, config)
    try:
        requests = store.list_requests(include_revoked=all_)
        if not requests and not json_:
            typer.echo("no forget requests" + ("" if all_ else " (--all includes revoked ones)")
                       + "; add one with 'lethe forget add --file FILE'")
        for r in requests:
            row = {"id": r.id, "kind": r.kind, "label": r.subject, "policy": r.policy, "prompts": r.n_prompts,
                   "names": len(r.entities), "created_at": iso_time(r.created_at),
                   "revoked_at": iso_time(r.revoked_at)}
            typer.echo(json.dumps(row) if json_ else
                       f"{r.id}  {r.kind:<9} {r.n_prompts:>4} prompts {len(r.entities):>2} names  {row['created_at']}  "
                       f"{r.subject or '-'}" + (f"  (revoked {row['revoked_at']})" if r.revoked_at else ""))
    finally:
        store.close()


@forget_app.command("revoke")
def forget_revoke(
    request_id: Annotated[str, typer.Argument(metavar="ID", help="The request's id (lethe forget list).")],
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Revoke a request; every process serving from the store stops enforcing it within a second."""
    store = _store(home, config)
    try:
        if not store.revoke(request_id):
            raise LetheError(f"no live request with id {request_id}")
    finally:
        store.close()
    typer.echo(f"revoked {request_id}")


@forget_app.command("verify")
def forget_verify(
    request_id: Annotated[str, typer.Argument(metavar="ID", help="The request's id (lethe forget list).")],
    n: Annotated[int, typer.Option("--n", min=1, help="Probes per family (paraphrases, typos, wrappers, "
                                                     "encodings, languages, roles).")] = 12,
    generate: Annotated[bool, typer.Option("--generate", help="Also ask the guarded model each probe and check "
                                                             "the answers for leaks (slow: one answer a probe).")] = False,
    name: Annotated[list[str] | None, typer.Option("--name", metavar="NAME",
                                                   help="The person's name, for a request stored as embeddings "
                                                        "only (used in memory, checked against its hashes).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the probe sample.")] = 0,
    html_file: Annotated[Path | None, typer.Option("--html", metavar="FILE",
                                                   help="Also write the receipt as a self-contained HTML page.")] = None,
    json_: JsonOpt = False,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """A receipt for one request: the live guard probed with variants of its stored rewrites; detection
    (and with --generate leak) rate per family, with date, configuration digest and versions."""
    from lethe.guard.verify import to_html, verify

    guard = _guard(home, config=config)
    try:
        receipt = verify(guard, request_id, n=n, generate=generate, names=name or (), seed=seed)
    finally:
        guard.store.close()
    if html_file is not None:
        html_file.write_text(to_html(receipt), encoding="utf-8")
    if json_:
        typer.echo(json.dumps(receipt, ensure_ascii=False))
        return
    req, ov = receipt["request"], receipt["overall"]
    leak = receipt["leak"] or {}

    def rate(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    typer.echo(f"receipt for {req['id']} ({req['kind']}, {'live' if req['live'] else 'revoked'}) at {receipt['date']}; "
               f"tau {receipt['config']['tau']:.3f}, model {receipt['config']['model']}")
    typer.echo(f"{'family':<12}{'probes':>7}{'detected':>9}{'rate':>8}" + (f"{'leak':>8}" if leak else ""))
    for fam, r in receipt["families"].items():
        lr = (leak.get("families") or {}).get(fam, {}).get("leak_rate")
        typer.echo(f"{fam:<12}{r['probes']:>7}{r['detected']:>9}{rate(r['detection_rate']):>8}"
                   + (f"{rate(lr):>8}" if leak else ""))
    typer.echo(f"{'overall':<12}{ov['probes']:>7}{ov['detected']:>9}{rate(ov['detection_rate']):>8}"
               + (f"{rate(leak['leak_rate']):>8}" if leak else ""))
    for note in receipt["notes"]:
        typer.echo(f"note: {note}")
