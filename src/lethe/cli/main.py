"""The ``lethe`` command line.

Start-up is cheap on purpose: this module imports only typer; each command imports what it
runs (the embedder and detector for ``check``, the chat model for ``chat``), and the
evaluation, training and serving commands are mounted lazily (``LazyGroup``): their modules
load only when one of them runs, so ``lethe --help`` and argument errors answer at once.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from lethe.cli.forget import forget_app
from lethe.cli.query import benign_app
from lethe.cli.query import commands as query_commands
from lethe.errors import LetheError


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
app.add_typer(forget_app, name="forget")
app.registered_commands.extend(query_commands.registered_commands)
app.add_typer(benign_app, name="benign")


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


def main() -> None:
    try:
        app()
    except LetheError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
