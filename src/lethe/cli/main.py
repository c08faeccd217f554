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

import click
import typer
from typer.core import TyperGroup

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


def load_lazy(name: str) -> click.Command:
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

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx), *(n for n in LAZY_COMMANDS if n not in self.commands)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in LAZY_COMMANDS:
            stub = click.Command(cmd_name, help=LAZY_COMMANDS[cmd_name].help)
            stub.rich_help_panel = _LAZY_PANEL  # type: ignore[attr-defined]
            return stub
        return cmd

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
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
    file: Annotated[Path, typer.Option("--file", help="JSONL, one {'prompt': ..., 'entities': [...]} a line")],
    kind: Annotated[str, typer.Option(help="privacy | copyright | harmful | knowledge")] = "privacy",
    subject: Annotated[str | None, typer.Option(help="name or title this request is about")] = None,
    policy: Annotated[str | None, typer.Option(help="policy name (default: retrieved by kind)")] = None,
    rewriter: Annotated[str, typer.Option(help="llm (default model writes paraphrases) | rule")] = "llm",
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Register a forget request. Only rewrites (and embeddings) are stored, never the prompts."""
    rows = _read_jsonl(file)
    entities = sorted({e for r in rows for e in r.get("entities", []) if isinstance(e, str)})
    guard = _guard(home, config=config)
    req = guard.forget([r["prompt"] for r in rows], kind=kind, subject=subject, entities=entities or None,
                       policy=policy, rewriter=rewriter)
    typer.echo(req.id)


@forget_app.command("list")
def forget_list(
    all_: Annotated[bool, typer.Option("--all", help="include revoked")] = False,
    json_: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Ids, kinds and counts of the requests, and the label where the operator gave one (--subject)."""
    store = _store(home, config)
    try:
        for r in store.list_requests(include_revoked=all_):
            row = {"id": r.id, "kind": r.kind, "label": r.subject, "policy": r.policy, "prompts": r.n_prompts,
                   "names": len(r.entities), "created_at": r.created_at, "revoked_at": r.revoked_at}
            typer.echo(json.dumps(row) if json_ else
                       f"{r.id}  {r.kind:<9} {r.n_prompts:>4} prompts {len(r.entities):>2} names  {r.subject or '-'}"
                       + ("  (revoked)" if r.revoked_at else ""))
    finally:
        store.close()


@forget_app.command("revoke")
def forget_revoke(request_id: str, home: HomeOpt = None, config: ConfigOpt = None) -> None:
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


@app.command("check")
def check(
    query: Annotated[str | None, typer.Argument(help="a query; or use --file")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="JSONL with a 'prompt' field")] = None,
    json_: Annotated[bool, typer.Option("--json", help="one JSON line per query")] = False,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Detection only: is each query inside a forget scope?"""
    if (query is None) == (file is None):
        raise LetheError("give either a QUERY or --file")
    queries = [query] if query is not None else [r["prompt"] for r in _read_jsonl(file)]  # type: ignore[arg-type]
    guard = _guard(home, config=config)
    guard.require_nonempty()
    for q, d in zip(queries, guard.detect_many(queries), strict=True):
        if json_:
            typer.echo(json.dumps({"query": q, **d.to_dict()}, ensure_ascii=False))
        else:
            typer.echo(f"{d.explain()}  <- {q}")


@app.command("chat")
def chat(
    query: str,
    json_: Annotated[bool, typer.Option("--json")] = False,
    no_guard: Annotated[bool, typer.Option("--no-guard", help="send straight to the model")] = False,
    max_tokens: Annotated[int, typer.Option()] = 200,
    model: Annotated[str | None, typer.Option(help="override the backend model")] = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """The guarded answer of the configured model."""
    res = _guard(home, model, config).chat(query, max_tokens=max_tokens, use_guard=not no_guard)
    if json_:
        typer.echo(json.dumps(res.to_dict(), ensure_ascii=False))
    else:
        typer.echo(res.response)


@app.command("calibrate")
def calibrate(
    target_fpr: Annotated[float, typer.Option(help="allowed false-positive rate on benign queries")] = 0.01,
    file: Annotated[Path | None, typer.Option("--file", help="benign JSONL ('prompt'); default: shipped hold-out")] = None,
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Choose tau for a target false-positive rate and save it in guard.yaml."""
    benign = [r["prompt"] for r in _read_jsonl(file)] if file else None
    tau = _guard(home, config=config).calibrate(benign, target_fpr=target_fpr)
    typer.echo(json.dumps({"tau": tau, "target_fpr": target_fpr}))


benign_app = typer.Typer(help="In-domain benign queries the detector must not flag.", no_args_is_help=True)
app.add_typer(benign_app, name="benign")


@benign_app.command("add")
def benign_add(
    file: Annotated[Path, typer.Option("--file", help="JSONL, one object a line with 'prompt'")],
    home: HomeOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Add benign queries as extra scorer negatives (e.g. your users' everyday traffic)."""
    n = _guard(home, config=config).add_benign([r["prompt"] for r in _read_jsonl(file)])
    typer.echo(json.dumps({"added": n}))


@app.command("demo")
def demo(
    home: Annotated[str | None, typer.Option("--home", help="default: a fresh temporary folder, removed at the end")] = None,
    max_tokens: Annotated[int, typer.Option(help="tokens per answer")] = 80,
    rewriter: Annotated[str, typer.Option(help="rule (fast) | llm (the model writes the stored paraphrases)")] = "rule",
    keep: Annotated[bool, typer.Option("--keep", help="keep the temporary home")] = False,
) -> None:
    """Forget a real person the embedded model knows; show each query's decision and both answers."""
    from lethe.cli.demo import run_demo

    run_demo(home, max_tokens, rewriter=rewriter, keep=keep)


def _optional(module: str, attr: str):
    try:
        mod = __import__(module, fromlist=[attr])
        return getattr(mod, attr)
    except Exception:  # noqa: BLE001 - optional subsystems must not break the core CLI
        return None


for _mod, _attr, _kind, _name in [
    ("lethe.evaluation.cli", "eval_app", "typer", "eval"),
    ("lethe.evaluation.cli", "report_command", "cmd", "report"),
    ("lethe.training.cli", "train_command", "cmd", "train"),
    ("lethe.training.cli", "targets_app", "typer", "targets"),
    ("lethe.training.cli", "guider_app", "typer", "guider"),
    ("lethe.serving.cli", "serve_command", "cmd", "serve"),
]:
    _obj = _optional(_mod, _attr)
    if _obj is not None:
        if _kind == "typer":
            app.add_typer(_obj, name=_name)
        else:
            app.command(_name)(_obj)


def main() -> None:
    try:
        app()
    except LetheError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
