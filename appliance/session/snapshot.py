"""What a standby terminal needs to resume the villager's session: the failover snapshot (issue 10).

``take(machine)`` turns the running session into a JSON-able dict; ``parse(data)`` validates one that
came from the peer terminal (strict pydantic: a hostile or truncated snapshot is refused with
``SnapshotInvalid`` naming the field, and nothing changes); ``restore(machine, snapshot)`` rebuilds the
``Session`` from it on this terminal. All three are pure (no I/O): ``SessionService`` calls them.

What is in it, and what deliberately is not (docs/session.md §10):

- the session id, the screen (and what that screen needs), the language, the item and department
  (their catalog entries themselves, so the peer's catalog version does not matter), the checklist
  with each accepted capture's reference ``{sha256, bytes, mime}`` (never the image);
- the identity only once the villager confirmed it: masked number, and the name (every screen of the
  session shows it, and the receipt prints it masked); never the full ID number, the card's other
  fields or its photo. A candidate not yet confirmed is not replicated: the backup asks for the card;
- the call: status, clerk, messages and the media target (token and pin included: the replication
  link is HMAC-authenticated on the room's wired LAN, docs/failover.md), the recording session id;
- timers as elapsed seconds (the two terminals' monotonic clocks are not the same clock), wall-clock
  ``started_at`` for information.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from appliance.config import CallTarget
from appliance.session.catalog import Department, Item
from appliance.session.errors import SnapshotInvalid
from appliance.session.flows.appointment import Slot
from appliance.session.state import (
    SESSION_ID,
    Call,
    Capture,
    Doc,
    Screen,
    Session,
)

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine

SNAPSHOT_VERSION = 1
SNAPSHOT_KIND = "kiosk.session.failover"
#: how many ids of sessions that ended on this terminal a snapshot carries (``ended_recently``)
ENDED_RECENTLY = 8


# The screens a session can be resumed on: every villager screen of a running session. (The technician's
# screens are not replicated: a session paused under the PIN pad resumes on the screen it paused on.)
ResumableScreen = Literal[
    "catalog",
    "identify",
    "confirm_identity",
    "card_removed",
    "documents",
    "capture",
    "call_waiting",
    "call",
    "receipt",
    "rejected",
    "rating",
    "progress",
    "appointment",
]
RESUMABLE: tuple[str, ...] = get_args(ResumableScreen)

Text = Annotated[str, StringConstraints(max_length=512)]
Short = Annotated[str, StringConstraints(max_length=64)]
Seconds = Annotated[float, Field(ge=0, le=7 * 86_400, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=1_000_000)]
SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID.pattern)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Names(_Strict):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)
    zh: Annotated[str, StringConstraints(max_length=200)] = Field(alias="zh-CN")
    en: Annotated[str, StringConstraints(max_length=200)]

    def as_dict(self) -> dict[str, str]:
        return {"zh-CN": self.zh, "en": self.en}


class ImageRef(_Strict):
    """An accepted capture, by reference: the image itself stays on the terminal that took it."""

    sha256: Sha256
    bytes: Annotated[int, Field(ge=1, le=1 << 30)]
    mime: Short


class DocSnap(_Strict):
    doc_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    name: Names
    required: bool
    requested_by_clerk: bool = False
    note: Text | None = None
    image: ImageRef | None = None
    stale: bool = False
    card_photo: bool = False


class IdentitySnap(_Strict):
    """A confirmed identity: what the screens show. No full number, no card fields, no photo."""

    id_masked: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=60)]
    card_present: bool


class CaptureSnap(_Strict):
    """A capture screen in progress; a picture taken but not yet accepted is not replicated."""

    doc_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    return_to: ResumableScreen


class DepartmentRefSnap(_Strict):
    id: Short
    name: Names


class ClerkSnap(_Strict):
    id: Short
    name: Short
    department: DepartmentRefSnap


class MessageSnap(_Strict):
    sender: Literal["clerk", "villager"] = Field(alias="from")
    text: Annotated[str, StringConstraints(max_length=500)]
    code: Short | None = None
    age_s: Seconds

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


class CallSnap(_Strict):
    status: Literal["requesting", "queued", "no_answer", "connected", "ended"]
    waited_s: Seconds
    position: Annotated[int, Field(ge=0, le=10_000)] | None = None
    estimated_wait_s: Annotated[int, Field(ge=0, le=86_400)] | None = None
    clerk: ClerkSnap | None = None
    connected_s: Seconds | None = None
    messages: Annotated[list[MessageSnap], Field(max_length=200)] = []
    # The platform's CallTarget, token and pin included (its own validation: edge_media.config).
    media: CallTarget | None = None


class OutcomeSnap(_Strict):
    approved: bool
    application_no: Short | None = None
    note: Text | None = None
    qr_text: Text | None = None
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None


class ApplicationSnap(_Strict):
    application_no: Short
    item_name: Names
    status: Short
    submitted_at: Short | None = None
    updated_at: Short | None = None
    note: Text | None = None


class BookingSnap(_Strict):
    booking_no: Short
    slot: Slot
    qr_text: Text


class PrintingSnap(_Strict):
    job: Literal["receipt", "appointment"]
    status: Literal["printing", "printed", "failed"]
    code: Short | None = None


class RecordingSnap(_Strict):
    """The recording continues under the session's id (kiosk-media appends to that session)."""

    session_id: SessionId


