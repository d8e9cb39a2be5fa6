"""JSON on the wire: one encoder and one strict decoder for every payload the firmware receives.

``decode_json_object`` is the only way a received payload becomes data. Whatever arrives (truncated,
invalid UTF-8, ``NaN``, 2 KB of ``[[[[…]]]]``, a megabyte of anything) it either returns a dict whose
nesting is at most ``MAX_DEPTH`` deep or raises ``ValueError`` saying what is wrong. The depth bound is
what keeps everything downstream (pydantic, masking walks, ``json.dumps`` of a reply) away from
``RecursionError``.
"""

from __future__ import annotations

import json
from typing import Any

MAX_PAYLOAD = 256 * 1024
MAX_DEPTH = 32


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


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
        obj = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError(f"{what} nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # NaN / Infinity, rejected by _no_constant
        raise ValueError(f"{what} is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(obj).__name__}")
    if depth_exceeds(obj):
        raise ValueError(f"{what} nests deeper than {MAX_DEPTH} levels")
    return obj
