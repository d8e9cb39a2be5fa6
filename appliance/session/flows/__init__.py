"""The flows of the villager's session, one module each.

A flow module holds the view and offer functions of its screens (tied to the screens by
``appliance.session.screens``), its UI intent handlers (``INTENTS``) and its platform command handlers
(``COMMANDS``). Handlers take the machine as their first argument: they are ``SessionMachine``'s
implementation, so they use its underscore helpers (``_go``, ``_end``, ``_session``,
``_identified_next``) as its methods would. Flows import the machine only for type checking.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance.session.effects import Effect

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine

# A UI intent: the screen check already passed; raise ``IntentRejected`` before changing anything.
IntentHandler = Callable[["SessionMachine", dict[str, Any]], list[Effect]]
# A platform command: (reply body, effects), or raise ``CommandError`` before changing anything.
CommandHandler = Callable[["SessionMachine", dict[str, Any]], tuple[dict[str, Any], list[Effect]]]