class SessionSnapshot(_Strict):
    """Version 1 of the failover snapshot (docs/session.md §10)."""

    v: Literal[1]
    kind: Literal["kiosk.session.failover"]
    session_id: SessionId
    screen: ResumableScreen
    lang: Literal["zh-CN", "en"]
    started_at: Annotated[float, Field(ge=0, allow_inf_nan=False)]  # wall clock, for information
    age_s: Seconds
    trigger: Literal["presence", "touch", "card"]
    purpose: Literal["apply", "progress", "appointment"] | None = None
    item: Item | None = None
    department: Department | None = None
    identity: IdentitySnap | None = None
    next_after_confirm: Literal["documents", "progress", "appointment"] = "documents"
    returns_to: ResumableScreen | None = None
    checklist: Annotated[list[DocSnap], Field(max_length=40)] = []
    capture: CaptureSnap | None = None
    call: CallSnap | None = None
    clerk_connected: bool = False
    outcome: OutcomeSnap | None = None
    progress_phase: Literal["loading", "result", "failed"] = "loading"
    applications: Annotated[list[ApplicationSnap], Field(max_length=50)] = []
    appointment_phase: Literal[
        "department", "loading", "slots", "booking", "booked", "declined", "failed"
    ] = "department"
    slots: Annotated[list[Slot], Field(max_length=50)] = []
    chosen_slot: Short | None = None
    booking: BookingSnap | None = None
    printing: PrintingSnap | None = None
    waiting_s: Seconds | None = None  # a platform answer (progress, appointment) pending for
    idle_s: Seconds = 0.0  # since the villager's last input (the backup restarts the idle timer)
    requests: Count = 0
    doc_requests: Count = 0
    recording: RecordingSnap | None = None
    ended_recently: Annotated[list[SessionId], Field(max_length=ENDED_RECENTLY)] = []


def parse(data: object) -> SessionSnapshot:
    """Validate a snapshot from the peer; ``SnapshotInvalid`` (naming the first bad field) otherwise."""
    if not isinstance(data, dict):
        raise SnapshotInvalid(f"failover snapshot must be a JSON object, got {type(data).__name__}")
    try:
        # Strict on the python side, except where JSON has no type of its own: the models' config is
        # strict, and Item/Department/CallTarget keep their own (already strict enough) rules.
        snap = SessionSnapshot.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise SnapshotInvalid(f"failover snapshot: {where}: {first['msg']}{more}") from None
    problems = _inconsistencies(snap)
    if problems:
        raise SnapshotInvalid("failover snapshot: " + "; ".join(problems))
    return snap


def _inconsistencies(s: SessionSnapshot) -> list[str]:
    """What pydantic cannot see: fields that only make sense together."""
    problems = []
    ids = [d.doc_id for d in s.checklist]
    if len(set(ids)) != len(ids):
        problems.append("checklist: doc ids repeated")
    if s.screen == "capture" and (s.capture is None or s.capture.doc_id not in ids):
        problems.append("screen capture needs capture.doc_id on the checklist")
    if s.screen in ("call_waiting", "call") and s.call is None:
        problems.append(f"screen {s.screen} needs call")
    if s.screen in ("receipt", "rejected") and s.outcome is None:
        problems.append(f"screen {s.screen} needs outcome")
    if s.screen == "receipt" and s.outcome is not None and not s.outcome.approved:
        problems.append("screen receipt needs an approved outcome")
    if s.screen in ("documents", "capture", "call_waiting", "call", "receipt", "rejected"):
        if s.item is None or s.identity is None:
            problems.append(f"screen {s.screen} needs item and identity")
    if s.item is not None and s.department is not None and s.item.department != s.department.id:
        problems.append("item.department differs from department.id")
    if s.recording is not None and s.recording.session_id != s.session_id:
        problems.append("recording.session_id differs from session_id")
    if s.chosen_slot is not None and s.chosen_slot not in {sl.slot_id for sl in s.slots}:
        problems.append("chosen_slot is not one of slots")
    return problems


