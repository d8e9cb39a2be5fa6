"""The session's screens as a table: one frozen ``ScreenSpec`` per ``Screen``.

What the villager may do on a screen, what the screen shows, whether the idle timer runs there and what
taking the card away does are read from here by ``SessionMachine`` (``actions()``, ``view()``,
``tick()``/``next_wakeup()``/``countdown()`` and ``card_removed()``). The functions named live with
their flow in ``appliance.session.flows``.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from appliance.session.config import SessionConfig
from appliance.session.effects import Effect
from appliance.session.flows import (
    IntentHandler,
    appointment,
    call,
    card,
    documents,
    progress,
    technician,
    visit,
)
from appliance.session.state import Screen, Session

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine


def session_idle(config: SessionConfig) -> float:
    """The villager's idle timeout (the session ends; the countdown shows ``idle_warning_s`` before)."""
    return config.idle_timeout_s


@dataclass(frozen=True)
class ScreenSpec:
    """One screen's behaviour.

    ``actions``: every intent the screen may offer, in the order the UI shows them (number keys follow
    it). ``offers``, where the choice depends on the state, says which of them are offered now.
    ``villager``: a villager's screen, which also offers ``language`` (last) and, during the idle
    countdown, ``still_here`` (first).
    ``view``: the screen's part of ``view()`` (its ``view`` key).
    ``idle_timeout``: the idle timer runs on this screen with this timeout, except while a clerk is
    connected; None: it does not run.
    ``card_guard``: what taking the card away does here, after the machine marked the card absent
    (and, before the identity was confirmed, forgot the candidate); None: nothing more.
    ``handlers``: this screen's own handlers of intents that mean different things on different
    screens (``back``, ``retry``, ``done``, ``select_department``); every other intent has one handler,
    in its flow's ``INTENTS``.
    """

    view: Callable[[SessionMachine], dict[str, Any]]
    actions: tuple[str, ...] = ()
    offers: Callable[[SessionMachine], Container[str]] | None = None
    villager: bool = True
    idle_timeout: Callable[[SessionConfig], float] | None = None
    card_guard: Callable[[SessionMachine, Session], list[Effect]] | None = None
    handlers: Mapping[str, IntentHandler] = field(default_factory=dict)


SCREENS: Mapping[Screen, ScreenSpec] = MappingProxyType(
    {
        Screen.ATTRACT: ScreenSpec(visit.attract_view, ("wake",)),
        Screen.CATALOG: ScreenSpec(
            visit.catalog_view,
            ("select_department", "select_item", "back", "progress", "appointment", "end"),
            offers=visit.catalog_offers,
            idle_timeout=session_idle,
            handlers={"select_department": visit.select_department, "back": visit.catalog_back},
        ),
        Screen.IDENTIFY: ScreenSpec(
            visit.identify_view,
            ("back", "end"),
            idle_timeout=session_idle,
            handlers={"back": visit.identify_back},
        ),
        Screen.CONFIRM_IDENTITY: ScreenSpec(
            visit.confirm_identity_view,
            ("confirm", "not_me", "end"),
            idle_timeout=session_idle,
            card_guard=card.ask_again,
        ),
        Screen.CARD_REMOVED: ScreenSpec(card.card_removed_view, ("end",), idle_timeout=session_idle),
        Screen.DOCUMENTS: ScreenSpec(
            documents.documents_view,
            ("capture", "call", "back", "end"),
            offers=documents.documents_offers,
            idle_timeout=session_idle,
            card_guard=card.hold,
            handlers={"back": documents.documents_back},
        ),
        Screen.CAPTURE: ScreenSpec(
            documents.capture_view,
            ("shoot", "accept", "retake", "back", "end"),
            offers=documents.capture_offers,
            idle_timeout=session_idle,
            card_guard=documents.abandon_capture,
            handlers={"back": documents.capture_back},
        ),
        Screen.CALL_WAITING: ScreenSpec(
            call.call_waiting_view,
            ("call", "appointment", "cancel_call", "end"),
            offers=call.call_waiting_offers,
            idle_timeout=session_idle,
            card_guard=card.hold,
        ),
        Screen.CALL: ScreenSpec(
            call.call_view,
            ("capture", "reply", "end"),
            offers=call.call_offers,
            idle_timeout=session_idle,
            card_guard=card.hold,
        ),
        Screen.RECEIPT: ScreenSpec(call.receipt_view, ("continue",), idle_timeout=session_idle),
        Screen.REJECTED: ScreenSpec(
            call.rejected_view,
            ("call", "appointment", "continue"),
            idle_timeout=session_idle,
        ),
        Screen.RATING: ScreenSpec(visit.rating_view, ("rate", "skip"), idle_timeout=session_idle),
        Screen.PROGRESS: ScreenSpec(
            progress.progress_view,
            ("retry", "end", "done"),
            offers=progress.progress_offers,
            idle_timeout=session_idle,
            handlers={"retry": progress.retry, "done": progress.done},
        ),
        Screen.APPOINTMENT: ScreenSpec(
            appointment.appointment_view,
            ("select_department", "book", "retry", "back", "end", "done"),
            offers=appointment.appointment_offers,
            idle_timeout=session_idle,
            handlers={
                "select_department": appointment.select_department,
                "retry": appointment.retry,
                "back": appointment.back,
                "done": visit.finish,
            },
        ),
        Screen.ENDED: ScreenSpec(visit.ended_view, ("wake",)),
        Screen.TECHNICIAN_PIN: ScreenSpec(
            technician.pin_view,
            ("technician_pin", "technician_end_session", "technician_exit"),
            offers=technician.pin_offers,
            villager=False,
        ),
        Screen.TECHNICIAN: ScreenSpec(
            technician.technician_view,
            ("technician_test", "technician_refresh", "technician_exit"),
            villager=False,
        ),
        Screen.UNAVAILABLE: ScreenSpec(visit.unavailable_view, villager=False),
        Screen.STANDBY: ScreenSpec(visit.standby_view, villager=False),
    }
)
