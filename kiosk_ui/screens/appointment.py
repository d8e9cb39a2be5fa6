"""``appointment`` (预约): choose a department, then a time slot, then see the booking with its QR code."""

from __future__ import annotations

import datetime as dt
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical

from kiosk_ui.qr import QrError, qr_text
from kiosk_ui.screens.base import Entity, KioskScreen, View, as_dict, as_list
from kiosk_ui.widgets.plain import Plain


def slot_when(view: View, slot: Any) -> str:
    """ "2026-11-23T09:00:00+08:00".."09:20" -> "11月23日 星期一 上午 09:00-09:20" (the weekday and the
    half of the day in the slot's own time zone, as the platform wrote it); anything unparseable is
    shown as given."""
    slot = as_dict(slot)
    start, end = str(slot.get("start", "")), str(slot.get("end", ""))
    try:
        begin = dt.datetime.fromisoformat(start)
        finish = dt.datetime.fromisoformat(end) if end else None
    except ValueError:
        return start
    return view.catalog(
        "appointment.when",
        month=begin.month,
        day=begin.day,
        weekday=view.catalog(f"appointment.weekday.{begin.weekday()}"),
        half=view.catalog("appointment.half.am" if begin.hour < 12 else "appointment.half.pm"),
        start=f"{begin:%H:%M}",
        end=f"{finish:%H:%M}" if finish else "",
    )


def slot_label(view: View, slot: Any, *, place: bool = True) -> str:
    """A slot's button: when, who and (unless every slot shares it, said once above) where."""
    d = as_dict(slot)
    parts = [slot_when(view, d)]
    if d.get("official"):
        parts.append(str(d["official"]))
    if place and d.get("place"):
        parts.append(str(d["place"]))
    return "  ".join(parts)


def shared_place(slots: list[Any]) -> str | None:
    """The one place every slot is at, if they all name the same one."""
    places = {as_dict(s).get("place") for s in slots}
    if len(places) == 1:
        (only,) = places
        return only if isinstance(only, str) and only else None
    return None


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
            place = shared_place(slots)
            if place:
                yield Plain(self.t("appointment.place", place=place), classes="detail")
            if "book" in self.view.actions:
                entities = [
                    Entity(
                        slot_label(self.view, s, place=place is None),
                        "book",
                        {"slot_id": as_dict(s).get("slot_id")},
                    )
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
                    slot = as_dict(booking.get("slot"))
                    yield Plain(
                        self.t("appointment.booked_time", when=slot_when(self.view, slot)), classes="message"
                    )
                    if slot.get("place"):
                        yield Plain(self.t("appointment.place", place=slot["place"]), classes="message")
                    if slot.get("official"):
                        yield Plain(
                            self.t("appointment.booked_official", official=slot["official"]),
                            classes="detail",
                        )
                    yield Plain(self.t("appointment.bring_id"), classes="message", id="bring-id")
                    if as_dict(data.get("print")).get("status") == "failed":
                        yield Plain(self.t("print.failed"), classes="message", id="print-failed")
                    yield from self.choice_area()
            return
        else:
            yield Plain(self.word("appointment.phase", phase), classes="big-message", id="appointment-phase")
        yield from self.choice_area(entities)
