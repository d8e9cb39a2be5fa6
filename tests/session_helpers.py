"""Shared pieces of the session tests: a hand-wound clock, sample cards, a machine factory."""

from __future__ import annotations

from typing import Any

from appliance.session.catalog import default_catalog
from appliance.session.config import SessionConfig
from appliance.session.machine import CaptureDocument, Effect, Emit, SessionMachine

SESSION_ID = "s-0123456789abcdef"
# Shaped like the card reader's card.read: what may leave the device at the top, who the villager is
# only under _private (the daemon strips it before anything is stored or sent).
_CARD = {
    "card_type": "resident",
    "card_title": "居民身份证",
    "validity": {"from": "2020-03-15", "to": "2040-03-15"},
    "valid": True,
    "problems": [],
    "photo": "not decoded",
    "reader": "card_reader",
    "read_ms": 118,
    "attempts": 1,
}
ZHANG_SAN = {
    **_CARD,
    "id_number_masked": "3308**********123X",
    "_private": {
        "name": "张三",
        "sex": "男",
        "nation": "汉",
        "id_number": "33080319900307123X",
        "photo_wlt": b"\x00" * 8,
    },
}
LI_SI = {
    **_CARD,
    "id_number_masked": "3308**********5678",
    "_private": {"name": "李四", "id_number": "330803198501015678"},
}


class HandClock:
    """Time moves only when the test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.t = start

    def monotonic(self) -> float:
        return self.t

    def time(self) -> float:
        return 1_763_700_000.0 + self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make_machine(clock: HandClock | None = None, **config: Any) -> SessionMachine:
    ids = iter(f"s-{n:016x}" for n in range(0x0123456789ABCDEF, 0x0123456789ABCDEF + 100))
    return SessionMachine(
        SessionConfig(**config),
        default_catalog(),
        clock=clock or HandClock(),
        new_id=lambda: next(ids),
        site="赤柯山村便民服务站",
    )


def events(effects: list[Effect]) -> list[str]:
    return [e.type for e in effects if isinstance(e, Emit)]


def image(n: int = 1) -> dict[str, Any]:
    return {"sha256": f"{n:064x}", "bytes": 1000 + n, "mime": "image/jpeg"}


def capture(m: SessionMachine, doc_id: str, n: int = 1) -> list[Effect]:
    """Villager captures and keeps one document."""
    m.intent("capture", {"doc_id": doc_id})
    (shoot,) = m.intent("shoot", {})
    assert isinstance(shoot, CaptureDocument)
    assert m.capture_finished(shoot.session_id, doc_id, shoot.attempt, image=image(n)) == []
    return m.intent("accept", {})


def to_documents(m: SessionMachine, item_id: str = "minzheng.low_income_allowance") -> None:
    """Wake, choose the item, place Zhang San's card and confirm."""
    m.presence()
    m.intent("select_department", {"department_id": item_id.split(".")[0]})
    m.intent("select_item", {"item_id": item_id})
    m.card_read(ZHANG_SAN)
    m.intent("confirm", {})
    assert m.screen == "documents"


CLERK = {"id": "c-0042", "name": "李明", "department": "minzheng"}


def to_call_waiting(m: SessionMachine) -> None:
    """Zhang San has every document of the low-income allowance and asks for a clerk."""
    to_documents(m)
    for n, doc in enumerate(("hukou_book", "income_proof")):
        capture(m, doc, n)
    m.intent("call", {})
    assert m.screen == "call_waiting"


def to_call(m: SessionMachine, media: dict[str, Any] | None = None) -> list[Effect]:
    """On to ``call``: clerk 李明 accepts (with ``media``, the call's media object, if given)."""
    to_call_waiting(m)
    params: dict[str, Any] = {"session_id": m.session.id, "clerk": CLERK}
    if media is not None:
        params["media"] = media
    _, effects = m.command("session.call.accepted", params)
    assert m.screen == "call"
    return effects
