"""``appointment`` (预约): choose a department, then a time slot, then see the booking with its QR code."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical

from kiosk_ui.qr import QrError, qr_text
from kiosk_ui.screens.base import Entity, KioskScreen, View, as_dict, as_list
from kiosk_ui.widgets.plain import Plain


def slot_label(view: View, slot: Any) -> str:
    slot = as_dict(slot)
    start, end = str(slot.get("start", "")), str(slot.get("end", ""))
    # "2026-11-23T09:00:00+08:00" -> "11-23 09:00-09:20"; anything else is shown as given.
    when = f"{start[5:10]} {start[11:16]}-{end[11:16]}" if len(start) >= 16 and len(end) >= 16 else start
    official = slot.get("official")
    return view.catalog("appointment.slot", when=when, official=official) if official else when


class AppointmentScreen(KioskScreen):
    SCREEN = "appointment"
    TITLE_KEY = "appointment.title"
    ENTITY_ACTIONS = frozenset({"select_department", "book"})

    def body(self) -> ComposeResult:
        data = self.view.data
        phase = str(data.get("phase") or "department")
        dept = as_dict(data.get("department"))
        if dept:
            yield Plain(
                self.t("appointment.department", name=self.view.pick(dept.get("name"))), classes="message"
            )
        entities: list[Entity] = []
        if phase == "department":
            yield Plain(self.t("appointment.choose_department"), classes="message")
            for d in as_list(data.get("departments")):
                d = as_dict(d)
                entities.append(
                    Entity(
                        self.view.pick(d.get("name"), str(d.get("id", "?"))),
                        "select_department",
                        {"department_id": d.get("id")},
                    )
                )
        elif phase in ("slots", "declined"):
            slots = as_list(data.get("slots"))
            yield Plain(
                self.t("appointment.choose_slot" if slots else "appointment.no_slots"), classes="message"
            )
            if "book" in self.view.actions:
                entities = [
                    Entity(slot_label(self.view, s), "book", {"slot_id": as_dict(s).get("slot_id")})
                    for s in slots
                ]
        elif phase == "booked":
            booking = as_dict(data.get("booking"))
            with Horizontal(id="receipt"):
                if booking.get("qr_text"):
                    try:
                        yield Plain(qr_text(str(booking["qr_text"])), id="qr")
                    except QrError:
                        pass
                with Vertical():
                    yield Plain(self.t("appointment.booked"), classes="message")
                    yield Plain(str(booking.get("booking_no", "")), classes="big-message", id="booking-no")
                    yield Plain(slot_label(self.view, booking.get("slot")), classes="message")
                    if as_dict(data.get("print")).get("status") == "failed":
                        yield Plain(self.t("print.failed"), classes="message", id="print-failed")
                    yield from self.choice_area()
            return
        else:
            yield Plain(self.word("appointment.phase", phase), classes="big-message", id="appointment-phase")
        yield from self.choice_area(entities)
