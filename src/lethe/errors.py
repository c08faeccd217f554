"""Errors with one-line messages that the CLI prints without a traceback."""


class LetheError(Exception):
    """A user-facing error: the message is one line and says what to do."""


class ConfigError(LetheError):
    pass


class BackendError(LetheError):
    pass


class StoreError(LetheError):
    pass


class EmptyStoreError(StoreError):
    pass


class InputError(LetheError):
    """A file or argument the user gave cannot be used (the message names the file and line)."""
