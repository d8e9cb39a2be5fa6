"""The core of a visit: waking the kiosk, the catalog, identification, the language, ending, rating.

Screens: ``attract``, ``catalog``, ``identify``, ``confirm_identity``, ``rating``, ``ended``,
``unavailable``. The transitions shared by every flow (start, end, continuing once the identity is
known) are ``SessionMachine`` methods.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING, Any

from appliance.session.effects import DropDocument, Effect, Emit
from appliance.session.errors import IntentRejected
from appliance.session.flows import IntentHandler, SessionCommand, SessionParams, call, card
from appliance.session.state import (
    LANGS,
    MAX_INTENT_TEXT,
    RATING_REASONS,
    Doc,
    Screen,
    Session,
    department_view,
    item_view,
)
from kiosk_core.commands import NoParams
from kiosk_core.errors import Conflict

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine

# --- views and offers --------------------------------------------------------------------------------


def attract_view(m: SessionMachine) -> dict[str, Any]:
    return {"site": m.site, "catalog_version": m.catalog.version}


def ended_view(m: SessionMachine) -> dict[str, Any]:
    """``outcome``: the clerk's decision if there was one (``rejected`` is not "completed");
    ``card_on_reader``: the card is still on the reader (say "take your card" louder);
    ``reminders``: how often that was said (it changes, so the UI repeats it)."""
    return {
        "reason": m.ended_reason,
        "outcome": m.ended_outcome,
        "card_on_reader": m.card_on_reader,
        "reminders": m.card_reminders,
    }


def unavailable_view(m: SessionMachine) -> dict[str, Any]:
    return {"reason": "restart"}


def standby_view(m: SessionMachine) -> dict[str, Any]:
    """``standby``: the room's other terminal serves the villagers (failover); nothing to do here."""
    return {"site": m.site}


def catalog_view(m: SessionMachine) -> dict[str, Any]:
    s = m.session
    assert s is not None
    dep = s.department
    items = m.catalog.items_of(dep.id) if dep else []
    return {
        "version": m.catalog.version,
        "departments": m.catalog.departments_view(),
        "department": department_view(dep),
        "items": [
            {
                "id": i.id,
                "name": i.name.as_dict(),
                "document_count": len(i.documents),
                "minutes": i.minutes,
            }
            for i in items
        ],
    }


def catalog_offers(m: SessionMachine) -> Container[str]:
    chosen = m.session is not None and m.session.department is not None
    return {"select_department", "progress", "appointment", "end"} | (
        {"select_item", "back"} if chosen else set()
    )


def identify_view(m: SessionMachine) -> dict[str, Any]:
    s = m.session
    assert s is not None
    return {
        "item": item_view(s.item) if s.purpose == "apply" else None,
        "department": department_view(s.department) if s.purpose == "appointment" else None,
        "next": s.next_after_confirm,
    }


def confirm_identity_view(m: SessionMachine) -> dict[str, Any]:
    s = m.session
    assert s is not None
    return {"next": s.next_after_confirm}


def rating_view(m: SessionMachine) -> dict[str, Any]:
    s = m.session
    assert s is not None
    return {
        "scores": [1, 2, 3, 4, 5],
        "reasons": list(RATING_REASONS),
        "clerk": s.call.clerk if s.call else None,
    }


# --- intents -----------------------------------------------------------------------------------------


