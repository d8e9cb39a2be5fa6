"""The video call with the county clerk, and the clerk's commands during it.

Screens: ``call_waiting`` (requested, queued or unanswered), ``call``, and the clerk's outcome:
``receipt`` (approved) or ``rejected``. The clerk asks for papers, writes messages, approves, rejects
or ends through platform commands; hanging up with a clerk connected leads to the rating.
"""

from __future__ import annotations

import re
from collections.abc import Container
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, StringConstraints

from appliance.config import CallTarget
from appliance.session import printing
from appliance.session.effects import DropCapture, Effect, Emit, StartCall, StopCall
from appliance.session.errors import IntentRejected
from appliance.session.flows import (
    IntentHandler,
    LocalizedName,
    SessionCommand,
    SessionParams,
    text_or,
    trimmed,
)
from appliance.session.state import APPLICATION_NO, Call, Doc, Screen, Session, item_view, localized
from kiosk_core.commands import Params
from kiosk_core.errors import BadRequest, Conflict

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine

# --- views and offers --------------------------------------------------------------------------------


def call_waiting_view(m: SessionMachine) -> dict[str, Any]:
    s = m.session
    assert s is not None
    call = s.call or Call()
    return {
        "item": item_view(s.item),
        "status": call.status,
        "position": call.position,
        "estimated_wait_s": call.estimated_wait_s,
        "waited_s": round(max(0.0, m.clock.monotonic() - call.requested_at)),
    }


def call_waiting_offers(m: SessionMachine) -> Container[str]:
    s = m.session
    if s is None or s.call is None:
        return ()
    return {"call", "appointment", "end"} if s.call.status == "no_answer" else {"cancel_call", "end"}


def call_view(m: SessionMachine) -> dict[str, Any]:
    s = m.session
    assert s is not None
    call = s.call or Call()
    wall, mono = m.clock.time(), m.clock.monotonic()
    messages = [
        {
            "from": msg["from"],
            "text": msg["text"],
            "ts": round(wall - (mono - msg["at"]), 3),
            **({"code": msg["code"]} if "code" in msg else {}),
        }
        for msg in call.messages
    ]
    return {
        "item": item_view(s.item),
        "clerk": call.clerk,
        "media": media_view(call),
        "messages": messages,
        "replies": list(REPLY_CODES),
        "requested_documents": [d.as_view() for d in s.checklist if d.requested_by_clerk],
        "checklist": [d.as_view() for d in s.checklist],
    }


MEDIA_STATES = ("connecting", "connected", "reconnecting", "audio_only", "failed")


def media_view(call: Call) -> dict[str, Any] | None:
    """``view.media`` of the call screen: null for a text-only call, else what kiosk-media reports."""
    if call.media is None:
        return None
    got = call.media_state or {}
    state = got.get("state")
    return {
        "state": state if state in MEDIA_STATES else "connecting",
        "reason": got.get("reason") if isinstance(got.get("reason"), str) else None,
        "clerk_video": got.get("clerk_video") is True,
        "mic": got.get("mic") is True,
        "speaker": got.get("speaker", True) is True,
    }


def media_reported(m: SessionMachine, report: object) -> bool:
    """kiosk-media's ``call`` state arrived: keep it for the screen; True if the screen changes."""
    s = m.session
    if not isinstance(report, dict):  # the media process's JSON; a junk report is ignored, never raised
        return False
    if s is None or s.call is None or s.call.media is None or report.get("session_id") != s.id:
        return False
    if report.get("state") == "off" or s.call.status != "connected":
        return False
    before = media_view(s.call)
    s.call.media_state = {k: report.get(k) for k in ("state", "reason", "clerk_video", "mic", "speaker")}
    reason = report.get("reason")
    if isinstance(reason, str):
        s.call.media_state["reason"] = without_server(reason, str(s.call.media.get("url", "")))
    return media_view(s.call) != before


ANY_URL = re.compile(r"\b(?:wss?|https?)://[^\s'\"]+")


def without_server(reason: str, url: str) -> str:
    """``reason`` with the media server's URL and host elided: kiosk-media's errors name them ("the county
    media server at wss://... cannot be reached: ... Cannot connect to host ..."), the state topic must not."""
    reason = ANY_URL.sub("<media.url>", reason)
    host = urlsplit(url).hostname
    return reason.replace(host, "<media.host>") if host else reason


