"""Platform commands as a table: one frozen ``CommandSpec`` per command.

A spec names the command, says what it does, which process serves it, whether its reply carries
personal data (``personal``, no default: every command must say), and gives the pydantic model its
parameters must fit. The dispatcher validates the body against that model (unknown keys, wrong types
and missing fields are a 400 naming the field) and hands the handler the validated model. The same
table renders the command list of ``docs/mqtt.md`` (``commands_markdown``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError

from kiosk_core.errors import BadRequest

Process = Literal["appliance", "media"]


class Params(BaseModel):
    """Base of every command's parameters: unknown keys are errors, no type coercion (``"2"`` is
    not 2 and ``true`` is not 1), values immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, str_max_length=1000)


class NoParams(Params):
    pass


class OpenParams(BaseModel):
    """For commands whose handler validates its parameters itself against live state (the service
    session's commands: what is allowed depends on the screen). Still a JSON object."""

    model_config = ConfigDict(extra="allow", frozen=True)


@dataclass(frozen=True, kw_only=True)
class CommandSpec:
    name: str
    summary: str
    params: type[BaseModel]
    handler: Callable[[Any], Awaitable[Any]]
    personal: bool
    process: Process

    async def __call__(self, body: dict[str, Any]) -> Any:
        """Validate ``body`` and run the handler with the validated parameters."""
        return await self.handler(self.parse(body))

    def parse(self, body: dict[str, Any]) -> BaseModel:
        """The validated parameters; raises ``BadRequest`` naming the first problem."""
        try:
            return self.params.model_validate(body)
        except ValidationError as exc:
            raise describe(self.name, self.params, exc) from None


_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "dict_type": "a JSON object",
    "list_type": "a list",
}
_RANGE = ("greater_than_equal", "less_than_equal", "greater_than", "less_than")


def _bounds(model: type[BaseModel], field: str) -> tuple[Any, Any]:
    info = model.model_fields.get(field)
    lo = hi = None
    for m in info.metadata if info is not None else ():
        lo = getattr(m, "ge", getattr(m, "gt", lo))
        hi = getattr(m, "le", getattr(m, "lt", hi))
    return lo, hi


def _expected(model: type[BaseModel], field: str, err: Any) -> str:
    kind = err["type"]
    if kind == "literal_error":
        return f"one of {err.get('ctx', {}).get('expected', '')}"
    ctx = err.get("ctx", {})
    if kind == "string_too_short":
        return (
            "a non-empty string"
            if ctx.get("min_length") == 1
            else f"at least {ctx.get('min_length')} characters"
        )
    if kind == "string_too_long":
        return f"a string of at most {ctx.get('max_length')} characters"
    info = model.model_fields.get(field)
    is_int = info is not None and info.annotation is int
    if kind in _EXPECTED or kind in _RANGE:
        lo, hi = _bounds(model, field)
        what = _EXPECTED.get(kind) or ("an integer" if is_int else "a number")
        if lo is not None and hi is not None:
            return f"{what} {lo}-{hi}"
        if lo is not None:
            return f"{what} >= {lo}"
        if hi is not None:
            return f"{what} <= {hi}"
        return what
    return err["msg"].lower()


def describe(command: str, model: type[BaseModel], exc: ValidationError) -> BadRequest:
    """The first problem as a 400 a platform operator can act on:
    ``switcher.route: input must be an integer >= 0, got 'two'``."""
    errors = exc.errors(include_url=False)
    extra = [str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden" and e["loc"]]
    if extra:
        allowed = ", ".join(sorted(model.model_fields)) or "none"
        return BadRequest(
            f"{command}: unknown field(s) {', '.join(map(repr, extra))} (allowed: {allowed})", field=extra[0]
        )
    err = errors[0]
    if not err["loc"]:  # the body itself: a list, a string, a number
        return BadRequest(f"{command}: params must be a JSON object, got {type(err.get('input')).__name__}")
    field = ".".join(str(p) for p in err["loc"])
    if err["type"] == "missing":
        return BadRequest(f"{command}: missing field {field!r}", field=field)
    shown = repr(err.get("input"))
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return BadRequest(f"{command}: {field} must be {_expected(model, field, err)}, got {shown}", field=field)


def body_of(params: BaseModel) -> dict[str, Any]:
    """What the caller sent, validated (fields it left out stay out)."""
    return params.model_dump(exclude_unset=True)


def _fields(model: type[BaseModel]) -> str:
    if not issubclass(model, Params):
        return "(checked by the handler)"
    parts = []
    for name, field in model.model_fields.items():
        if get_origin(field.annotation) is Literal:
            kind = " or ".join(json.dumps(v) for v in get_args(field.annotation))
        else:
            kind = getattr(field.annotation, "__name__", None) or str(field.annotation).replace("typing.", "")
        parts.append(f"`{name}`: {kind}" + ("" if field.is_required() else " (optional)"))
    return ", ".join(parts) or "none"


def commands_markdown(specs: Iterable[CommandSpec]) -> str:
    """The command table of docs/mqtt.md, sorted by name."""
    rows = [
        "| command | process | params | personal reply | what it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in sorted(specs, key=lambda s: s.name):
        rows.append(
            f"| `{spec.name}` | {spec.process} | {_fields(spec.params)} | "
            f"{'yes: never stored' if spec.personal else 'no'} | {spec.summary} |"
        )
    return "\n".join(rows) + "\n"
