"""The identity card on the reader: what taking it away does, and putting it back.

Once the villager confirmed their identity, the card must stay on the reader while their papers are
shown and the clerk is on the line; taking it away shows ``card_removed`` until the same card returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from appliance.session.effects import Effect, Emit
from appliance.session.state import Screen, Session

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine


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