def call_offers(m: SessionMachine) -> Container[str]:
    s = m.session
    if s is None:
        return ()
    missing = any(d.requested_by_clerk and d.status == "missing" for d in s.checklist)
    offers = {"capture", "end"} if missing else {"end"}
    if s.call is not None and s.call.status == "connected":
        offers.add("reply")
    return offers


def receipt_view(m: SessionMachine) -> dict[str, Any]:
    s = m.session
    assert s is not None
    o = s.outcome or {}
    return {
        "item": item_view(s.item),
        "application_no": o.get("application_no"),
        "qr_text": o.get("qr_text"),
        "note": o.get("note"),
        "clerk": s.call.clerk if s.call else None,
        "print": printing.print_view(s, "receipt"),
    }


def rejected_view(m: SessionMachine) -> dict[str, Any]:
    s = m.session
    assert s is not None
    o = s.outcome or {}
    return {"item": item_view(s.item), "reason": o.get("reason"), "clerk": s.call.clerk if s.call else None}


# --- helpers -----------------------------------------------------------------------------------------


def waited(m: SessionMachine, s: Session) -> int:
    """Whole seconds since the villager asked for a clerk (0 without a call)."""
    return round(m.clock.monotonic() - s.call.requested_at) if s.call else 0


def need_call(m: SessionMachine, s: Session, *states: str) -> Call:
    """The session's call if it is in one of ``states``, else 409."""
    if s.call is None or s.call.status not in states:
        now = s.call.status if s.call else "no call"
        raise Conflict(f"the call is {now!r}; this needs {' or '.join(states)} (screen {m.screen.value})")
    return s.call


def leave_call(m: SessionMachine, s: Session, screen: Screen) -> list[Effect]:
    """The call is over: drop a capture in progress, mark the call ended and show ``screen``."""
    effects: list[Effect] = []
    if s.capture is not None:
        effects.append(DropCapture(s.id, s.capture.doc_id))
        s.capture = None
    if s.call is not None:
        if s.call.media is not None and s.call.status == "connected":
            effects.append(StopCall(s.id))
        s.call.status = "ended"
    m._go(screen)
    return effects


def hang_up_or_end(m: SessionMachine, reason: str) -> list[Effect]:
    """The villager (or the clerk) ends: with a clerk connected this leads to the rating."""
    s = m.session
    assert s is not None
    if s.clerk_connected and s.outcome is None:
        effects = leave_call(m, s, Screen.RATING)
        return [*effects, Emit("session.call.ended", {"session_id": s.id, "by": reason})]
    return m._end(reason)


# --- intents -----------------------------------------------------------------------------------------


