"""The ``lethe`` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from lethe.errors import LetheError

app = typer.Typer(help="Lethe: make LLMs forget (DRAGON guard, TRU training, evaluation).", no_args_is_help=True)
forget_app = typer.Typer(help="Add, list and revoke forget requests.", no_args_is_help=True)
app.add_typer(forget_app, name="forget")

HomeOpt = Annotated[str | None, typer.Option("--home", envvar="LETHE_HOME", help="store and config folder")]


def _guard(home: str | None, model: str | None = None):
    from lethe import Guard
    from lethe.config import GuardConfig, lethe_home

    path = lethe_home(home)
    cfg = GuardConfig.load(path / "guard.yaml")
    if model:
        cfg.backend.model = model
    return Guard.open(path, config=cfg)


def _read_jsonl(path: Path, field: str = "prompt") -> list[dict]:
    if not path.exists():
        raise LetheError(f"file not found: {path}")
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LetheError(f"{path}:{i}: bad JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
            raise LetheError(f"{path}:{i}: each line needs a string field '{field}'")
        rows.append(obj)
    if not rows:
        raise LetheError(f"{path}: no records")
    return rows


@forget_app.command("add")
def forget_add(
    file: Annotated[Path, typer.Option("--file", help="JSONL, one {'prompt': ..., 'entities': [...]} a line")],
    kind: Annotated[str, typer.Option(help="privacy | copyright | harmful | knowledge")] = "privacy",
    subject: Annotated[str | None, typer.Option(help="name or title this request is about")] = None,
    policy: Annotated[str | None, typer.Option(help="policy name (default: retrieved by kind)")] = None,
    rewriter: Annotated[str, typer.Option(help="llm (default model writes paraphrases) | rule")] = "llm",
    home: HomeOpt = None,
) -> None:
    """Register a forget request. Only rewrites (and embeddings) are stored, never the prompts."""
    rows = _read_jsonl(file)
    entities = sorted({e for r in rows for e in r.get("entities", []) if isinstance(e, str)})
    guard = _guard(home)
    req = guard.forget([r["prompt"] for r in rows], kind=kind, subject=subject, entities=entities or None,
                       policy=policy, rewriter=rewriter)
    typer.echo(req.id)


@forget_app.command("list")
def forget_list(
    all_: Annotated[bool, typer.Option("--all", help="include revoked")] = False,
    json_: Annotated[bool, typer.Option("--json")] = False,
    home: HomeOpt = None,
) -> None:
    from lethe.config import lethe_home
    from lethe.store import open_store

    store = open_store(lethe_home(home))
    for r in store.list_requests(include_revoked=all_):
        row = {"id": r.id, "kind": r.kind, "subject": r.subject, "policy": r.policy, "prompts": r.n_prompts,
               "created_at": r.created_at, "revoked_at": r.revoked_at}
        typer.echo(json.dumps(row) if json_ else
                   f"{r.id}  {r.kind:<9} {r.n_prompts:>4} prompts  {r.subject or '-'}"
                   + ("  (revoked)" if r.revoked_at else ""))


@forget_app.command("revoke")
def forget_revoke(request_id: str, home: HomeOpt = None) -> None:
    from lethe.config import lethe_home
    from lethe.store import open_store

    if not open_store(lethe_home(home)).revoke(request_id):
        raise LetheError(f"no live request with id {request_id}")
    typer.echo(f"revoked {request_id}")


@app.command("check")
def check(
    query: Annotated[str | None, typer.Argument(help="a query; or use --file")] = None,
    file: Annotated[Path | None, typer.Option("--file", help="JSONL with a 'prompt' field")] = None,
    json_: Annotated[bool, typer.Option("--json", help="one JSON line per query")] = False,
    home: HomeOpt = None,
) -> None:
    """Detection only: is each query inside a forget scope?"""
    if (query is None) == (file is None):
        raise LetheError("give either a QUERY or --file")
    queries = [query] if query is not None else [r["prompt"] for r in _read_jsonl(file)]  # type: ignore[arg-type]
    guard = _guard(home)
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
) -> None:
    """The guarded answer of the configured model."""
    res = _guard(home, model).chat(query, max_tokens=max_tokens, use_guard=not no_guard)
    if json_:
        typer.echo(json.dumps(res.to_dict(), ensure_ascii=False))
    else:
        typer.echo(res.response)


@app.command("calibrate")
def calibrate(
    target_fpr: Annotated[float, typer.Option(help="allowed false-positive rate on benign queries")] = 0.01,
    file: Annotated[Path | None, typer.Option("--file", help="benign JSONL ('prompt'); default: shipped hold-out")] = None,
    home: HomeOpt = None,
) -> None:
    """Choose tau for a target false-positive rate and save it in guard.yaml."""
    benign = [r["prompt"] for r in _read_jsonl(file)] if file else None
    tau = _guard(home).calibrate(benign, target_fpr=target_fpr)
    typer.echo(json.dumps({"tau": tau, "target_fpr": target_fpr}))


benign_app = typer.Typer(help="In-domain benign queries the detector must not flag.", no_args_is_help=True)
app.add_typer(benign_app, name="benign")


@benign_app.command("add")
def benign_add(
    file: Annotated[Path, typer.Option("--file", help="JSONL, one object a line with 'prompt'")],
    home: HomeOpt = None,
) -> None:
    """Add benign queries as extra scorer negatives (e.g. your users' everyday traffic)."""
    n = _guard(home).add_benign([r["prompt"] for r in _read_jsonl(file)])
    typer.echo(json.dumps({"added": n}))


@app.command("demo")
def demo(
    home: Annotated[str | None, typer.Option("--home", help="default: a fresh temporary folder")] = None,
    max_tokens: Annotated[int, typer.Option()] = 80,
) -> None:
    """Forget a (fictitious) person on the embedded default model and compare answers side by side."""
    from lethe.cli.demo import run_demo

    run_demo(home, max_tokens)


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
