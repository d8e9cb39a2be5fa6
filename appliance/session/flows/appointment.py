"""Booking a time at a township or county department (预约), or instead of an unanswered call.

Screen: ``appointment`` (department, loading, slots, booking, booked, declined or failed). The kiosk
asks for slots and for a booking with fleet events; the platform answers with the
``session.appointment.*`` commands within ``platform_timeout_s``.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING, Any

from appliance.session.effects import Effect, Emit
from appliance.session.errors import IntentRejected
from appliance.session.flows import CommandHandler, IntentHandler, call, visit
from appliance.session.params import objects_param, text_param
from appliance.session.state import Screen, Session, department_view
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


def _parse_slots(params: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "slot_id": text_param(sl, "slot_id", max_len=64),
            "start": text_param(sl, "start", max_len=40),
            "end": text_param(sl, "end", max_len=40),
            "official": text_param(sl, "official", max_len=40, required=False),
        }
        for sl in objects_param(params, "slots", max_len=50)
    ]


def _need_booking(m: SessionMachine, s: Session, params: dict[str, Any]) -> str:
    slot_id = text_param(params, "slot_id", max_len=64)
    if (
        m.screen is not Screen.APPOINTMENT
        or s.appointment_phase not in ("booking", "failed")
        or s.chosen_slot is None
    ):
        raise Conflict(f"no booking is waiting for an answer (screen {m.screen.value})")
    if slot_id != s.chosen_slot:
        raise Conflict(f"slot_id {slot_id!r} is not the slot the villager asked for")
    return slot_id


def slots(m: SessionMachine, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params)
    dep_id = text_param(params, "department_id", max_len=64)
    offered = _parse_slots(params)
    if m.screen is not Screen.APPOINTMENT or s.appointment_phase not in ("loading", "failed"):
        raise Conflict(f"no appointment request is waiting for slots (screen {m.screen.value})")
    if s.department is None or s.department.id != dep_id:
        raise Conflict(f"department_id {dep_id!r} is not the department the villager chose")
    s.slots, s.appointment_phase, s.waiting_since = offered, "slots", None
    m.notice = None
    return {"ok": True}, []


def confirmed(m: SessionMachine, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params)
    booking_no = text_param(params, "booking_no", max_len=64)
    qr = text_param(params, "qr_text", max_len=512, required=False)
    slot_id = _need_booking(m, s, params)
    slot = next(sl for sl in s.slots if sl["slot_id"] == slot_id)
    s.booking = {"booking_no": booking_no, "slot": slot, "qr_text": qr or booking_no}
    s.appointment_phase, s.waiting_since = "booked", None
    m.notice = None
    assert s.department is not None
    return {"ok": True}, [
        Emit(
            "session.appointment.booked",
            {
                "session_id": s.id,
                "booking_no": booking_no,
                "slot_id": slot_id,
                "department_id": s.department.id,
            },
        )
    ]


def declined(m: SessionMachine, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params)
    reason = text_param(params, "reason", max_len=200)
    fresh = _parse_slots(params) if "slots" in params else None
    slot_id = _need_booking(m, s, params)
    s.slots = fresh if fresh is not None else [sl for sl in s.slots if sl["slot_id"] != slot_id]
    s.chosen_slot, s.appointment_phase, s.waiting_since = None, "declined", None
    m.notice = {"code": "slot_taken", "params": {"reason": reason}}
    return {"ok": True}, []


COMMANDS: dict[str, CommandHandler] = {
    "session.appointment.slots": slots,
    "session.appointment.confirmed": confirmed,
    "session.appointment.declined": declined,
}