def wake(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    return m._start_session("touch")


def touch(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    return []


def language(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    lang = body.get("lang")
    if lang not in LANGS:
        raise IntentRejected(f"language: lang must be one of {', '.join(LANGS)}")
    m.lang = lang
    return []


def choose_department(m: SessionMachine, body: dict[str, Any]) -> Session:
    """``select_department``'s common part: the department becomes the session's."""
    s = m._session()
    dep_id = body.get("department_id")
    dep = m.catalog.department(dep_id) if isinstance(dep_id, str) else None
    if dep is None:
        raise IntentRejected(f"select_department: unknown department_id {dep_id!r}")
    s.department = dep
    return s


def select_department(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    """On the catalog: show the department's items."""
    choose_department(m, body)
    return []


def select_item(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s = m._session()
    item_id = body.get("item_id")
    item = m.catalog.item(item_id) if isinstance(item_id, str) else None
    if item is None or s.department is None or item.department != s.department.id:
        raise IntentRejected(f"select_item: {item_id!r} is not an item of the chosen department")
    effects: list[Effect] = []
    old = {d.doc_id: d for d in s.checklist}
    s.item, s.purpose = item, "apply"
    s.checklist = []
    for spec in item.documents:
        if card.from_chip(spec):  # the card on the reader gives it: no photo of the card is asked for
            continue
        kept = old.pop(spec.id, None)
        s.checklist.append(
            Doc(
                spec.id,
                spec.name.as_dict(),
                spec.required,
                image=kept.image if kept and not kept.stale else None,
                card_photo=spec.card_photo,
            )
        )
    # Images of the previous item that this one does not need are deleted at once.
    effects += [DropDocument(s.id, d.doc_id) for d in old.values() if d.image is not None]
    effects.append(
        Emit(
            "session.item.selected",
            {
                "session_id": s.id,
                "item_id": item.id,
                "department_id": item.department,
                "catalog_version": m.catalog.version,
            },
        )
    )
    return effects + m._identified_next(s, "documents")


def catalog_back(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    """On the catalog: back to the list of departments."""
    m._session().department = None
    return []


def identify_back(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    """On ``identify``: back to where the villager chose what to do."""
    s = m._session()
    m._go(Screen.APPOINTMENT if s.purpose == "appointment" else Screen.CATALOG)
    if s.purpose == "appointment":
        s.appointment_phase = "department"
    return []


def confirm(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s = m._session()
    s.identity_confirmed = True
    return [
        Emit("session.identity.confirmed", {"session_id": s.id, "id_masked": s.id_masked}),
        *m._after_confirm(s),
    ]


def not_me(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s = m._session()
    s.name = s.id_masked = s.id_number = None
    s.card_data = None
    s.identity_confirmed = False
    m._go(Screen.IDENTIFY)
    return [Emit("session.identity.rejected", {"session_id": s.id})]


def rate(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s = m._session()
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
        raise IntentRejected("rate: score must be an integer 1..5")
    reason = body.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason.strip()) > MAX_INTENT_TEXT):
        raise IntentRejected(f"rate: reason must be null or a text of at most {MAX_INTENT_TEXT} characters")
    reason = reason.strip() or None if isinstance(reason, str) else None
    clerk = s.call.clerk if s.call and s.call.clerk else {}
    rated = Emit(
        "session.rated",
        {
            "session_id": s.id,
            "score": score,
            "reason": reason,
            "clerk_id": clerk.get("id"),
            "item_id": s.item.id if s.item else None,
        },
    )
    return [rated, *m._end("completed")]


def finish(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    """``skip`` on the rating, ``done`` on a booked appointment: the session is complete."""
    return m._end("completed")


def end(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    return call.hang_up_or_end(m, "cancelled")


INTENTS: dict[str, IntentHandler] = {
    "wake": wake,
    "touch": touch,
    "still_here": touch,
    "language": language,
    "select_item": select_item,
    "confirm": confirm,
    "not_me": not_me,
    "rate": rate,
    "skip": finish,
    "end": end,
}

# --- platform commands -------------------------------------------------------------------------------


def status(m: SessionMachine, params: NoParams) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session
    if s is None:
        return {
            "screen": m.screen.value,
            "session_id": None,
            "purpose": None,
            "item_id": None,
            "documents": [],
            "call": None,
        }, []
    docs = [
        {
            "doc_id": d.doc_id,
            "status": d.status,
            "sha256": (d.image or {}).get("sha256"),
            "bytes": (d.image or {}).get("bytes"),
        }
        for d in s.checklist
    ]
    call_view = {"status": s.call.status, "clerk_id": (s.call.clerk or {}).get("id")} if s.call else None
    return {
        "screen": m.screen.value,
        "session_id": s.id,
        "purpose": s.purpose,
        "item_id": s.item.id if s.item else None,
        "documents": docs,
        "call": call_view,
    }, []


def identity_get(m: SessionMachine, params: SessionParams) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params.session_id)
    if not s.identity_confirmed:
        raise Conflict("the villager has not confirmed an identity in this session")
    if s.card_data is None:  # resumed from the other terminal, which kept the chip's data to itself
        raise Conflict(
            "the card was read on the other terminal before the failover; ask the villager to place "
            "the ID card on the reader again, then ask again",
            card_needed=True,
        )
    return dict(s.card_data), []


COMMANDS: dict[str, SessionCommand] = {
    "session.status": SessionCommand(
        "the running session: screen, ids, call state (no personal data)", NoParams, status
    ),
    "session.identity.get": SessionCommand(
        "the villager's identity as read from the card (personal)", SessionParams, identity_get
    ),
}
