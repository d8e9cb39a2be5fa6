"""Where a real villager got stuck (issue 8), on the pure session machine: the ID card asked for twice
(chip and photo) and "put the card back" while photographing it; the welcome screen with no word after a
restart; the card left on the reader; the idle timer ending a villager's wait for the clerk."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from session_helpers import (
    CLERK,
    LI_SI,
    ZHANG_SAN,
    HandClock,
    events,
    image,
    make_machine,
    to_call,
    to_documents,
)

from appliance.session.catalog import default_catalog
from appliance.session.effects import Signal
from appliance.session.errors import IntentRejected
from appliance.session.flows.card import CARD_LEFT, READ_CARD_AGAIN
from appliance.session.machine import CARD_REMINDER_S, RESTART_HOLD_S, CaptureDocument, SessionMachine


def photograph(m: SessionMachine, doc_id: str, n: int = 1) -> list:
    """Shoot and keep ``doc_id`` (already on its capture screen)."""
    (shoot,) = [e for e in m.intent("shoot", {}) if isinstance(e, CaptureDocument)]
    assert m.capture_finished(shoot.session_id, doc_id, shoot.attempt, image=image(n)) == []
    return m.intent("accept", {})


# --- 1. the ID card: read from its chip; photographed only when that is really needed --------------


def test_no_checklist_asks_for_a_photo_of_the_card_the_chip_already_gave():
    catalog = default_catalog()
    asking = [i.id for i in catalog.items if any(d.id == "id_card" for d in i.documents)]
    assert len(asking) > 30  # the shipped catalog lists the card for almost every item
    m = make_machine()
    to_documents(m)  # Zhang San's card is read and confirmed
    checklist = [d["doc_id"] for d in m.view()["view"]["checklist"]]
    assert checklist == ["hukou_book", "income_proof", "house_proof", "medical_record"]
    # an item that needs nothing but the card is complete at once: the villager may call the clerk
    m.intent("back", {})
    m.intent("select_department", {"department_id": "shebao"})
    m.intent("select_item", {"item_id": "shebao.pension_certification"})
    v = m.view()
    assert v["screen"] == "documents" and v["view"]["checklist"] == [] and v["view"]["complete"] is True
    assert "call" in v["actions"]


def test_the_clerk_asks_for_the_back_of_the_card_and_the_card_may_leave_the_reader():
    m = make_machine()
    to_call(m)
    reply, _ = m.command("session.request_document", {"session_id": m.session.id, "name": "身份证背面"})
    m.intent("capture", {"doc_id": reply["doc_id"]})
    v = m.view()
    assert v["screen"] == "capture" and v["notice"] == {"code": "card_photo", "params": {}}
    # lifting the card is what the screen asked for: the capture goes on, nothing is dropped
    effects = m.card_removed()
    assert events(effects) == ["session.card.removed"] and effects[0].data["screen"] == "capture"
    assert m.screen == "capture" and m.view()["view"]["phase"] == "preview"
    photograph(m, reply["doc_id"])
    # back to the call only with the same card on the reader
    v = m.view()
    assert v["screen"] == "card_removed" and v["view"]["returns_to"] == "call"
    assert m.card_read(LI_SI) == [] and m.view()["notice"]["code"] == "card_mismatch"
    assert events(m.card_read(ZHANG_SAN)) == ["session.card.returned"] and m.screen == "call"
    assert m.view()["view"]["requested_documents"][0]["status"] == "captured"


def test_the_card_put_back_under_the_camera_screen_is_checked_there_too():
    m = make_machine()
    to_documents(m, "huji.id_card_renewal")  # the catalog asks for a photo of the old card itself
    m.intent("capture", {"doc_id": "old_id_card"})
    assert m.view()["notice"]["code"] == "card_photo"
    m.card_removed()
    assert m.screen == "capture"
    m.card_read(LI_SI)  # somebody else's card
    assert m.screen == "capture" and m.view()["notice"]["code"] == "card_mismatch"
    assert events(m.card_read(ZHANG_SAN)) == ["session.card.returned"]
    photograph(m, "old_id_card")
    assert m.screen == "documents"  # the card is back already: no "put it back" screen


def test_lifting_the_card_while_photographing_another_paper_still_asks_for_it():
    m = make_machine()
    to_documents(m)
    m.intent("capture", {"doc_id": "hukou_book"})
    assert m.view()["notice"] is None
    m.card_removed()
    assert m.screen == "card_removed"


# --- 2. a restart cut the visit short --------------------------------------------------------------


def test_after_a_restart_ended_says_so_and_presence_does_not_skip_it():
    clock = HandClock()
    m = make_machine(clock)
    m.interrupted()
    v = m.view()
    assert v["screen"] == "ended" and v["view"]["reason"] == "restart" and v["session_id"] is None
    assert m.presence() == [] and m.screen == "ended"
    clock.advance(RESTART_HOLD_S - 1)
    m.tick()
    assert m.screen == "ended"
    clock.advance(1)
    m.tick()
    assert m.screen == "attract"


def test_a_card_left_on_the_reader_through_a_restart_starts_a_session_that_still_says_so():
    m = make_machine()
    m.interrupted()
    assert events(m.card_read(ZHANG_SAN)) == ["session.started"]
    v = m.view()
    assert v["screen"] == "catalog" and v["notice"] == {"code": "restarted", "params": {}}


# --- 3. take your card ------------------------------------------------------------------------------


def test_the_card_left_on_the_reader_is_asked_for_with_the_buzzer_until_it_is_taken():
    clock = HandClock()
    m = make_machine(clock)
    to_documents(m)
    effects = m.intent("end", {})
    assert Signal(CARD_LEFT, {"reminder": 1}) in effects
    v = m.view()["view"]
    assert v == {"reason": "cancelled", "outcome": None, "card_on_reader": True, "reminders": 1}
    assert m.presence() == [] and m.screen == "ended"  # the next one waits for the card to go
    clock.advance(CARD_REMINDER_S)
    assert m.next_wakeup() == pytest.approx(clock.t)
    assert m.tick() == [Signal(CARD_LEFT, {"reminder": 2})] and m.screen == "ended"
    clock.advance(CARD_REMINDER_S)
    assert m.tick() == [Signal(CARD_LEFT, {"reminder": 3})] and m.view()["view"]["reminders"] == 3
    assert m.card_removed() == [] and m.view()["view"]["card_on_reader"] is False
    clock.advance(6)
    assert m.tick() == [] and m.screen == "attract"


def test_the_next_villager_is_not_made_to_lift_a_card_already_on_the_reader():
    clock = HandClock()
    m = make_machine(clock)
    to_documents(m)
    m.intent("end", {})
    clock.advance(120)  # nobody took the card: after a while the kiosk sleeps anyway
    while m.screen == "ended":
        m.tick()
    assert m.screen == "attract" and m.card_on_reader
    effects = m.presence()
    assert events(effects) == ["session.started"] and Signal(READ_CARD_AGAIN, {}) in effects
    # the reader reads the card lying there; the new session asks "is this you?" when it needs it
    m.card_read(LI_SI)
    m.intent("select_department", {"department_id": "minzheng"})
    m.intent("select_item", {"item_id": "minzheng.elderly_allowance"})
    assert m.screen == "confirm_identity" and m.view()["identity"]["name"] == "李四"


def test_a_card_placed_on_the_idle_kiosk_is_not_read_twice():
    m = make_machine()
    effects = m.card_read(ZHANG_SAN)
    assert events(effects) == ["session.started"] and not any(isinstance(e, Signal) for e in effects)


# --- 4. waiting for the clerk is not idling ---------------------------------------------------------


def test_the_idle_timer_does_not_end_a_villager_waiting_for_the_clerk():
    clock = HandClock()
    m = make_machine(clock)  # call_wait_timeout_s 600, idle_timeout_s 90
    to_documents(m, "shebao.pension_certification")
    m.intent("call", {})
    assert m.screen == "call_waiting"
    for _ in range(59):  # ten minutes sitting still, no presence sensor firing
        clock.advance(10)
        assert m.tick() == [] or m.screen == "call_waiting"
        v = m.view()
        assert v["screen"] == "call_waiting" and v["idle"] is None and "still_here" not in v["actions"]
    clock.advance(10)
    assert events(m.tick()) == ["session.call.unanswered"]
    # nobody answered: now the villager chooses, and the idle timer runs afresh from here
    v = m.view()
    assert v["view"]["status"] == "no_answer" and v["idle"]["countdown"] is None
    clock.advance(89)
    m.tick()
    assert m.screen == "call_waiting" and m.countdown() == 1
    clock.advance(1)
    assert events(m.tick()) == ["session.ended"]


def test_queue_position_updates_keep_the_wait_going():
    clock = HandClock()
    m = make_machine(clock)
    to_documents(m, "shebao.pension_certification")
    m.intent("call", {})
    clock.advance(300)
    m.command("session.call.queued", {"session_id": m.session.id, "position": 1, "estimated_wait_s": 60})
    clock.advance(200)
    assert m.tick() == [] and m.screen == "call_waiting"
    m.command("session.call.accepted", {"session_id": m.session.id, "clerk": CLERK})
    assert m.screen == "call"


# --- the card on and off the reader, in any order ---------------------------------------------------

CARD_OPS = st.lists(
    st.sampled_from(
        ["capture_back", "capture_paper", "shoot", "accept", "retake", "back", "lift", "zhang", "li", "tick"]
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CARD_OPS)
def test_no_sequence_of_card_moves_leaves_a_guarded_screen_without_the_card(ops):
    """Whatever the villager does with the card and the camera, they are never on the checklist or the
    call with the card away, never on the capture of a paper other than the card with the card away,
    and nobody else's card ever resumes the session."""
    clock = HandClock()
    m = make_machine(clock)
    to_call(m)
    reply, _ = m.command("session.request_document", {"session_id": m.session.id, "name": "身份证背面"})
    back_of_card = reply["doc_id"]
    m.intent("capture", {"doc_id": back_of_card})
    on_reader = True
    pending: CaptureDocument | None = None
    for op in ops:
        try:
            if op == "capture_back":
                m.intent("capture", {"doc_id": back_of_card})
            elif op == "capture_paper":
                m.intent("capture", {"doc_id": "hukou_book"})
            elif op == "shoot":
                pending = next(e for e in m.intent("shoot", {}) if isinstance(e, CaptureDocument))
                m.capture_finished(pending.session_id, pending.doc_id, pending.attempt, image=image())
            elif op in ("accept", "retake", "back"):
                m.intent(op, {})
            elif op == "lift":
                m.card_removed()
                on_reader = False
            elif op == "zhang":
                m.card_read(ZHANG_SAN)
                on_reader = True
            elif op == "li":
                m.card_read(LI_SI)
                on_reader = True
            else:
                clock.advance(20)
                m.tick()
        except IntentRejected:
            pass  # not offered on this screen: the UI would not have sent it
        s = m.session
        assert s is not None and s.id_masked == "3308**********123X"  # Li Si never took over
        assert m.card_on_reader is on_reader
        view = m.view()
        if m.screen in ("documents", "call", "call_waiting"):
            assert s.card_present, (op, view)
        if m.screen == "capture" and not s.card_present:
            assert s.capture is not None and s.capture.doc_id == back_of_card, (op, view)
        if m.screen == "card_removed":
            assert not s.card_present and view["view"]["returns_to"] in ("documents", "call")
