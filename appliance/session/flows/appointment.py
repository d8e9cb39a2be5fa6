"""Booking a time at a township or county department (预约), or instead of an unanswered call.

Screen: ``appointment`` (department, loading, slots, booking, booked, declined or failed). The kiosk
asks for slots and for a booking with fleet events; the platform answers with the
``session.appointment.*`` commands within ``platform_timeout_s``.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from appliance.session import printing
from appliance.session.effects import Effect, Emit
from appliance.session.errors import IntentRejected
from appliance.session.flows import IntentHandler, SessionCommand, SessionParams, call, trimmed, visit
from appliance.session.state import Screen, Session, department_view
from kiosk_core.commands import Params
from kiosk_core.errors import Conflict

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine


def appointment_view(m: SessionMachine) -> dict[str, Any]:
    s = m.session
    assert s is not None
    return {
        "phase": s.appointment_phase,
        "departments": m.catalog.departments_view(),
        "department": department_view(s.department),
        "slots": s.slots,
        "booking": s.booking,
        "print": printing.print_view(s, "appointment"),
    }


def appointment_offers(m: SessionMachine) -> Container[str]:
    s = m.session
    if s is None:
        return ()
    book = {"book"} if s.slots else set()
    return {
        "department": {"select_department", "back", "end"},
        "loading": {"end"},
        "slots": book | {"back", "end"},
        "booking": {"end"},
        "booked": {"done"},
        "declined": book | {"back", "end"},
        "failed": {"retry", "end"},
    }[s.appointment_phase]


def request_slots(m: SessionMachine, s: Session) -> list[Effect]:
    """Ask the platform for the chosen department's free slots and wait on ``appointment``."""
    assert s.department is not None
    s.appointment_phase, s.slots, s.chosen_slot = "loading", [], None
    s.waiting_since = m.clock.monotonic()
    m._go(Screen.APPOINTMENT)
    return [
        Emit(
            "session.appointment.requested",
            {"session_id": s.id, "department_id": s.department.id, "id_masked": s.id_masked},
        )
    ]


# --- intents -----------------------------------------------------------------------------------------


