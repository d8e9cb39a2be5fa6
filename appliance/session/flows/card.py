"""The identity card on the reader: what taking it away does, and putting it back.

Once the villager confirmed their identity, the card must stay on the reader while their papers are
shown and the clerk is on the line; taking it away shows ``card_removed`` until the same card returns.

The one exception is a photo of the card itself (a clerk asks for 身份证背面, or the item needs a
picture of the card): its capture screen lets the card leave the reader and says so; leaving that
screen without the card asks for it back (``card_removed``), where only the same card resumes. The
card's data and photo come from its chip, so a checklist never asks for a picture of the card where
the chip suffices (``from_chip``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from appliance.session.catalog import DocumentSpec
from appliance.session.effects import Effect, Emit, Signal
from appliance.session.state import Doc, Screen, Session

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine

# The catalog's id of the villager's own ID card (docs/session.md, §6).
CARD_DOC_ID = "id_card"
# Words that name the ID card in a clerk's request ("身份证背面", "back of the ID card").
_CARD_WORDS = ("身份证", "id card", "id-card")
CARD_PHOTO_NOTICE = "card_photo"
# In-process signals (never fleet events): the buzzer reminds the villager of a card left on the reader;
# the card reader reads again the card lying there when a new session starts.
CARD_LEFT = "session.card.left"
READ_CARD_AGAIN = "session.card.read_again"


def from_chip(spec: DocumentSpec) -> bool:
    """The item's ``id_card`` is read from the card's chip (data and photo): no picture is asked for."""
    return spec.id == CARD_DOC_ID and not spec.card_photo


def photo_of_card(doc: Doc | None) -> bool:
    """Is this paper the ID card itself? Then its capture needs the card off the reader."""
    if doc is None:
        return False
    if doc.card_photo:
        return True
    if not doc.requested_by_clerk:
        return False
    names = " ".join(str(v) for v in doc.name.values()).lower()
    return doc.doc_id == CARD_DOC_ID or any(word in names for word in _CARD_WORDS)


def lifted_for_photo(m: SessionMachine, s: Session) -> list[Effect]:
    """The card left the reader on the capture of its own photo: that is what the screen asked for."""
    return [Emit("session.card.removed", {"session_id": s.id, "screen": Screen.CAPTURE.value})]


def placed_during_photo(m: SessionMachine, s: Session, same: bool) -> list[Effect]:
    """A card was placed on the reader during the capture of the card's photo."""
    if not same:
        m.notice = {"code": "card_mismatch", "params": {}}
        return []
    s.card_present = True
    if m.notice is not None and m.notice.get("code") == "card_mismatch":
        m.notice = None
    return [Emit("session.card.returned", {"session_id": s.id, "screen": Screen.CAPTURE.value})]


def leave_capture(m: SessionMachine, s: Session, dest: Screen) -> None:
    """Leave the capture screen for ``dest``; the card left for its photo must come back first."""
    if s.identity_confirmed and not s.card_present:
        s.returns_to = dest
        m._go(Screen.CARD_REMOVED)
        return
    m._go(dest)


def hold(m: SessionMachine, s: Session) -> list[Effect]:
    """Card guard of the screens that need the card: ask for it, then come back to this screen."""
    return put_back(m, s, m.screen)


def put_back(m: SessionMachine, s: Session, back: Screen) -> list[Effect]:
    """Ask for the confirmed card again; when it returns the villager is on ``back``."""
    if not s.identity_confirmed:
        return []
    s.returns_to = back
    m._go(Screen.CARD_REMOVED)
    return [Emit("session.card.removed", {"session_id": s.id, "screen": back.value})]


def ask_again(m: SessionMachine, s: Session) -> list[Effect]:
    """Card guard of ``confirm_identity``: the candidate is forgotten, so ask for a card again."""
    if not s.identity_confirmed:
        m._go(Screen.IDENTIFY)
    return []


def returned(m: SessionMachine, s: Session, same: bool) -> list[Effect]:
    """A card was placed on ``card_removed``: the same card resumes where the villager was."""
    if not same:
        m.notice = {"code": "card_mismatch", "params": {}}
        return []
    s.card_present = True
    back = s.returns_to or Screen.DOCUMENTS
    s.returns_to = None
    m._go(back)
    return [Emit("session.card.returned", {"session_id": s.id, "screen": back.value})]


def card_removed_view(m: SessionMachine) -> dict[str, Any]:
    s = m.session
    assert s is not None
    return {"returns_to": (s.returns_to or Screen.DOCUMENTS).value}


def remind(m: SessionMachine, now: float) -> list[Effect]:
    """On ``ended`` with the card still on the reader: say "take your card" again, and beep."""
    m.card_reminders += 1
    m.last_reminder = now
    return [Signal(CARD_LEFT, {"reminder": m.card_reminders})]


def read_again(m: SessionMachine, trigger: str) -> list[Effect]:
    """A session starts with a card already on the reader (the last villager's, or one placed while the
    kiosk slept): have the reader read it, so the new villager is not asked to lift it and put it back.
    Its ``card.read`` becomes the candidate that ``confirm_identity`` asks about ("is this you?")."""
    if not m.card_on_reader or trigger == "card":
        return []
    return [Signal(READ_CARD_AGAIN, {})]