def request_call(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s = m._session()
    assert s.item is not None
    # From ``rejected`` the villager calls again: the rejection stays on record as its event, and the
    # new call may end in another outcome.
    s.outcome = None
    s.call = Call(requested_at=m.clock.monotonic())
    m._go(Screen.CALL_WAITING)
    docs = [{"doc_id": d.doc_id, **(d.image or {})} for d in s.checklist if d.status == "captured"]
    return [
        Emit(
            "session.call.requested",
            {
                "session_id": s.id,
                "item_id": s.item.id,
                "department_id": s.item.department,
                "id_masked": s.id_masked,
                "documents": docs,
            },
        )
    ]


def cancel_call(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s = m._session()
    waited_s = waited(m, s)
    s.call = None
    m._go(Screen.DOCUMENTS)
    return [Emit("session.call.cancelled", {"session_id": s.id, "waited_s": waited_s})]


def continue_to_rating(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    m._go(Screen.RATING)
    return []


# The villager's fixed answers to the clerk (``reply {"code"}``), with the words the clerk reads in the
# call's message list; the kiosk's screen has them in both languages (its catalog, ``call.reply.*``).
REPLY_CODES: dict[str, str] = {
    "cant_hear": "听不清",
    "dont_understand": "看不懂",
    "wait": "请稍等",
    "need_official": "请村干部帮忙",
}


def reply(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    """The villager answers the clerk with one of ``REPLY_CODES``: a line in the call's messages and
    ``session.villager_reply`` to the clerk. An unknown code is refused and changes nothing."""
    s = m._session()
    code = body.get("code")
    if not isinstance(code, str) or code not in REPLY_CODES:
        allowed = ", ".join(REPLY_CODES)
        raise IntentRejected(f"reply: code must be one of {allowed}; got {str(code)[:40]!r}")
    if s.call is None or s.call.status != "connected":
        raise IntentRejected("reply: no clerk is connected")
    s.call.messages.append(
        {"from": "villager", "code": code, "text": REPLY_CODES[code], "at": m.clock.monotonic()}
    )
    del s.call.messages[: -m.config.max_messages]
    return [Emit("session.villager_reply", {"session_id": s.id, "code": code})]


INTENTS: dict[str, IntentHandler] = {
    "call": request_call,
    "cancel_call": cancel_call,
    "continue": continue_to_rating,
    "reply": reply,
}

# --- the clerk's commands ----------------------------------------------------------------------------


class QueuedParams(SessionParams):
    position: int = Field(ge=0, le=10_000)
    estimated_wait_s: int = Field(ge=0, le=86_400)


def call_queued(m: SessionMachine, params: QueuedParams) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params.session_id)
    call = need_call(m, s, "requesting", "queued")
    call.status, call.position, call.estimated_wait_s = "queued", params.position, params.estimated_wait_s
    return {"ok": True}, []


class ClerkDepartment(Params):
    id: Annotated[str, trimmed(64)]
    name: LocalizedName | None = None


# A department id of the catalog, or {id, name} for one the kiosk does not know.
DepartmentRef = text_or(ClerkDepartment, "a department id or {id, name}")


class Clerk(Params):
    id: Annotated[str, trimmed(64)]
    name: Annotated[str, trimmed(40)]
    department: DepartmentRef


class AcceptedParams(SessionParams):
    clerk: Clerk
    # Where the call's media goes (docs/mqtt.md "The call's media"); absent or null: text only.
    media: CallTarget | None = None


def call_accepted(m: SessionMachine, params: AcceptedParams) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params.session_id)
    clerk, dep = params.clerk, params.clerk.department
    dep_id = dep if isinstance(dep, str) else dep.id
    known = m.catalog.department(dep_id)
    if isinstance(dep, ClerkDepartment) and dep.name is not None:
        name = localized(dep.name)
    else:
        name = known.name.as_dict() if known else localized(dep_id)
    call = need_call(m, s, "requesting", "queued")
    now = m.clock.monotonic()
    call.status, call.connected_at = "connected", now
    call.clerk = {"id": clerk.id, "name": clerk.name, "department": {"id": dep_id, "name": name}}
    s.clerk_connected = True
    effects: list[Effect] = []
    if params.media is not None:
        call.media = params.media.model_dump(mode="json")
        call.media_state = {"state": "connecting"}
        effects.append(StartCall(s.id, call.media))
    if m.screen is Screen.CALL_WAITING:
        m._go(Screen.CALL)
    elif m.screen is Screen.CARD_REMOVED:
        s.returns_to = Screen.CALL
    return {"ok": True}, [
        Emit(
            "session.call.connected",
            {
                "session_id": s.id,
                "clerk_id": clerk.id,
                "waited_s": round(now - call.requested_at),
                "media": params.media is not None,
            },
        ),
        *effects,
    ]


class RequestDocumentParams(SessionParams):
    # a new paper by name, or one of the checklist again by doc_id
    name: LocalizedName | None = None
    doc_id: str | None = None
    note: Annotated[str, trimmed(200)] | None = None


def request_document(m: SessionMachine, params: RequestDocumentParams) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params.session_id)
    doc_id, note = params.doc_id, params.note
    if doc_id is not None and s.doc(doc_id) is None:
        raise BadRequest(
            f"doc_id: {doc_id!r} is not on this session's checklist (omit it to ask for a new one)",
            field="doc_id",
        )
    if doc_id is None and params.name is None:
        raise BadRequest("name: required (or doc_id of a checklist entry)", field="name")
    need_call(m, s, "connected")
    if len(s.checklist) >= 40:
        raise Conflict("this session already has 40 documents")
    if doc_id is not None:
        doc = s.doc(doc_id)
        assert doc is not None
        doc.stale = doc.image is not None
    else:
        assert params.name is not None
        s.doc_requests += 1
        doc = Doc(f"req-{s.doc_requests}", localized(params.name), required=True)
        s.checklist.append(doc)
    doc.requested_by_clerk, doc.required, doc.note = True, True, note
    m.notice = {"code": "clerk_requested_document", "params": {"name": doc.name}}
    return {"doc_id": doc.doc_id}, [
        Emit(
            "session.document.requested",
            {"session_id": s.id, "doc_id": doc.doc_id, "name": doc.name["zh-CN"]},
        )
    ]


class MessageParams(SessionParams):
    text: Annotated[str, trimmed(500)]


def message(m: SessionMachine, params: MessageParams) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params.session_id)
    call = need_call(m, s, "connected")
    call.messages.append({"from": "clerk", "text": params.text, "at": m.clock.monotonic()})
    del call.messages[: -m.config.max_messages]
    if m.screen is Screen.CALL:
        m.notice = {"code": "clerk_message", "params": {}}
    return {"ok": True}, []


