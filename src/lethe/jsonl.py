"""Users' text and JSON Lines files, read one way everywhere (CLI, training, guider data).

Text is UTF-8 with or without a byte-order mark (or UTF-16 with one, as Windows editors write it);
every failure is a one-line ``InputError`` naming the file and line. A bottom-layer module: it
imports only the standard library and ``lethe.errors``.
"""

from __future__ import annotations

import json
from pathlib import Path

from lethe.errors import InputError

_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def read_text_file(path: str | Path, what: str = "file") -> str:
    """A user's text file as text; anything but UTF-8 (or UTF-16 with a BOM) is a one-line error
    naming the file and the line of the first byte that is not UTF-8."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
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


def read_jsonl(path: str | Path, what: str = "file", fields: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSON Lines file. Each line must be a JSON
    object with a string value for one of ``fields`` (when given: alternatives, e.g. ``prompt`` or
    ``question``); an empty file is an error too."""
    path = Path(path).expanduser()
    rows: list[tuple[int, dict]] = []
    for n, line in enumerate(read_text_file(path, f"{what} file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{n}: bad JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{n}: each line must be a JSON object")
        if fields and not any(isinstance(obj.get(f), str) for f in fields):
            raise InputError(f"{path}:{n}: each line needs a string field '{fields[0]}'")
        rows.append((n, obj))
    if not rows:
        need = f", with a '{fields[0]}' field" if fields else ""
        raise InputError(f"{path}: no records (one JSON object a line{need})")
    return rows
