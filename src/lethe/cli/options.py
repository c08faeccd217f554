"""Options shared by every ``lethe`` command, declared once so they read the same everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

HOME_HELP = "Lethe home folder: the store, guard.yaml, benign.jsonl and policies/."
HOME_DEFAULT = "~/.lethe"

HomeOpt = Annotated[str | None, typer.Option("--home", envvar="LETHE_HOME", metavar="DIR", help=HOME_HELP,
                                             show_default=HOME_DEFAULT)]
"""``--home DIR`` (env ``LETHE_HOME``, default ``~/.lethe``) for ``Annotated`` signatures."""


def home_option() -> typer.models.OptionInfo:
    """The same ``--home`` as ``HomeOpt``, for signatures that declare options as defaults."""
    return typer.Option(None, "--home", envvar="LETHE_HOME", metavar="DIR", help=HOME_HELP,
                        show_default=HOME_DEFAULT)
