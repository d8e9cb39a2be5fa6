"""The session's data: screens, the villager's session, the technician's visit, and their limits.

Personal data (the card's name and full number, the clerk's messages, captured documents' facts)
lives only in ``Session``; ending a session drops the object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from appliance.session.catalog import Department, Item, LocalText


class Screen(StrEnum):
    ATTRACT = "attract"
    CATALOG = "catalog"
    IDENTIFY = "identify"
    CONFIRM_IDENTITY = "confirm_identity"
    CARD_REMOVED = "card_removed"
    DOCUMENTS = "documents"
    CAPTURE = "capture"
    CALL_WAITING = "call_waiting"
    CALL = "call"
    RECEIPT = "receipt"
    REJECTED = "rejected"
    RATING = "rating"
    PROGRESS = "progress"
    APPOINTMENT = "appointment"
    ENDED = "ended"
    TECHNICIAN_PIN = "technician_pin"
    TECHNICIAN = "technician"
    UNAVAILABLE = "unavailable"
    STANDBY = "standby"  # the other terminal of the room is active (failover): this one waits


LANGS = ("zh-CN", "en")
RATING_REASONS = ("fast", "clear", "polite", "slow", "unclear", "not_solved")
END_REASONS = ("completed", "cancelled", "idle_timeout", "clerk_ended", "technician", "restart")
MAX_INTENT_TEXT = 200
APPLICATION_NO = re.compile(r"^[A-Za-z0-9-]{1,64}$")
SESSION_ID = re.compile(r"^s-[0-9a-f]{16}$")


def localized(name: str | dict[str, str] | LocalText) -> dict[str, str]:
    """A name in both languages; one string serves both."""
    if isinstance(name, LocalText):
        return name.as_dict()
    return dict(name) if isinstance(name, dict) else {"zh-CN": name, "en": name}


@dataclass
class Doc:
    """One line of the checklist. ``image`` is the accepted capture's facts (sha256, bytes, mime)."""

    doc_id: str
    name: dict[str, str]
    required: bool
    requested_by_clerk: bool = False
    note: str | None = None
    image: dict[str, Any] | None = None
    stale: bool = False  # the clerk asked for it again: the image stays until replaced
    card_photo: bool = False  # the catalog says this paper is the ID card itself, photographed

    @property
    def status(self) -> str:
        return "captured" if self.image is not None and not self.stale else "missing"

    def as_view(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "name": self.name,
            "required": self.required,
            "status": self.status,
            "requested_by_clerk": self.requested_by_clerk,
            "note": self.note,
            "image": self.image,
        }


@dataclass
class Capture:
    doc_id: str
    return_to: Screen
    phase: str = "preview"  # preview | capturing | review | failed
    attempt: int = 0
    image: dict[str, Any] | None = None


@dataclass
class Call:
    status: str = "requesting"  # requesting | queued | no_answer | connected | ended
    requested_at: float = 0.0
    position: int | None = None
    estimated_wait_s: int | None = None
    clerk: dict[str, Any] | None = None
    connected_at: float | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    # Where the call's media goes (the CallTarget of session.call.accepted, token and pin included):
    # memory only, handed to kiosk-media, never in a state or an event. None: a text-only call.
    media: dict[str, Any] | None = None
    # kiosk-media's report on that media ({state, reason, clerk_video, mic, speaker}), for the screen.
    media_state: dict[str, Any] | None = None


@dataclass
class Session:
    id: str
    started_at: float
    trigger: str
    purpose: str | None = None
    item: Item | None = None
    department: Department | None = None  # appointment
    # identity: personal data, dropped with the session
    name: str | None = None
    id_masked: str | None = None
    id_number: str | None = None
    card_data: dict[str, Any] | None = None
    identity_confirmed: bool = False
    card_present: bool = False
    next_after_confirm: str = "documents"
    checklist: list[Doc] = field(default_factory=list)
    capture: Capture | None = None
    call: Call | None = None
    clerk_connected: bool = False
    outcome: dict[str, Any] | None = None
    returns_to: Screen | None = None
    progress_phase: str = "loading"
    applications: list[dict[str, Any]] = field(default_factory=list)
    appointment_phase: str = "department"
    slots: list[dict[str, Any]] = field(default_factory=list)
    chosen_slot: str | None = None
    booking: dict[str, Any] | None = None
    # the receipt printer's job for this session: {job, status: printing|printed|failed, code}
    printing: dict[str, Any] | None = None
    waiting_since: float | None = None  # platform answer (progress/appointment) pending since
    requests: int = 0  # capture attempts
    doc_requests: int = 0  # documents the clerk added
    idle_warned: bool = False

    def doc(self, doc_id: str) -> Doc | None:
        return next((d for d in self.checklist if d.doc_id == doc_id), None)

    @property
    def documents_complete(self) -> bool:
        return all(d.status == "captured" for d in self.checklist if d.required)


@dataclass
class Technician:
    attempts_left: int
    locked_until: float | None = None
    last_input: float = 0.0
    # Where the PIN pad was opened from: a villager's session stays paused under it (not ended) and
    # comes back on leaving; None = attract.
    returns_to: Screen | None = None
    # The right PIN was given while a villager's session was paused: ending it waits for a confirm.
    confirm_end: bool = False
    status: dict[str, Any] = field(default_factory=dict)
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)


def item_view(item: Item | None) -> dict[str, Any] | None:
    return {"id": item.id, "name": item.name.as_dict()} if item is not None else None


def department_view(dep: Department | None) -> dict[str, Any] | None:
    return {"id": dep.id, "name": dep.name.as_dict()} if dep is not None else None