def appointment(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s = m._session()
    effects: list[Effect] = []
    dep = None
    if m.screen is Screen.CALL_WAITING:  # nobody answered: book a time with that department instead
        effects.append(Emit("session.call.cancelled", {"session_id": s.id, "waited_s": call.waited(m, s)}))
        s.call = None
        dep = m.catalog.department(s.item.department) if s.item else None
    elif m.screen is Screen.REJECTED:  # not accepted: book a visit to that department's window
        dep = m.catalog.department(s.item.department) if s.item else None
    s.purpose, s.department = "appointment", dep
    if dep is not None:
        return effects + m._identified_next(s, "appointment")
    s.appointment_phase = "department"
    m._go(Screen.APPOINTMENT)
    return effects


def select_department(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    """On ``appointment``: the department chosen, ask for its slots (identifying first)."""
    s = visit.choose_department(m, body)
    return m._identified_next(s, "appointment")


def book(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s = m._session()
    slot_id = body.get("slot_id")
    if not any(sl["slot_id"] == slot_id for sl in s.slots):
        raise IntentRejected(f"book: {slot_id!r} is not one of the offered slots")
    assert s.department is not None
    s.chosen_slot, s.appointment_phase = slot_id, "booking"
    s.waiting_since = m.clock.monotonic()
    m.notice = None
    return [
        Emit(
            "session.appointment.book_requested",
            {"session_id": s.id, "department_id": s.department.id, "slot_id": slot_id},
        )
    ]


def retry(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    return request_slots(m, m._session())


def back(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    """Back to the departments, or from the departments to the catalog."""
    s = m._session()
    if s.appointment_phase == "department":
        s.department = None
        m._go(Screen.CATALOG)
    else:
        s.appointment_phase, s.slots, s.chosen_slot, s.waiting_since = "department", [], None, None
        m.notice = None
    return []


INTENTS: dict[str, IntentHandler] = {"appointment": appointment, "book": book}

# --- platform commands -------------------------------------------------------------------------------


class Slot(Params):
    slot_id: Annotated[str, trimmed(64)]
    start: Annotated[str, trimmed(40)]
    end: Annotated[str, trimmed(40)]
    official: Annotated[str, trimmed(40)] | None = None
    place: Annotated[str, trimmed(60)] | None = None  # where to go (shown with the slot and the booking)


Slots = Annotated[list[Slot], Field(max_length=50)]


def _offered(slots: list[Slot]) -> list[dict[str, Any]]:
    """The slots as the screen shows them (``official`` and ``place`` null when not given)."""
    return [sl.model_dump() for sl in slots]


class SlotsParams(SessionParams):
    department_id: Annotated[str, trimmed(64)]
    slots: Slots


class ConfirmedParams(SessionParams):
    slot_id: Annotated[str, trimmed(64)]
    booking_no: Annotated[str, trimmed(64)]
    qr_text: Annotated[str, trimmed(512)] | None = None


class DeclinedParams(SessionParams):
    slot_id: Annotated[str, trimmed(64)]
    reason: Annotated[str, trimmed(200)]
    slots: Slots | None = None  # a fresh list instead of the offered ones without this slot


def _need_booking(m: SessionMachine, s: Session, slot_id: str) -> str:
    if (
        m.screen is not Screen.APPOINTMENT
        or s.appointment_phase not in ("booking", "failed")
        or s.chosen_slot is None
    ):
        raise Conflict(f"no booking is waiting for an answer (screen {m.screen.value})")
    if slot_id != s.chosen_slot:
        raise Conflict(f"slot_id {slot_id!r} is not the slot the villager asked for")
    return slot_id


def slots(m: SessionMachine, params: SlotsParams) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params.session_id)
    dep_id = params.department_id
    if m.screen is not Screen.APPOINTMENT or s.appointment_phase not in ("loading", "failed"):
        raise Conflict(f"no appointment request is waiting for slots (screen {m.screen.value})")
    if s.department is None or s.department.id != dep_id:
        raise Conflict(f"department_id {dep_id!r} is not the department the villager chose")
    s.slots, s.appointment_phase, s.waiting_since = _offered(params.slots), "slots", None
    m.notice = None
    return {"ok": True}, []


def confirmed(m: SessionMachine, params: ConfirmedParams) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params.session_id)
    booking_no = params.booking_no
    slot_id = _need_booking(m, s, params.slot_id)
    slot = next(sl for sl in s.slots if sl["slot_id"] == slot_id)
    s.booking = {"booking_no": booking_no, "slot": slot, "qr_text": params.qr_text or booking_no}
    s.appointment_phase, s.waiting_since = "booked", None
    m.notice = None
    assert s.department is not None
    effects: list[Effect] = [printing.booking_receipt(m, s)] if m.printer else []
    return {"ok": True}, [
        *effects,
        Emit(
            "session.appointment.booked",
            {
                "session_id": s.id,
                "booking_no": booking_no,
                "slot_id": slot_id,
                "department_id": s.department.id,
            },
        ),
    ]


def declined(m: SessionMachine, params: DeclinedParams) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params.session_id)
    slot_id = _need_booking(m, s, params.slot_id)
    fresh = _offered(params.slots) if params.slots is not None else None
    s.slots = fresh if fresh is not None else [sl for sl in s.slots if sl["slot_id"] != slot_id]
    s.chosen_slot, s.appointment_phase, s.waiting_since = None, "declined", None
    m.notice = {"code": "slot_taken", "params": {"reason": params.reason}}
    return {"ok": True}, []


COMMANDS: dict[str, SessionCommand] = {
    "session.appointment.slots": SessionCommand(
        "appointment slots offered to the villager", SlotsParams, slots
    ),
    "session.appointment.confirmed": SessionCommand(
        "a booked appointment is confirmed", ConfirmedParams, confirmed
    ),
    "session.appointment.declined": SessionCommand(
        "a requested slot is not available", DeclinedParams, declined
    ),
}
