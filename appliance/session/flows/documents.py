"""The documents checklist and the document camera: showing each paper the chosen item needs.

Screens: ``documents`` (the checklist) and ``capture`` (one paper: preview, capturing, review or
failed). A capture started from the call (a paper the clerk asked for) returns to the call.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING, Any

from pydantic import Field

from appliance.session.effects import CaptureDocument, DropCapture, Effect, Emit, KeepCapture
from appliance.session.errors import IntentRejected
from appliance.session.flows import IntentHandler, SessionParams, card
from appliance.session.state import Capture, Doc, Screen, Session, item_view
from kiosk_core.errors import BadRequest, Conflict

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine

# What the villager may do in each phase of a capture.
CAPTURE_PHASES: dict[str, frozenset[str]] = {
    "preview": frozenset({"shoot", "back", "end"}),
    "capturing": frozenset(),
    "review": frozenset({"accept", "retake", "end"}),
    "failed": frozenset({"shoot", "back", "end"}),
}

# --- views, offers and the card guard ----------------------------------------------------------------


def documents_view(m: SessionMachine) -> dict[str, Any]:
    s = m.session
    assert s is not None
    return {
        "item": item_view(s.item),
        "checklist": [d.as_view() for d in s.checklist],
        "complete": s.documents_complete,
    }


def documents_offers(m: SessionMachine) -> Container[str]:
    s = m.session
    if s is None:
        return ()
    return {"capture", "back", "end"} | ({"call"} if s.documents_complete else set())


def capture_view(m: SessionMachine) -> dict[str, Any]:
    s = m.session
    assert s is not None
    c = s.capture
    assert c is not None
    d = s.doc(c.doc_id)
    doc = {
        "doc_id": c.doc_id,
        "name": d.name if d else {},
        "required": d.required if d else False,
        "requested_by_clerk": d.requested_by_clerk if d else False,
        "note": d.note if d else None,
    }
    return {"doc": doc, "phase": c.phase, "image": c.image, "return_to": c.return_to.value}


def capture_offers(m: SessionMachine) -> Container[str]:
    s = m.session
    if s is None or s.capture is None:
        return ()
    return CAPTURE_PHASES[s.capture.phase]


def abandon_capture(m: SessionMachine, s: Session) -> list[Effect]:
    """Card guard of ``capture``: the capture is abandoned (its pending image dropped) and the card
    asked for; when it returns the villager is back where the capture started. On the capture of a
    photo of the card itself, lifting the card is what the screen asked for: the capture goes on."""
    if not s.identity_confirmed:
        return []
    c = s.capture
    if c is None:
        return card.hold(m, s)
    if card.photo_of_card(s.doc(c.doc_id)):
        return card.lifted_for_photo(m, s)
    s.capture = None
    return [DropCapture(s.id, c.doc_id), *card.put_back(m, s, c.return_to)]


# --- intents -----------------------------------------------------------------------------------------


def capture(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s = m._session()
    doc_id = body.get("doc_id")
    doc = s.doc(doc_id) if isinstance(doc_id, str) else None
    if doc is None:
        raise IntentRejected(f"capture: {doc_id!r} is not on the checklist")
    s.capture = Capture(doc_id=doc.doc_id, return_to=m.screen)
    m._go(Screen.CAPTURE)
    _card_photo_hint(m, s)
    return []


def _card_photo_hint(m: SessionMachine, s: Session) -> None:
    """On the capture of the card's own photo, say that the card may leave the reader (a notice)."""
    if s.capture is not None and card.photo_of_card(s.doc(s.capture.doc_id)):
        m.notice = {"code": card.CARD_PHOTO_NOTICE, "params": {}}


def _capturing(m: SessionMachine) -> tuple[Session, Capture]:
    """The session and its capture (there is one on ``capture``)."""
    s = m._session()
    assert s.capture is not None
    return s, s.capture


def shoot(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s, c = _capturing(m)
    s.requests += 1
    c.attempt, c.phase, c.image = s.requests, "capturing", None
    m.notice = None
    return [CaptureDocument(s.id, c.doc_id, c.attempt)]


def accept(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s, c = _capturing(m)
    assert c.image is not None
    doc = s.doc(c.doc_id)
    s.capture = None
    card.leave_capture(
        m, s, c.return_to if c.return_to in (Screen.DOCUMENTS, Screen.CALL) else Screen.DOCUMENTS
    )
    if doc is None:  # the item changed under the capture: cannot happen through the UI, but be safe
        return [DropCapture(s.id, c.doc_id)]
    doc.image = {k: c.image[k] for k in ("sha256", "bytes", "mime")}
    doc.stale = False
    return [
        KeepCapture(s.id, doc.doc_id),
        Emit(
            "session.document.captured",
            {
                "session_id": s.id,
                "doc_id": doc.doc_id,
                "name": doc.name["zh-CN"],
                **doc.image,
                "requested_by_clerk": doc.requested_by_clerk,
            },
        ),
    ]


def retake(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s, c = _capturing(m)
    c.phase, c.image = "preview", None
    _card_photo_hint(m, s)
    return [DropCapture(s.id, c.doc_id)]


def documents_back(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    """On the checklist: back to the catalog (the papers stay for the item)."""
    m._session()
    m._go(Screen.CATALOG)
    return []


def capture_back(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    """On ``capture``: give up this paper and return to where the capture started."""
    s, c = _capturing(m)
    s.capture = None
    card.leave_capture(m, s, c.return_to)
    return []


INTENTS: dict[str, IntentHandler] = {
    "capture": capture,
    "shoot": shoot,
    "accept": accept,
    "retake": retake,
}

# --- results of effects and queries ------------------------------------------------------------------


def capture_finished(
    m: SessionMachine,
    session_id: str,
    doc_id: str,
    attempt: int,
    *,
    image: dict[str, Any] | None = None,
    error: str | None = None,
) -> list[Effect] | None:
    """See ``SessionMachine.capture_finished``."""
    s = m.session
    c = s.capture if s is not None else None
    if (
        s is None
        or s.id != session_id
        or c is None
        or c.doc_id != doc_id
        or c.attempt != attempt
        or c.phase != "capturing"
        or m.screen is not Screen.CAPTURE
    ):
        return None
    if image is None:
        c.phase = "failed"
        m.notice = {"code": "doccam_unavailable", "params": {"detail": (error or "")[:200]}}
        return [
            Emit(
                "session.document.failed",
                {"session_id": s.id, "doc_id": doc_id, "detail": (error or "")[:200]},
            )
        ]
    c.phase = "review"
    c.image = {
        "sha256": image["sha256"],
        "bytes": image["bytes"],
        "mime": image.get("mime", "image/jpeg"),
        "preview_path": None,
    }
    return []


class DocumentGetParams(SessionParams):
    """``session.document.get``: a chunk of ``doc_id`` (``length`` at most ``doc_chunk_max`` bytes, a
    limit of the configuration the service checks)."""

    doc_id: str
    offset: int = Field(0, ge=0)
    length: int = Field(ge=1)


def document_meta(m: SessionMachine, params: DocumentGetParams) -> tuple[str, Doc]:
    """See ``SessionMachine.document_meta``."""
    s = m.session_for(params.session_id)
    doc = s.doc(params.doc_id)
    if doc is None:
        raise BadRequest(f"doc_id: {params.doc_id!r} is not on this session's checklist", field="doc_id")
    if doc.image is None:
        raise Conflict(f"document {params.doc_id!r} has not been captured")
    return s.id, doc
