"""The ``lethe`` command line.

Start-up is cheap on purpose: this module imports only typer; each command imports what it
runs (the embedder and detector for ``check``, the chat model for ``chat``), and the
evaluation, training and serving commands are mounted lazily (``LazyGroup``): their modules
load only when one of them runs, so ``lethe --help`` and argument errors answer at once.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from lethe.cli.options import HomeOpt
from lethe.errors import InputError, LetheError


class LazySpec:
    """A command mounted by name: module, attribute, whether it is a Typer app or a function,
    the one-line help shown in ``lethe --help`` (tests check it against the module's own) and
    the extra that provides its dependencies."""

    def __init__(self, module: str, attr: str, kind: str, help: str, extra: str) -> None:
        self.module, self.attr, self.kind, self.help, self.extra = module, attr, kind, help, extra


LAZY_COMMANDS: dict[str, LazySpec] = {
    "eval": LazySpec("lethe.evaluation.cli", "eval_app", "typer",
                     "Run benchmarks (TOFU, WMDP, MMLU, MUSE, continual) and score generations.", "eval"),
    "report": LazySpec("lethe.evaluation.cli", "report_command", "cmd",
                       "Render results files into one HTML report (table + plots).", "eval"),
    "train": LazySpec("lethe.training.cli", "train_command", "cmd",
                      "Unlearn a forget set with one method; writes a PEFT adapter to OUT/adapter.", "train"),
    "targets": LazySpec("lethe.training.cli", "targets_app", "typer",
                        "Reasoning targets for TRU and the guider.", "train"),
    "guider": LazySpec("lethe.training.cli", "guider_app", "typer",
                       "Build data for and LoRA-fine-tune the dedicated CoT guider (DRAGON).", "train"),
    "tofu": LazySpec("lethe.training.cli", "tofu_app", "typer",
                     "TOFU: build the target and retain models a TOFU evaluation starts from.", "train"),
    "serve": LazySpec("lethe.serving.cli", "serve_command", "cmd",
                      "Serve the guard as an OpenAI-compatible proxy with an admin API (/v1, /admin, /metrics).",
                      "serve"),
}
_LAZY_PANEL = "Evaluation, training and serving"


def load_lazy(name: str) -> Any:
    """The click command of a lazily mounted ``name``, built the way ``add_typer`` / ``command`` would."""
    spec = LAZY_COMMANDS[name]
    try:
        obj = getattr(importlib.import_module(spec.module), spec.attr)
    except ImportError as exc:
        raise LetheError(f"'lethe {name}' is not available: {exc} (install it with: "
                         f"pip install 'lethe-unlearn[{spec.extra}]')") from None
    holder = typer.Typer()
    if spec.kind == "typer":
        holder.add_typer(obj, name=name, rich_help_panel=_LAZY_PANEL)
    else:
        holder.command(name, rich_help_panel=_LAZY_PANEL)(obj)
    return typer.main.get_group(holder).commands[name]


class LazyGroup(TyperGroup):
    """The top-level group: core commands as usual, ``LAZY_COMMANDS`` imported on invocation.
    Listings (``--help``) show a lazy command through a stub that carries its help line."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if n not in self.commands)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in LAZY_COMMANDS:
            stub = TyperCommand(name=cmd_name, help=LAZY_COMMANDS[cmd_name].help)
            stub.rich_help_panel = _LAZY_PANEL  # type: ignore[attr-defined]
            return stub
        return cmd

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[str | None, Any, list[str]]:
        if args and args[0] in LAZY_COMMANDS and args[0] not in self.commands:
            self.commands[args[0]] = load_lazy(args[0])
        return super().resolve_command(ctx, args)


app = typer.Typer(cls=LazyGroup, help="Lethe: make LLMs forget (DRAGON guard, TRU training, evaluation).",
                  no_args_is_help=True, rich_markup_mode="rich")
forget_app = typer.Typer(help="Add, list and revoke forget requests.", no_args_is_help=True)
app.add_typer(forget_app, name="forget")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", envvar="LETHE_CONFIG", metavar="FILE",
                                                help="The guard configuration to use.",
                                                show_default="<home>/guard.yaml")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object a line instead of text.")]


def configure_output(verbose: bool) -> None:
    """Ordinary commands print only Lethe's own output: third-party warnings (torch's tracer,
    transformers' advisories), their progress bars ("Loading weights") and their log records
    below ERROR are hidden; ``--verbose`` (or ``LETHE_VERBOSE=1``) shows all of them and INFO logs."""
    import logging
    import warnings

    if verbose:
        os.environ["LETHE_VERBOSE"] = "1"
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        warnings.simplefilter("default")
        return
    os.environ.pop("LETHE_VERBOSE", None)
    for var, value in (("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TRANSFORMERS_VERBOSITY", "error"),
                       ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(var, value)
    warnings.simplefilter("ignore")
    warnings.filterwarnings("default", module=r"lethe(\.|$)")

    def own_or_severe(record: logging.LogRecord) -> bool:
        return record.name.split(".")[0] == "lethe" or record.levelno >= logging.ERROR

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.addFilter(own_or_severe)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)


def _print_version(value: bool) -> None:
    if value:
        from lethe import __version__

        typer.echo(f"lethe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print Lethe's version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", envvar="LETHE_VERBOSE",
                                          help="Also show third-party warnings, logs and progress bars.")] = False,
) -> None:
    """Lethe: make LLMs forget (DRAGON guard, TRU training, evaluation)."""
    configure_output(verbose)


def _config(home: str | None, config: Path | None = None):
    """The home folder and its configuration, through the one loader every entry point uses."""
    from lethe.config import lethe_home, load_config

    path = lethe_home(home)
    return path, load_config(path, config)


