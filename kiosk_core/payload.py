"""JSON on the wire: one encoder and one strict decoder for every payload the firmware receives.

``decode_json_object`` is the only way a received payload becomes data. Whatever arrives (truncated,
invalid UTF-8, ``NaN``, 2 KB of ``[[[[…]]]]``, a megabyte of anything) it either returns a dict whose
nesting is at most ``MAX_DEPTH`` deep or raises ``ValueError`` saying what is wrong. The depth bound is
what keeps everything downstream (pydantic, masking walks, ``json.dumps`` of a reply) away from
``RecursionError``. Numbers are finite both ways: ``NaN``, ``Infinity`` and literals that overflow
a double (``1e400``) are refused on input, and ``dumps`` refuses non-finite floats (JSON has none; a
peer's parser would choke on Python's ``NaN``). Sources of measured floats clean them with ``finite``.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_PAYLOAD = 256 * 1024
MAX_DEPTH = 32


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON. Raises ``ValueError`` naming the first non-finite number and where it is
    (``data.fps = nan``): JSON has no NaN or Infinity."""
    try:
        return json.dumps(
            obj, ensure_ascii=False, separators=(",", ":"), default=str, allow_nan=False
        ).encode()
    except ValueError:
        _, where = finite(obj)
        if not where:
            raise
        raise ValueError(f"not JSON: {where[0]} (NaN and Infinity are not JSON numbers)") from None


def finite(obj: Any, path: str = "") -> tuple[Any, list[str]]:
    """A copy of ``obj`` with every non-finite float (NaN, ±Infinity) replaced by ``None``, and where
    they were (``["cpu_percent = nan", "load[1] = inf"]``) for the caller's log line. Lists, tuples and
    dicts are walked; anything else is kept as it is."""
    found: list[str] = []

    def walk(value: Any, at: str) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            found.append(f"{at or 'value'} = {value}")
            return None
        if isinstance(value, dict):
            return {k: walk(v, f"{at}.{k}" if at else str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v, f"{at}[{i}]") for i, v in enumerate(value)]
        return value

    return walk(obj, path), found


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: valid JSON syntax, but no double holds it
        raise ValueError(f"{text[:40]} is out of range for a JSON number")
    return value


def depth_exceeds(obj: Any, limit: int = MAX_DEPTH) -> bool:
    """True when ``obj`` nests containers more than ``limit`` deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def decode_json_object(
    payload: bytes, what: str = "payload", *, max_bytes: int = MAX_PAYLOAD
) -> dict[str, Any]:
    """Parse a JSON object or raise ``ValueError`` saying exactly what is wrong."""
    if len(payload) > max_bytes:
        raise ValueError(f"{what} is {len(payload)} bytes; at most {max_bytes} are accepted")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not UTF-8 (byte {exc.start})") from None
    try:
        obj = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError(f"{what} nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # NaN / Infinity / 1e400, rejected by _no_constant and _finite_float
        raise ValueError(f"{what} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(obj).__name__}")
    if depth_exceeds(obj):
        raise ValueError(f"{what} nests deeper than {MAX_DEPTH} levels")
    return obj
