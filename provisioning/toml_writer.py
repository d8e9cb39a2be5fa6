"""A small TOML writer for the kiosk's configuration (the standard library reads TOML but does not
write it).

It covers the shapes ``kiosk.toml`` has: tables nested to any depth (``[drivers.camera.room_main]``),
strings, integers, finite floats, booleans, and arrays of those; an array of tables is written as
``[[name]]``. Anything else (NaN, dates, a list mixing tables and values) is a ``TypeError``: it never
writes what ``tomllib`` would read differently, which the tests check by reading every output back.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _key(key: str) -> str:
    return key if BARE_KEY.match(key) else _string(key)


def _string(value: str) -> str:
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{where}: {value} has no place in the kiosk's TOML")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, PurePath):
        return _string(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v, f"{where}[{i}]") for i, v in enumerate(value)) + "]"
    raise TypeError(f"{where}: cannot write a {type(value).__name__} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, Mapping) for v in value)


def dumps(data: Mapping[str, Any]) -> str:
    """``data`` as TOML text that ``tomllib.loads`` reads back equal (paths become strings, tuples lists)."""
    lines: list[str] = []

    def table(body: Mapping[str, Any], path: list[str], header: str | None) -> None:
        plain = [(k, v) for k, v in body.items() if not isinstance(v, Mapping) and not _is_table_array(v)]
        if header is not None and (plain or not any(isinstance(v, Mapping) for v in body.values())):
            if lines:
                lines.append("")
            lines.append(header)
        for key, value in plain:
            if value is None:
                continue  # TOML has no null: an absent key means the default
            if isinstance(value, list | tuple) and any(isinstance(v, Mapping) for v in value):
                raise TypeError(f"{'.'.join([*path, key])}: a list mixing tables and values")
            lines.append(f"{_key(key)} = {_value(value, '.'.join([*path, key]))}")
        for key, value in body.items():
            sub = [*path, key]
            dotted = ".".join(_key(p) for p in sub)
            if isinstance(value, Mapping):
                table(value, sub, f"[{dotted}]")
            elif _is_table_array(value):
                for item in value:
                    if lines:
                        lines.append("")
                    lines.append(f"[[{dotted}]]")
                    table(item, sub, None)

    table(data, [], None)
    return "\n".join(lines) + "\n"
