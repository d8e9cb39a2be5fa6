"""Checking the JSON params of a platform command or a local RPC, with 400 answers that name the problem.

Every driver command handler validates through these so the messages read the same everywhere:
``switcher.route: input must be an integer 1-8, got "two"``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from kiosk_core.errors import BadRequest


def check_keys(
    command: str, params: Mapping[str, Any], *, required: Collection[str] = (), optional: Collection[str] = ()
) -> None:
    if not isinstance(params, Mapping):
        raise BadRequest(f"{command}: params must be a JSON object, got {type(params).__name__}")
    unknown = sorted(set(params) - set(required) - set(optional))
    if unknown:
        allowed = ", ".join(sorted(set(required) | set(optional))) or "none"
        raise BadRequest(
            f"{command}: unknown field(s) {', '.join(map(repr, unknown))} (allowed: {allowed})",
            field=unknown[0],
        )
    missing = [k for k in required if k not in params]
    if missing:
        raise BadRequest(f"{command}: missing field {missing[0]!r}", field=missing[0])


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def int_param(
    command: str,
    params: Mapping[str, Any],
    name: str,
    lo: int,
    hi: int,
    *,
    default: int | None = None,
    what: str = "",
) -> int:
    value = params.get(name, default)
    # bool is an int in Python, but `true` is not an input number.
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        extra = f" ({what})" if what else ""
        raise BadRequest(
            f"{command}: {name} must be an integer {lo}-{hi}{extra}, got {_shown(value)}", field=name
        )
    return value


def bool_param(command: str, params: Mapping[str, Any], name: str, *, default: bool | None = None) -> bool:
    value = params.get(name, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{command}: {name} must be true or false, got {_shown(value)}", field=name)
    return value


def choice_param(
    command: str,
    params: Mapping[str, Any],
    name: str,
    choices: Collection[str],
    *,
    default: str | None = None,
) -> str:
    value = params.get(name, default)
    if not isinstance(value, str) or value not in choices:
        raise BadRequest(
            f"{command}: {name} must be one of {', '.join(sorted(choices))}, got {_shown(value)}", field=name
        )
    return value