def _decide(
    m: SessionMachine, s: Session, outcome: dict[str, Any], screen: Screen, event: str, **data: Any
) -> tuple[dict[str, Any], list[Effect]]:
    """The clerk decided: record the outcome, close the call, show ``screen`` and emit ``event``."""
    s.outcome = outcome
    effects = leave_call(m, s, screen)
    s.returns_to = None
    m.last_activity = m.clock.monotonic()
    item_id = s.item.id if s.item else None
    return {"ok": True}, [*effects, Emit(event, {"session_id": s.id, **data, "item_id": item_id})]


class ApproveParams(SessionParams):
    application_no: Annotated[str, trimmed(64), StringConstraints(pattern=APPLICATION_NO.pattern)]
    qr_text: Annotated[str, trimmed(512)] | None = None
    note: Annotated[str, trimmed(200)] | None = None
    # The clerk knowingly approves although a required document is still missing (else 409).
    override_missing: bool = False


def approve(m: SessionMachine, params: ApproveParams) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params.session_id)
    number = params.application_no
    need_call(m, s, "connected")
    missing = [d.doc_id for d in s.checklist if d.required and d.status == "missing"]
    if missing and not params.override_missing:
        raise Conflict(
            f"required document(s) still missing: {', '.join(missing)}; ask the villager for them "
            "or approve with override_missing true",
            missing_documents=missing,
        )
    outcome = {
        "approved": True,
        "application_no": number,
        "note": params.note,
        "qr_text": params.qr_text or m.config.receipt_url_template.format(application_no=number),
    }
    # An approval over missing papers is said in the event, so the platform can audit it.
    overridden = {"missing_documents": missing} if missing else {}
    reply, effects = _decide(
        m, s, outcome, Screen.RECEIPT, "session.approved", application_no=number, **overridden
    )
    if m.printer:
        effects.append(printing.approved_receipt(m, s))
    return reply, effects


class RejectParams(SessionParams):
    reason: Annotated[str, trimmed(500)]


def reject(m: SessionMachine, params: RejectParams) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params.session_id)
    need_call(m, s, "connected")
    outcome = {"approved": False, "reason": params.reason}
    return _decide(m, s, outcome, Screen.REJECTED, "session.rejected", reason=params.reason)


class EndParams(SessionParams):
    reason: Annotated[str, trimmed(200)] | None = None


def end(m: SessionMachine, params: EndParams) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params.session_id)
    if m.screen is Screen.RATING or s.outcome is not None:
        # The villager is reading the receipt or rating: the clerk's end changes nothing for them.
        return {"ok": True, "screen": m.screen.value}, []
    effects = hang_up_or_end(m, "clerk_ended")
    return {"ok": True, "screen": m.screen.value}, effects


COMMANDS: dict[str, SessionCommand] = {
    "session.call.queued": SessionCommand(
        "the villager's place in the clerk queue and the estimated wait", QueuedParams, call_queued
    ),
    "session.call.accepted": SessionCommand(
        "a clerk took the call (name, department; media: where the video call goes)",
        AcceptedParams,
        call_accepted,
    ),
    "session.request_document": SessionCommand(
        "the clerk asks for one more document", RequestDocumentParams, request_document
    ),
    "session.message": SessionCommand("a message from the clerk shown on screen", MessageParams, message),
    "session.approve": SessionCommand(
        "the clerk approves: application number for the receipt; 409 with missing_documents while a "
        "required document is missing, unless override_missing",
        ApproveParams,
        approve,
    ),
    "session.reject": SessionCommand("the clerk rejects, with a reason", RejectParams, reject),
    "session.end": SessionCommand("the clerk or the platform ends the session", EndParams, end),
}
