"""The flows of the villager's session, one module each.

A flow module holds the view and offer functions of its screens (tied to the screens by
``appliance.session.screens``), its UI intent handlers (``INTENTS``) and its platform commands
(``COMMANDS``: one ``SessionCommand`` each, the pydantic model of its parameters next to its handler).
Handlers take the machine as their first argument: they are ``SessionMachine``'s implementation, so they
use its underscore helpers (``_go``, ``_end``, ``_session``, ``_identified_next``) as its methods would.
Flows import the machine only for type checking.

The field types every command shares are here: ``SessionParams`` (the ``session_id`` of the current
session), ``trimmed`` text and the ``LocalizedName`` a clerk may give as one string or in both languages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Discriminator, Field, StringConstraints, Tag

from appliance.session.catalog import LocalText
from appliance.session.effects import Effect
from appliance.session.state import SESSION_ID
from kiosk_core.commands import Params

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine

# A UI intent: the screen check already passed; raise ``IntentRejected`` before changing anything.
IntentHandler = Callable[["SessionMachine", dict[str, Any]], list[Effect]]
# A platform command: its validated parameters in, (reply body, effects) out, or raise ``CommandError``
# before changing anything. Only what depends on live state (is there a call, which session is
# current, which documents exist) is left for the handler to check.
CommandHandler = Callable[["SessionMachine", Any], tuple[dict[str, Any], list[Effect]]]


@dataclass(frozen=True)
class SessionCommand:
    """One platform command of the session: what it does, the model its parameters must fit (the
    dispatcher and ``SessionMachine.command`` both validate with it) and its handler."""

    summary: str
    params: type[Params]
    handler: CommandHandler


def trimmed(max_len: int) -> StringConstraints:
    """Text of 1 to ``max_len`` characters once surrounding blanks are stripped (they are)."""
    return StringConstraints(strip_whitespace=True, min_length=1, max_length=max_len)


def text_or(model: type[BaseModel], expected: str, *text: Any) -> Any:
    """The type of a field that takes a string (with ``text``'s constraints) or a ``model`` object,
    told apart by the JSON type so a problem is reported for the form the caller chose; anything else
    is a 400 saying ``expected``."""

    def form(value: Any) -> str | None:
        # called on the JSON value when validating, on the model when serialising
        if isinstance(value, str):
            return "text"
        return "object" if isinstance(value, dict | model) else None

    return Annotated[
        Annotated[str, Tag("text"), *text] | Annotated[model, Tag("object")],
        Discriminator(form, custom_error_type="text_or_object", custom_error_message=expected),
    ]


# A name as one string for both languages, or ``{"zh-CN": ..., "en": ...}`` (each 1-60 characters).
LocalizedName = text_or(LocalText, 'a string or {"zh-CN": ..., "en": ...}', trimmed(60))


class SessionParams(Params):
    """Parameters of a command that acts on the current session (it names it)."""

    session_id: str = Field(pattern=SESSION_ID.pattern)
