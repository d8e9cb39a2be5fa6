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
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Tag, ValidationError
from pydantic.fields import FieldInfo

from kiosk_core.errors import BadRequest

Process = Literal["appliance", "media"]


class Params(BaseModel):
    """Base of every command's parameters: unknown keys are errors, no type coercion (``"2"`` is
    not 2 and ``true`` is not 1), values immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, str_max_length=1000)


class NoParams(Params):
    pass


class OpenParams(BaseModel):
    """Any JSON object, for a handler that checks its parameters itself (tests and tools; every
    command of the firmware has a ``Params`` model). Rendered as "(checked by the handler)"."""

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
        return parse(self.name, self.params, body)


M = TypeVar("M", bound=BaseModel)


def parse(command: str, model: type[M], body: Any) -> M:
    """``body`` validated with ``model``, or ``BadRequest`` naming the first problem (``describe``)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise describe(command, model, exc) from None


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
    "model_type": "a JSON object",
    "list_type": "a list",
}
_RANGE = ("greater_than_equal", "less_than_equal", "greater_than", "less_than")


def _bounds(info: FieldInfo | None) -> tuple[Any, Any]:
    lo = hi = None
    for m in info.metadata if info is not None else ():
        lo = getattr(m, "ge", getattr(m, "gt", lo))
        hi = getattr(m, "le", getattr(m, "lt", hi))
    return lo, hi


def _members(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a union (``X | Y``, ``Optional``, nested unions flattened; a member keeps its
    ``Annotated`` tags), else the annotation itself."""
    bare = _bare(annotation)
    if get_origin(bare) not in (Union, UnionType):
        return (annotation,)
    return tuple(m for a in get_args(bare) for m in _members(a))


def _bare(annotation: Any) -> Any:
    """The type under ``Annotated[...]``."""
    return get_args(annotation)[0] if get_origin(annotation) is Annotated else annotation


def _model_field(model: Any, key: str) -> FieldInfo | None:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return None
    return next((f for n, f in model.model_fields.items() if (f.alias or n) == key), None)


def _optional_model(annotation: Any) -> Any:
    """The model of ``Model | None`` (its fields are the error's next path parts), else ``annotation``."""
    members = [_bare(m) for m in _members(annotation) if m is not NoneType]
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], BaseModel):
        return members[0]
    return annotation


def _tagged(annotation: Any, tag: str) -> Any:
    """The member of a tagged union (``Annotated[X, Tag(tag)] | ...``) that ``tag`` names, or None."""
    for member in _members(annotation):
        if get_origin(member) is Annotated and any(
            isinstance(m, Tag) and m.tag == tag for m in member.__metadata__
        ):
            return _bare(member)
    return None


def _locate(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, FieldInfo | None, Any]:
    """(the dotted path as the caller wrote it, the field's info, the model holding it) for an error's
    ``loc``; union tags (pydantic's names for the alternative it tried) are not part of the path."""
    path: list[str] = []
    node: Any = model
    info: FieldInfo | None = None
    holder: Any = None
    for part in loc:
        node = _bare(node)
        if isinstance(part, int):
            args = [a for m in _members(node) for a in get_args(_bare(m))]
            node, info = (args[0] if args else None), None
            path.append(str(part))
            continue
        node = _optional_model(node)
        field = _model_field(node, part)
        if field is not None:
            holder, info, node = node, field, field.annotation
            path.append(part)
            continue
        member = _tagged(node, part)
        if member is not None:
            node = member
            continue
        holder, info, node = node, None, None
        path.append(str(part))
    return ".".join(path), info, holder


def _expected(info: FieldInfo | None, err: Any) -> str:
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
    if kind == "string_pattern_mismatch":
        return f"a string matching {ctx.get('pattern')}"
    if kind in ("too_long", "too_short"):
        most = "at most" if kind == "too_long" else "at least"
        limit = ctx.get("max_length" if kind == "too_long" else "min_length")
        return f"a list of {most} {limit} entries"
    is_int = info is not None and info.annotation is int
    if kind in _EXPECTED or kind in _RANGE:
        lo, hi = _bounds(info)
        what = _EXPECTED.get(kind) or ("an integer" if is_int else "a number")
        if lo is not None and hi is not None:
            return f"{what} {lo}-{hi}"
        if lo is not None:
            return f"{what} >= {lo}"
        if hi is not None:
            return f"{what} <= {hi}"
        return what
    msg = str(err["msg"])
    return msg[:1].lower() + msg[1:]


def _keys(model: Any) -> str:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return "none"
    return ", ".join(sorted(f.alias or n for n, f in model.model_fields.items())) or "none"


def by_name(*specs: CommandSpec) -> dict[str, CommandSpec]:
    """What ``commands()`` returns: the specs by name."""
    return {spec.name: spec for spec in specs}


def describe(command: str, model: type[BaseModel], exc: ValidationError) -> BadRequest:
    """The first problem as a 400 a platform operator can act on:
    ``switcher.route: input must be an integer >= 0, got 'two'``; a nested field is named by its path
    (``slots.0.start``)."""
    errors = exc.errors(include_url=False)
    extra = [_locate(model, e["loc"]) for e in errors if e["type"] == "extra_forbidden" and e["loc"]]
    if extra:
        holder = extra[0][2]
        paths = [path for path, _, h in extra if h is holder]
        where = "" if holder is model else f" in {paths[0].rpartition('.')[0]}"
        return BadRequest(
            f"{command}: unknown field(s) {', '.join(map(repr, paths))} (allowed{where}: {_keys(holder)})",
            field=paths[0],
        )
    err = errors[0]
    if not err["loc"]:  # the body itself: a list, a string, a number
        return BadRequest(f"{command}: params must be a JSON object, got {type(err.get('input')).__name__}")
    field, info, _ = _locate(model, err["loc"])
    if err["type"] == "missing":
        return BadRequest(f"{command}: missing field {field!r}", field=field)
    if err["type"] == "value_error":  # a validator's own sentence says what is wrong
        return BadRequest(f"{command}: {field}: {err.get('ctx', {}).get('error', err['msg'])}", field=field)
    return BadRequest(
        f"{command}: {field} must be {_expected(info, err)}, got {shown(err.get('input'))}", field=field
    )


def shown(value: Any) -> str:
    """``value`` as an error message quotes it: its repr, cut to 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def body_of(params: BaseModel) -> dict[str, Any]:
    """What the caller sent, validated (fields it left out stay out)."""
    return params.model_dump(exclude_unset=True)


def _kind(annotation: Any) -> str:
    """A field's type for the command table: ``int``, ``"a" or "b"``, ``list of {`id`: str}``."""
    annotation = _bare(annotation)
    if get_origin(annotation) is Literal:
        return " or ".join(json.dumps(v) for v in get_args(annotation))
    members = [m for m in _members(annotation) if m is not NoneType]
    if len(members) > 1 or members[0] is not annotation:
        return " or ".join(_kind(m) for m in members)
    if get_origin(annotation) in (list, tuple):
        return f"list of {_kind(get_args(annotation)[0])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        inner = (
            f"`{f.alias or n}`{'' if f.is_required() else '?'}: {_kind(f.annotation)}"
            for n, f in annotation.model_fields.items()
        )
        return "{" + ", ".join(inner) + "}"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _fields(model: type[BaseModel]) -> str:
    if not issubclass(model, Params):
        return "(checked by the handler)"
    parts = [
        f"`{f.alias or name}`: {_kind(f.annotation)}" + ("" if f.is_required() else " (optional)")
        for name, f in model.model_fields.items()
    ]
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