def _guard(home: str | None, model: str | None = None, config: Path | None = None):
    """The guard on the store the configuration names (SQLite, PostgreSQL, ...)."""
    from lethe import Guard

    path, cfg = _config(home, config)
    if model:
        cfg.backend.model = model
    return Guard.open(path, config=cfg)


def _store(home: str | None, config: Path | None = None):
    """The configured store alone (no embedder loaded: its size is read from the store)."""
    from lethe.store import open_store

    path, cfg = _config(home, config)
    return open_store(cfg, path, dim=None)


_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def read_text_file(path: Path) -> str:
    """A user's text file as text: UTF-8 with or without a byte-order mark (and UTF-16 with one,
    as Windows editors write it). Anything else is a one-line ``InputError`` naming the file and
    the line of the first byte that is not UTF-8."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a folder, not a file") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    encoding, start = "utf-8", 0
    for bom, enc in _BOMS:
        if data.startswith(bom):
            encoding, start = enc, len(bom)
            break
    try:
        return data[start:].decode(encoding)
    except UnicodeDecodeError as exc:
        at = start + exc.start
        line = data.count(b"\n", 0, at) + 1
        column = at - (data.rfind(b"\n", 0, at) + 1) + 1
        raise InputError(f"{path}:{line}: not {encoding.upper()} text (byte 0x{data[at]:02x} at column {column}); "
                         "save the file as UTF-8") from None


def _require_requests(home: str | None, config: Path | None = None) -> None:
    """The empty-store error from the store alone, before the embedder or any model loads."""
    from lethe.errors import EmptyStoreError

    store = _store(home, config)
    try:
        empty = not store.list_requests()
    finally:
        store.close()
    if empty:
        raise EmptyStoreError("the unlearn store is empty: add a request with 'lethe forget add' first")


def _read_jsonl(path: Path, field: str = "prompt") -> list[dict]:
    """JSON Lines with a string ``field`` on every non-blank line; errors name file and line."""
    rows = []
    for i, line in enumerate(read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{i}: bad JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            raise InputError(f"{path}:{i}: each line needs a string field '{field}'")
        rows.append(obj)
    if not rows:
        raise InputError(f"{path}: no records (one JSON object a line, with a '{field}' field)")
    return rows


@forget_app.command("add")
def forget_add(
    file: Annotated[Path, typer.Option("--file", metavar="FILE",
                                       help="JSON Lines, one {\"prompt\": ..., \"entities\": [...]} a line "
                                            "(UTF-8).")],
    kind: Annotated[str, typer.Option(help="What is forgotten: privacy | copyright | harmful | knowledge.")] = "privacy",
    subject: Annotated[str | None, typer.Option(help="Name or title the request is about (kept as its label).",
                                                show_default="guessed from the prompts")] = None,
    policy: Annotated[str | None, typer.Option(help="Policy to apply when it triggers.",
                                               show_default="retrieved by kind")] = None,
    rewriter: Annotated[str, typer.Option(help="Who writes the stored paraphrases: llm (the chat model, slow) | "
                                               "rule (deterministic, fast).")] = "llm",
    describe: Annotated[str | None, typer.Option(metavar="TEXT", help="What a concept request covers, for "
                                                 "--expand (never stored).")] = None,
    expand: Annotated[int, typer.Option(metavar="N", help="Concept kinds: the chat model writes N more in-scope "
                                        "questions, stored as rewrites (needs --describe).")] = 0,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Register a forget request. Only rewrites (and embeddings) are stored, never the prompts."""
    from lethe.store.base import CONCEPT_KINDS, KINDS

    if kind not in KINDS:  # before any model loads
        raise InputError(f"unknown kind '{kind}' (use one of: {', '.join(KINDS)})")
    if expand and kind not in CONCEPT_KINDS or expand < 0 or bool(expand) != bool((describe or "").strip()):
        raise InputError("--expand N (N > 0) goes with --describe TEXT, on a concept request "
                         f"({', '.join(sorted(CONCEPT_KINDS))})")
    rows = _read_jsonl(file)
    entities = sorted({e for r in rows for e in r.get("entities", []) if isinstance(e, str)})
    guard = _guard(home, config=config)
    bar = sys.stderr.isatty()
    req = guard.forget([r["prompt"] for r in rows], kind=kind, subject=subject, entities=entities or None,
                       policy=policy, rewriter=rewriter, progress=(rewriter == "llm" or expand > 0) and bar,
                       describe=describe, expand=expand)
    if guard.last_expansion is not None:
        st = guard.last_expansion.stats
        typer.echo(f"expanded: kept {st['kept']} of {st['written']} written ({st['duplicate']} duplicates, "
                   f"{st['out_of_scope']} out of scope, {st['calls']} calls, {st['seconds']} s)", err=True)
    typer.echo(req.id)


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


def iso_time(value: Any) -> str | None:
    """A stored time (seconds since the epoch) as ISO 8601 in UTC, e.g. ``2026-12-01T09:30:00Z``."""
    from datetime import UTC, datetime

    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
    elif isinstance(value, int | float):
        when = datetime.fromtimestamp(float(value), tz=UTC)
    else:
        return str(value)
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


QUERY_SHOWN = 120


def abbreviate(text: str, limit: int = QUERY_SHOWN) -> str:
    """A query as one line for text output: whitespace collapsed, and past ``limit`` characters
    cut with a note of its full length (``--json`` always carries the whole query)."""
    one = " ".join(text.split())
    if len(one) <= limit:
        return one
    return f"{one[:limit - 1]}… ({len(text):,} characters)"


@app.command("check")
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


@app.command("chat")
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


@app.command("calibrate")
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
app.add_typer(benign_app, name="benign")


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


@app.command("demo")
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


def main() -> None:
    try:
        app()
    except LetheError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