# --- the running session -> a snapshot -----------------------------------------------------------


def resumable_screen(m: SessionMachine) -> Screen | None:
    """The villager's screen the session is on (under the PIN pad or on standby: the one it paused on)."""
    screen = m.screen
    if screen is Screen.STANDBY:
        screen = m.standby_from or Screen.ATTRACT
    if screen in (Screen.TECHNICIAN_PIN, Screen.TECHNICIAN):
        screen = (m.technician.returns_to if m.technician else None) or Screen.ATTRACT
    return screen if screen.value in RESUMABLE else None


def take(
    m: SessionMachine, *, recording: bool = True, ended_recently: list[str] | None = None
) -> dict | None:
    """The running session as a JSON-able snapshot; None when no villager session is held."""
    s = m.session
    screen = resumable_screen(m)
    if s is None or screen is None:
        return None
    now_mono, now_wall = m.clock.monotonic(), m.clock.time()

    def ago(t: float | None) -> float | None:
        return None if t is None else round(max(0.0, now_mono - t), 3)

    call = None
    if s.call is not None:
        c = s.call
        call = {
            "status": c.status,
            "waited_s": ago(c.requested_at) or 0.0,
            "position": c.position,
            "estimated_wait_s": c.estimated_wait_s,
            "clerk": c.clerk,
            "connected_s": ago(c.connected_at),
            "messages": [
                {
                    "from": msg["from"],
                    "text": msg["text"],
                    **({"code": msg["code"]} if "code" in msg else {}),
                    "age_s": ago(msg["at"]) or 0.0,
                }
                for msg in c.messages
            ],
            "media": c.media,
        }
    identity = None
    if s.identity_confirmed and s.id_masked and s.name:
        identity = {"id_masked": s.id_masked, "name": s.name, "card_present": s.card_present}
    return {
        "v": SNAPSHOT_VERSION,
        "kind": SNAPSHOT_KIND,
        "session_id": s.id,
        "screen": screen.value,
        "lang": m.lang,
        "started_at": round(now_wall - (now_mono - s.started_at), 3),
        "age_s": ago(s.started_at) or 0.0,
        "trigger": s.trigger,
        "purpose": s.purpose,
        "item": s.item.model_dump(mode="json", by_alias=True) if s.item else None,
        "department": s.department.model_dump(mode="json", by_alias=True) if s.department else None,
        "identity": identity,
        "next_after_confirm": s.next_after_confirm,
        "returns_to": s.returns_to.value if s.returns_to and s.returns_to.value in RESUMABLE else None,
        "checklist": [
            {
                "doc_id": d.doc_id,
                "name": d.name,
                "required": d.required,
                "requested_by_clerk": d.requested_by_clerk,
                "note": d.note,
                "image": {k: d.image[k] for k in ("sha256", "bytes", "mime")} if d.image else None,
                "stale": d.stale,
                "card_photo": d.card_photo,
            }
            for d in s.checklist
        ],
        "capture": (
            {"doc_id": s.capture.doc_id, "return_to": s.capture.return_to.value}
            if s.capture is not None and s.capture.return_to.value in RESUMABLE
            else None
        ),
        "call": call,
        "clerk_connected": s.clerk_connected,
        "outcome": s.outcome,
        "progress_phase": s.progress_phase,
        "applications": s.applications,
        "appointment_phase": s.appointment_phase,
        "slots": s.slots,
        "chosen_slot": s.chosen_slot,
        "booking": s.booking,
        "printing": s.printing,
        "waiting_s": ago(s.waiting_since),
        "idle_s": ago(m.last_activity) or 0.0,
        "requests": s.requests,
        "doc_requests": s.doc_requests,
        "recording": {"session_id": s.id} if recording else None,
        "ended_recently": list(ended_recently or [])[-ENDED_RECENTLY:],
    }


def core(snapshot: dict | None) -> dict | None:
    """The snapshot without what changes by the mere passing of time (to tell a real change)."""
    if snapshot is None:
        return None
    out = {k: v for k, v in snapshot.items() if k not in ("age_s", "idle_s", "waiting_s", "started_at")}
    if out.get("call"):
        call = dict(out["call"])
        call.pop("waited_s", None)
        call.pop("connected_s", None)
        call["messages"] = [{k: v for k, v in msg.items() if k != "age_s"} for msg in call["messages"]]
        out["call"] = call
    return out


