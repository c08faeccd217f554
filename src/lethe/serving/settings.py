"""Settings of the guard service: the ``serve:`` section of ``guard.yaml``.

The section is defined with the rest of the configuration tree in :mod:`lethe.config`
(one file, one loader); ``ServeSettings`` is its name on the serving side.
"""

from __future__ import annotations

from pydantic import ValidationError

from lethe.config import ServeConfig, describe_error
from lethe.errors import ConfigError

ServeSettings = ServeConfig


def with_overrides(settings: ServeConfig, **overrides: object) -> ServeConfig:
    """``settings`` with the given (non-None) values replaced, validated like the file."""
    data = settings.model_dump() | {k: v for k, v in overrides.items() if v is not None}
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, "command-line options", ("serve",))) from None


__all__ = ["ServeSettings", "with_overrides"]