# --- a snapshot -> the session on this terminal ------------------------------------------------------


def restore(m: SessionMachine, snap: SessionSnapshot) -> tuple[Session, Screen]:
    """A ``Session`` rebuilt from ``snap`` on this terminal's clock, and the screen to show.

    Where the step needs what is not replicated, it goes one step back: a capture in progress is back at
    its preview (the picture not yet accepted stayed on the peer); an identity not yet confirmed is
    asked for again (``identify``: the card is read on this terminal's reader); a receipt being printed
    on the peer's printer shows as not printed (the villager gets it at the window or scans the code).
    """
    now = m.clock.monotonic()

    def at(age: float | None) -> float | None:
        return None if age is None else now - age

    s = Session(id=snap.session_id, started_at=now - snap.age_s, trigger=snap.trigger)
    s.purpose = snap.purpose
    s.item, s.department = snap.item, snap.department
    if snap.identity is not None:
        s.name, s.id_masked = snap.identity.name, snap.identity.id_masked
        s.identity_confirmed = True
        # The card lies on the peer's reader, which this terminal cannot see; a card placed here is
        # compared by its masked number. Nothing asks for it unless a step needs the chip.
        s.card_present = snap.identity.card_present
    s.next_after_confirm = snap.next_after_confirm
    s.checklist = [
        Doc(
            d.doc_id,
            d.name.as_dict(),
            d.required,
            requested_by_clerk=d.requested_by_clerk,
            note=d.note,
            image=d.image.model_dump() if d.image else None,
            stale=d.stale,
            card_photo=d.card_photo,
        )
        for d in snap.checklist
    ]
    if snap.call is not None:
        c = snap.call
        s.call = Call(
            status=c.status,
            requested_at=now - c.waited_s,
            position=c.position,
            estimated_wait_s=c.estimated_wait_s,
            clerk=(
                {
                    "id": c.clerk.id,
                    "name": c.clerk.name,
                    "department": {"id": c.clerk.department.id, "name": c.clerk.department.name.as_dict()},
                }
                if c.clerk
                else None
            ),
            connected_at=at(c.connected_s),
            messages=[
                {
                    "from": msg.sender,
                    "text": msg.text,
                    **({"code": msg.code} if msg.code else {}),
                    "at": now - msg.age_s,
                }
                for msg in c.messages
            ][-m.config.max_messages :],
            media=c.media.model_dump(mode="json") if c.media else None,
            media_state={"state": "connecting"} if c.media and c.status == "connected" else None,
        )
    s.clerk_connected = snap.clerk_connected
    s.outcome = snap.outcome.model_dump(exclude_none=False) if snap.outcome else None
    if s.outcome is not None and s.outcome.get("approved"):
        s.outcome.pop("reason", None)
    elif s.outcome is not None:
        s.outcome = {"approved": False, "reason": s.outcome.get("reason")}
    s.returns_to = Screen(snap.returns_to) if snap.returns_to else None
    s.progress_phase = snap.progress_phase
    s.applications = [
        a.model_dump(by_alias=False) | {"item_name": a.item_name.as_dict()} for a in snap.applications
    ]
    s.appointment_phase = snap.appointment_phase
    s.slots = [sl.model_dump() for sl in snap.slots]
    s.chosen_slot = snap.chosen_slot
    s.booking = (
        {
            "booking_no": snap.booking.booking_no,
            "slot": snap.booking.slot.model_dump(),
            "qr_text": snap.booking.qr_text,
        }
        if snap.booking
        else None
    )
    s.printing = snap.printing.model_dump() if snap.printing else None
    if s.printing is not None and s.printing["status"] == "printing":
        s.printing = {**s.printing, "status": "failed", "code": "printer.failover"}
    s.waiting_since = at(snap.waiting_s)
    s.requests, s.doc_requests = snap.requests, snap.doc_requests

    screen = Screen(snap.screen)
    if screen is Screen.CAPTURE:
        assert snap.capture is not None  # parse() checked it
        s.capture = Capture(doc_id=snap.capture.doc_id, return_to=Screen(snap.capture.return_to))
    if not s.identity_confirmed and screen is Screen.CONFIRM_IDENTITY:
        screen = Screen.IDENTIFY  # the candidate card was read on the peer: read it here
    return s, screen
