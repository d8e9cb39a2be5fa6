"""The pure session machine, walked through every flow a villager, a clerk or a technician can take."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from session_helpers import (
    CLERK,
    LI_SI,
    SESSION_ID,
    ZHANG_SAN,
    HandClock,
    capture,
    events,
    image,
    make_machine,
    to_call,
    to_documents,
)

from appliance.session.config import hash_pin
from appliance.session.errors import IntentRejected
from appliance.session.machine import (
    CaptureDocument,
    DropCapture,
    DropDocument,
    Emit,
    KeepCapture,
    RefreshTechnician,
    RunSelfTest,
    WipeSession,
)
from kiosk_core.errors import BadRequest, Conflict


def sid(m) -> dict:
    return {"session_id": m.session.id}


def test_attract_wakes_on_presence_and_shows_the_catalog():
    m = make_machine()
    assert m.view()["screen"] == "attract" and m.actions() == ["wake", "language"]
    assert m.view()["view"] == {"site": "赤柯山村便民服务站", "catalog_version": 1}
    effects = m.presence()
    assert events(effects) == ["session.started"] and effects[0].data["trigger"] == "presence"
    v = m.view()
    assert v["screen"] == "catalog" and v["session_id"] == SESSION_ID
    assert v["view"]["department"] is None and len(v["view"]["departments"]) >= 6
    assert "select_item" not in v["actions"]


def test_touch_on_attract_wakes_too_and_a_second_presence_does_not_restart():
    m = make_machine()
    assert events(m.intent("wake", {})) == ["session.started"]
    assert m.presence() == []
    assert m.session.id == SESSION_ID


def test_happy_path_application_from_catalog_to_rating():
    clock = HandClock()
    m = make_machine(clock)
    m.presence()
    m.intent("select_department", {"department_id": "minzheng"})
    items = m.view()["view"]["items"]
    assert any(i["id"] == "minzheng.low_income_allowance" for i in items)
    assert events(m.intent("select_item", {"item_id": "minzheng.low_income_allowance"})) == [
        "session.item.selected"
    ]
    assert m.view()["screen"] == "identify"

    # place the card: the name and a masked number are shown, never the full number
    assert events(m.card_read(ZHANG_SAN)) == ["session.identified"]
    v = m.view()
    assert v["screen"] == "confirm_identity"
    assert v["identity"] == {"name": "张三", "id_masked": "3308**********123X"}
    assert "33080319900307123X" not in json.dumps(v, ensure_ascii=False)
    assert events(m.intent("confirm", {})) == ["session.identity.confirmed"]

    v = m.view()
    assert v["screen"] == "documents" and not v["view"]["complete"] and "call" not in v["actions"]
    for n, doc in enumerate(("hukou_book", "income_proof")):
        effects = capture(m, doc, n)
        assert isinstance(effects[0], KeepCapture) and events(effects) == ["session.document.captured"]
    v = m.view()
    assert v["view"]["complete"] and "call" in v["actions"]

    effects = m.intent("call", {})
    assert events(effects) == ["session.call.requested"]
    assert [d["doc_id"] for d in effects[0].data["documents"]] == ["hukou_book", "income_proof"]
    assert m.view()["view"]["status"] == "requesting"
    m.command("session.call.queued", {**sid(m), "position": 2, "estimated_wait_s": 120})
    clock.advance(30)
    v = m.view()["view"]
    assert (v["status"], v["position"], v["estimated_wait_s"], v["waited_s"]) == ("queued", 2, 120, 30)

    reply, effects = m.command(
        "session.call.accepted",
        {**sid(m), "clerk": {"id": "c-0042", "name": "李明", "department": "minzheng"}},
    )
    assert reply == {"ok": True} and events(effects) == ["session.call.connected"]
    v = m.view()
    assert v["screen"] == "call" and v["idle"] is None
    assert v["view"]["clerk"]["department"]["name"]["zh-CN"] == "民政"

    reply, _ = m.command("session.request_document", {**sid(m), "name": "户口簿首页", "note": "要清楚"})
    assert reply == {"doc_id": "req-1"}
    v = m.view()
    assert v["notice"]["code"] == "clerk_requested_document" and v["actions"] == [
        "capture",
        "reply",
        "end",
        "language",
    ]
    assert v["view"]["requested_documents"][0]["status"] == "missing"
    capture(m, "req-1", 9)
    assert m.view()["screen"] == "call" and m.view()["actions"] == ["reply", "end", "language"]

    m.command("session.message", {**sid(m), "text": "材料齐全，马上受理。"})
    assert m.view()["view"]["messages"][-1]["text"] == "材料齐全，马上受理。"

    _, effects = m.command("session.approve", {**sid(m), "application_no": "SQ330803-20261121-0007"})
    assert events(effects) == ["session.approved"]
    v = m.view()
    assert v["screen"] == "receipt" and v["view"]["application_no"] == "SQ330803-20261121-0007"
    assert v["view"]["qr_text"].endswith("no=SQ330803-20261121-0007")

    m.intent("continue", {})
    assert m.view()["screen"] == "rating" and m.view()["view"]["reasons"][0] == "fast"
    effects = m.intent("rate", {"score": 5, "reason": "fast"})
    assert events(effects) == ["session.rated", "session.ended"]
    assert effects[0].data["score"] == 5 and effects[0].data["clerk_id"] == "c-0042"
    assert effects[2] == WipeSession(SESSION_ID)  # then "take your card" (it is still on the reader)
    v = m.view()
    assert v["screen"] == "ended" and v["identity"] is None and v["view"]["reason"] == "completed"
    m.card_removed()  # the villager takes the card
    clock.advance(6)
    m.tick()
    assert m.view()["screen"] == "attract"


def test_no_durable_event_carries_the_full_number_or_the_name():
    m = make_machine()
    collected = []
    to_documents(m)
    collected += m.intent("back", {})
    collected += m.intent("progress", {})
    collected += m.command("session.progress.result", {**sid(m), "applications": []})[1]
    collected += m.intent("done", {})
    text = json.dumps([e.data for e in collected if hasattr(e, "data")], ensure_ascii=False)
    assert "33080319900307123X" not in text and "张三" not in text


def test_card_removed_mid_session_asks_to_put_it_back_then_resumes():
    m = make_machine()
    to_documents(m)
    capture(m, "hukou_book")
    assert events(m.card_removed()) == ["session.card.removed"]
    v = m.view()
    assert (
        v["screen"] == "card_removed"
        and v["view"]["returns_to"] == "documents"
        and v["actions"] == ["end", "language"]
    )
    # somebody else's card does not resume the session
    assert m.card_read(LI_SI) == []
    assert m.view()["notice"]["code"] == "card_mismatch" and m.view()["identity"]["name"] == "张三"
    assert events(m.card_read(ZHANG_SAN)) == ["session.card.returned"]
    v = m.view()
    assert v["screen"] == "documents" and v["view"]["checklist"][0]["status"] == "captured"


def test_card_removed_mid_capture_drops_the_pending_picture():
    m = make_machine()
    to_documents(m)
    m.intent("capture", {"doc_id": "hukou_book"})
    (shoot,) = m.intent("shoot", {})
    m.capture_finished(shoot.session_id, "hukou_book", shoot.attempt, image=image())
    effects = m.card_removed()
    assert DropCapture(SESSION_ID, "hukou_book") in effects
    m.card_read(ZHANG_SAN)
    assert m.view()["screen"] == "documents" and m.view()["view"]["checklist"][0]["status"] == "missing"


def test_card_removed_then_end_wipes_the_session():
    m = make_machine()
    to_documents(m)
    m.card_removed()
    effects = m.intent("end", {})
    assert events(effects) == ["session.ended"] and effects[0].data["reason"] == "cancelled"
    assert WipeSession(SESSION_ID) in effects and m.session is None


def test_card_taken_before_confirming_goes_back_to_identify_and_forgets_it():
    m = make_machine()
    m.presence()
    m.intent("progress", {})
    m.card_read(ZHANG_SAN)
    assert m.view()["screen"] == "confirm_identity"
    m.card_removed()
    assert m.view()["screen"] == "identify" and m.view()["identity"] is None


def test_card_placed_while_browsing_is_used_when_identification_comes():
    m = make_machine()
    m.presence()
    assert m.card_read(ZHANG_SAN) == []
    assert m.view()["screen"] == "catalog"
    m.intent("select_department", {"department_id": "shebao"})
    effects = m.intent("select_item", {"item_id": "shebao.pension_certification"})
    assert events(effects) == ["session.item.selected", "session.identified"]
    assert m.view()["screen"] == "confirm_identity"


def test_a_card_placed_on_the_idle_kiosk_wakes_it_and_is_remembered():
    m = make_machine()
    assert events(m.card_read(ZHANG_SAN)) == ["session.started"]
    assert m.view()["screen"] == "catalog" and m.session.trigger == "card"
    m.intent("progress", {})
    assert m.view()["screen"] == "confirm_identity"


def test_invalid_or_unreadable_card_stays_on_identify_with_a_notice():
    m = make_machine()
    m.presence()
    m.intent("progress", {})
    m.card_read({**LI_SI, "valid": False, "problems": ["expired 2020-01-01"]})
    v = m.view()
    assert v["screen"] == "identify" and v["notice"] == {
        "code": "card_invalid",
        "params": {"problems": ["expired 2020-01-01"]},
    }
    m.card_read({"garbage": 1})
    assert m.view()["notice"]["code"] == "card_unreadable" and m.view()["identity"] is None


def test_not_me_wipes_the_identity_and_asks_for_the_card_again():
    m = make_machine()
    m.presence()
    m.intent("progress", {})
    m.card_read(LI_SI)
    assert events(m.intent("not_me", {})) == ["session.identity.rejected"]
    assert m.view()["screen"] == "identify" and m.session.id_number is None


def test_idle_timeout_counts_down_for_15_seconds_then_ends_and_wipes():
    clock = HandClock()
    m = make_machine(clock)
    to_documents(m)
    capture(m, "hukou_book")
    clock.advance(74.5)
    assert m.countdown() is None and m.next_wakeup() == pytest.approx(clock.t + 0.5)
    clock.advance(0.5)
    assert events(m.tick()) == ["session.idle.warning"]
    v = m.view()
    assert (
        v["idle"] == {"timeout_s": 90.0, "warn_s": 15.0, "countdown": 15} and v["actions"][0] == "still_here"
    )
    clock.advance(2.3)
    assert m.view()["idle"]["countdown"] == 13 and m.next_wakeup() == pytest.approx(clock.t + 0.7)
    # "still here" resets the timer and hides the countdown
    m.intent("still_here", {})
    assert m.view()["idle"]["countdown"] is None and "still_here" not in m.actions()
    clock.advance(89.9)
    assert events(m.tick()) == ["session.idle.warning"] and m.view()["idle"]["countdown"] == 1
    clock.advance(0.1)
    effects = m.tick()
    assert events(effects) == ["session.ended"] and effects[0].data["reason"] == "idle_timeout"
    assert WipeSession(SESSION_ID) in effects
    v = m.view()
    assert v["screen"] == "ended" and v["identity"] is None and v["session_id"] is None and m.session is None


def test_presence_and_touch_count_as_activity():
    clock = HandClock()
    m = make_machine(clock)
    m.presence()
    clock.advance(80)
    m.presence()
    clock.advance(80)
    m.intent("touch", {})
    clock.advance(89)
    assert events(m.tick()) == ["session.idle.warning"] and m.screen == "catalog"


def test_idle_timer_is_suspended_while_talking_to_the_clerk():
    clock = HandClock()
    m = make_machine(clock)
    to_call(m)
    clock.advance(600)
    assert m.tick() == [] and m.screen == "call" and m.view()["idle"] is None


def test_rejection_shows_the_reason_then_rating():
    m = make_machine()
    to_call(m)
    with pytest.raises(BadRequest, match="reason"):
        m.command("session.reject", sid(m))
    _, effects = m.command("session.reject", {**sid(m), "reason": "收入证明需村委会盖章后再申请。"})
    assert events(effects) == ["session.rejected"]
    v = m.view()
    assert (
        v["screen"] == "rejected"
        and v["view"]["reason"].startswith("收入证明")
        and v["actions"] == ["call", "appointment", "continue", "language"]
    )
    m.intent("continue", {})
    assert events(m.intent("skip", {})) == ["session.ended"]
    v = m.view()  # not "completed" as if the application had gone through
    assert (
        v["screen"] == "ended" and {"reason": "completed", "outcome": "rejected"}.items() <= v["view"].items()
    )


def test_after_a_rejection_the_villager_can_call_again_or_book_a_window_visit():
    m = make_machine()
    to_call(m)
    m.command("session.reject", {**sid(m), "reason": "收入证明需村委会盖章后再申请。"})
    assert events(m.intent("call", {})) == ["session.call.requested"]
    assert m.screen == "call_waiting" and m.session.outcome is None
    m.command("session.call.accepted", {**sid(m), "clerk": CLERK})
    m.command("session.approve", {**sid(m), "application_no": "SQ-2"})  # the second clerk says yes
    m.intent("continue", {})
    m.intent("skip", {})
    assert {"reason": "completed", "outcome": "approved"}.items() <= m.view()["view"].items()

    m = make_machine()
    to_call(m)
    m.command("session.reject", {**sid(m), "reason": "请到窗口当面办理。"})
    effects = m.intent("appointment", {})
    assert events(effects) == ["session.appointment.requested"]  # the item's department, at once
    assert effects[0].data["department_id"] == "minzheng" and "session.call.cancelled" not in events(effects)
    v = m.view()
    assert v["screen"] == "appointment" and v["view"]["phase"] == "loading"


def test_rating_validates_score_and_reason():
    m = make_machine()
    to_call(m)
    m.command("session.approve", {**sid(m), "application_no": "SQ-1"})
    m.intent("continue", {})
    for bad in (
        {"score": 0},
        {"score": 6},
        {"score": "5"},
        {"score": True},
        {"score": 3, "reason": 7},
        {"score": 3, "reason": "x" * 201},
    ):
        with pytest.raises(IntentRejected):
            m.intent("rate", bad)
    assert m.screen == "rating"
    effects = m.intent("rate", {"score": 2, "reason": "等得太久"})
    assert effects[0].data["reason"] == "等得太久"


def test_villager_hangs_up_during_the_call_and_is_asked_to_rate():
    m = make_machine()
    to_call(m)
    effects = m.intent("end", {})
    assert events(effects) == ["session.call.ended"] and m.screen == "rating"


def test_clerk_ends_the_session_before_connecting_and_after_the_receipt():
    m = make_machine()
    to_documents(m)
    reply, effects = m.command("session.end", {**sid(m), "reason": "系统维护"})
    assert reply == {"ok": True, "screen": "ended"} and effects[0].data["reason"] == "clerk_ended"
    m2 = make_machine()
    to_call(m2)
    m2.command("session.approve", {**sid(m2), "application_no": "SQ-2"})
    reply, effects = m2.command("session.end", sid(m2))
    assert reply == {"ok": True, "screen": "receipt"} and effects == []


def test_call_not_answered_offers_retry_or_appointment():
    clock = HandClock()
    m = make_machine(clock, call_wait_timeout_s=60)
    to_documents(m)
    for n, doc in enumerate(("hukou_book", "income_proof")):
        capture(m, doc, n)
    m.intent("call", {})
    for _ in range(4):  # the villager stays (presence keeps the idle timer from running out)
        clock.advance(15)
        m.presence()
    assert events(m.tick()) == ["session.call.unanswered"]
    v = m.view()
    assert v["view"]["status"] == "no_answer" and v["actions"] == ["call", "appointment", "end", "language"]
    effects = m.intent("appointment", {})
    assert events(effects) == ["session.call.cancelled", "session.appointment.requested"]
    assert effects[1].data["department_id"] == "minzheng" and m.view()["view"]["phase"] == "loading"


def test_cancel_call_returns_to_the_checklist():
    m = make_machine()
    to_documents(m)
    for n, doc in enumerate(("hukou_book", "income_proof")):
        capture(m, doc, n)
    m.intent("call", {})
    assert events(m.intent("cancel_call", {})) == ["session.call.cancelled"]
    assert m.screen == "documents"
    with pytest.raises(Conflict):
        m.command(
            "session.call.accepted",
            {**sid(m), "clerk": {"id": "c1", "name": "李明", "department": "minzheng"}},
        )


def test_capture_retake_and_camera_failure():
    m = make_machine()
    to_documents(m)
    m.intent("capture", {"doc_id": "hukou_book"})
    assert m.view()["view"]["phase"] == "preview" and m.actions() == ["shoot", "back", "end", "language"]
    (shoot,) = m.intent("shoot", {})
    assert m.view()["view"]["phase"] == "capturing" and m.actions() == ["language"]
    effects = m.capture_finished(shoot.session_id, "hukou_book", shoot.attempt, error="doccam missing")
    assert events(effects) == ["session.document.failed"]
    v = m.view()
    assert v["view"]["phase"] == "failed" and v["notice"]["code"] == "doccam_unavailable"
    (shoot2,) = m.intent("shoot", {})
    assert shoot2.attempt != shoot.attempt
    # a late answer to the first attempt is stale
    assert m.capture_finished(shoot.session_id, "hukou_book", shoot.attempt, image=image()) is None
    m.capture_finished(shoot2.session_id, "hukou_book", shoot2.attempt, image=image(2))
    assert m.view()["view"]["image"]["sha256"] == image(2)["sha256"]
    assert m.intent("retake", {}) == [DropCapture(SESSION_ID, "hukou_book")]
    assert m.view()["view"]["phase"] == "preview"
    m.intent("back", {})
    assert m.screen == "documents" and m.view()["view"]["checklist"][1]["status"] == "missing"


def test_choosing_another_item_keeps_shared_documents_and_drops_the_rest():
    m = make_machine()
    to_documents(m)
    capture(m, "hukou_book", 1)
    capture(m, "income_proof", 2)
    m.intent("back", {})
    m.intent("select_department", {"department_id": "canlian"})
    effects = m.intent("select_item", {"item_id": "canlian.living_allowance"})
    assert DropDocument(SESSION_ID, "income_proof") not in effects  # living allowance needs it too
    assert m.screen == "documents"  # identity already confirmed: no second card reading
    statuses = {d["doc_id"]: d["status"] for d in m.view()["view"]["checklist"]}
    # the ID card is read from its chip: no photo of it is asked for
    assert statuses == {"disability_cert": "missing", "income_proof": "captured"}
    assert DropDocument(SESSION_ID, "hukou_book") in effects  # the living allowance does not need it
    m.intent("back", {})
    m.intent("select_department", {"department_id": "shebao"})
    effects = m.intent("select_item", {"item_id": "shebao.pension_certification"})
    assert DropDocument(SESSION_ID, "income_proof") in effects


def test_progress_lookup_with_identity_and_platform_answer():
    clock = HandClock()
    m = make_machine(clock)
    m.presence()
    m.intent("progress", {})
    assert m.view()["view"]["next"] == "progress"
    m.card_read(ZHANG_SAN)
    effects = m.intent("confirm", {})
    assert events(effects) == ["session.identity.confirmed", "session.progress.requested"]
    assert m.view()["view"] == {"phase": "loading", "applications": []}
    # the platform may read the identity only now, and only for this session
    card, _ = m.command("session.identity.get", sid(m))
    assert card["id_number"] == "33080319900307123X" and "photo_wlt" not in card
    apps = [
        {
            "application_no": "SQ-9",
            "item_name": "最低生活保障申请",
            "status": "in_review",
            "updated_at": "2026-11-18",
        }
    ]
    m.command("session.progress.result", {**sid(m), "applications": apps})
    v = m.view()
    assert (
        v["view"]["phase"] == "result"
        and v["view"]["applications"][0]["item_name"]["zh-CN"] == "最低生活保障申请"
    )
    assert events(m.intent("done", {})) == ["session.progress.shown", "session.ended"]


def test_progress_lookup_times_out_and_retries():
    clock = HandClock()
    m = make_machine(clock, platform_timeout_s=20)
    m.presence()
    m.intent("progress", {})
    m.card_read(ZHANG_SAN)
    m.intent("confirm", {})
    clock.advance(20)
    m.tick()
    v = m.view()
    assert v["view"]["phase"] == "failed" and v["notice"]["code"] == "platform_timeout"
    assert v["actions"] == ["retry", "end", "language"]
    assert events(m.intent("retry", {})) == ["session.progress.requested"]


def test_appointment_booking_with_a_declined_slot():
    m = make_machine()
    m.presence()
    m.intent("appointment", {})
    v = m.view()
    assert v["screen"] == "appointment" and v["view"]["phase"] == "department"
    m.intent("select_department", {"department_id": "shebao"})
    assert m.view()["screen"] == "identify" and m.view()["view"]["department"]["id"] == "shebao"
    m.card_read(ZHANG_SAN)
    assert events(m.intent("confirm", {})) == ["session.identity.confirmed", "session.appointment.requested"]
    with pytest.raises(Conflict, match="department"):
        m.command("session.appointment.slots", {**sid(m), "department_id": "yibao", "slots": []})
    slots = [
        {
            "slot_id": "sl-1",
            "start": "2026-11-23T09:00:00+08:00",
            "end": "2026-11-23T09:20:00+08:00",
            "official": "王芳",
            "place": "县行政服务中心一楼综合窗口",
        },
        {"slot_id": "sl-2", "start": "2026-11-23T10:00:00+08:00", "end": "2026-11-23T10:20:00+08:00"},
    ]
    m.command("session.appointment.slots", {**sid(m), "department_id": "shebao", "slots": slots})
    assert m.view()["view"]["phase"] == "slots" and m.actions()[0] == "book"
    assert [sl["place"] for sl in m.view()["view"]["slots"]] == ["县行政服务中心一楼综合窗口", None]
    for bad_place in ("", "x" * 61, 7):
        with pytest.raises(BadRequest, match="place"):
            m.command(
                "session.appointment.slots",
                {**sid(m), "department_id": "shebao", "slots": [{**slots[0], "place": bad_place}]},
            )
    with pytest.raises(IntentRejected):
        m.intent("book", {"slot_id": "sl-9"})
    assert events(m.intent("book", {"slot_id": "sl-1"})) == ["session.appointment.book_requested"]
    with pytest.raises(Conflict, match="slot"):
        m.command("session.appointment.confirmed", {**sid(m), "slot_id": "sl-2", "booking_no": "YY-1"})
    m.command("session.appointment.declined", {**sid(m), "slot_id": "sl-1", "reason": "已被预约"})
    v = m.view()
    assert v["view"]["phase"] == "declined" and [s["slot_id"] for s in v["view"]["slots"]] == ["sl-2"]
    assert v["notice"] == {"code": "slot_taken", "params": {"reason": "已被预约"}}
    m.intent("book", {"slot_id": "sl-2"})
    _, effects = m.command(
        "session.appointment.confirmed", {**sid(m), "slot_id": "sl-2", "booking_no": "YY-2"}
    )
    assert events(effects) == ["session.appointment.booked"]
    v = m.view()
    assert v["view"]["phase"] == "booked" and v["view"]["booking"]["booking_no"] == "YY-2"
    assert events(m.intent("done", {})) == ["session.ended"]


def test_technician_mode_with_pin_lockout_and_exit():
    clock = HandClock()
    pin_hash = hash_pin("246810", iterations=1000)
    m = make_machine(clock, technician_pin_hash=pin_hash, pin_attempts=2, pin_lockout_s=60, pin_idle_s=90)
    assert events(m.help_held()) == []  # on the idle kiosk (attract)
    v = m.view()
    assert v["screen"] == "technician_pin" and v["session_id"] is None and v["identity"] is None
    assert v["view"] == {
        "digits": 6,
        "attempts_left": 2,
        "locked_s": None,
        "session_running": False,
        "phase": "pin",
        "leave_s": 90,
    }
    with pytest.raises(IntentRejected):
        m.intent("technician_pin", {"pin": "12ab"})
    assert events(m.intent("technician_pin", {"pin": "111111"})) == ["session.technician.pin_failed"]
    assert m.view()["notice"] == {"code": "wrong_pin", "params": {"attempts_left": 1}}
    assert events(m.intent("technician_pin", {"pin": "222222"})) == ["session.technician.locked"]
    v = m.view()
    assert v["view"]["locked_s"] == 60 and v["actions"] == ["technician_exit"]
    with pytest.raises(IntentRejected):
        m.intent("technician_pin", {"pin": "246810"})  # even the right PIN waits out the lockout
    m.intent("technician_exit", {})
    assert m.screen == "attract"
    m.help_held()
    assert m.view()["view"]["locked_s"] == 60  # leaving and coming back does not reset the lockout
    clock.advance(60)
    m.tick()
    effects = m.intent("technician_pin", {"pin": "246810"})
    assert events(effects) == ["session.technician.entered"] and RefreshTechnician() in effects
    m.set_technician_status(
        {
            "device": {"id": "kiosk-0001"},
            "peripherals": [{"name": "card_reader", "kind": "card_reader", "status": "ok", "reason": ""}],
            "network": {},
        }
    )
    assert m.intent("technician_test", {"peripheral": "card_reader"}) == [RunSelfTest("card_reader")]
    assert m.view()["view"]["tests"]["card_reader"]["status"] == "running"
    with pytest.raises(IntentRejected):
        m.intent("technician_test", {"peripheral": "toaster"})
    assert events(m.test_finished("card_reader", "passed", "read sample card")) == ["session.technician.test"]
    assert m.view()["notice"]["code"] == "test_done"
    clock.advance(120)
    assert events(m.tick()) == ["session.technician.exited"] and m.screen == "attract"


def test_holding_help_in_a_session_pauses_it_and_only_pin_plus_confirm_ends_it():
    """A villager leaned on the help button mid-application: nothing of theirs is lost, they can leave
    the PIN pad, and a technician ends the session only by the PIN and an explicit confirm."""
    clock = HandClock()
    m = make_machine(clock, technician_pin_hash=hash_pin("246810", iterations=1000))
    to_documents(m)
    sid_before = m.session.id
    assert events(m.help_held()) == []  # no session.ended
    v = m.view()
    assert v["screen"] == "technician_pin" and v["session_id"] == sid_before
    assert v["view"]["session_running"] is True and v["view"]["phase"] == "pin"
    assert v["idle"] is None and v["actions"] == ["technician_pin", "technician_exit"]
    with pytest.raises(Conflict, match="paused"):  # the platform cannot move it on from behind the pad
        m.command("session.end", sid(m))
    clock.advance(29)
    assert events(m.tick()) == [] and m.screen == "technician_pin"
    assert m.next_wakeup() == pytest.approx(clock.monotonic() + 1)
    clock.advance(1)  # 30 s untouched: the pad goes back by itself; the idle timer was paused under it
    assert events(m.tick()) == [] and m.screen == "documents" and m.session.id == sid_before
    assert m.view()["idle"]["countdown"] is None  # a full idle time again
    # the help button's short press also leaves the pad, back to the same screen
    m.help_held()
    assert events(m.help_pressed()) == [] and m.screen == "documents"
    # technician_exit (✗ / Esc / Backspace on an empty PIN) too
    m.help_held()
    m.intent("technician_exit", {})
    assert m.screen == "documents" and m.session.id == sid_before
    # the right PIN alone does not end it: a confirm step says a session is running
    m.help_held()
    assert events(m.intent("technician_pin", {"pin": "246810"})) == []
    v = m.view()
    assert v["screen"] == "technician_pin" and v["view"]["phase"] == "confirm_end"
    assert v["actions"] == ["technician_end_session", "technician_exit"]
    with pytest.raises(IntentRejected):
        m.intent("technician_pin", {"pin": "246810"})
    m.intent("technician_exit", {})  # the technician changes their mind: the villager carries on
    assert m.screen == "documents" and m.session.id == sid_before
    m.help_held()
    m.intent("technician_pin", {"pin": "246810"})
    effects = m.intent("technician_end_session", {})
    assert events(effects) == ["session.ended", "session.technician.entered"]
    assert effects[0].data["reason"] == "technician" and RefreshTechnician() in effects
    assert m.screen == "technician" and m.session is None and m.view()["identity"] is None


def test_a_card_taken_away_while_paused_is_noticed_on_the_way_back():
    clock = HandClock()
    m = make_machine(clock)
    to_documents(m)
    m.help_held()
    m.card_removed()
    assert m.screen == "technician_pin"
    m.help_pressed()
    assert m.screen == "card_removed" and m.view()["view"]["returns_to"] == "documents"


def test_a_shot_in_flight_while_paused_is_taken_again_on_the_way_back():
    m = make_machine()
    to_documents(m)
    m.intent("capture", {"doc_id": "hukou_book"})
    (shot,) = m.intent("shoot", {})
    m.help_held()
    # the camera answers while the PIN pad shows: stale, the service drops the image
    assert m.capture_finished(shot.session_id, shot.doc_id, shot.attempt, image=image()) is None
    m.help_pressed()
    v = m.view()
    assert v["screen"] == "capture" and v["view"]["phase"] == "preview" and v["actions"][0] == "shoot"


def test_a_short_press_of_help_says_staff_were_notified_over_the_current_screen():
    clock = HandClock()
    m = make_machine(clock)
    assert events(m.help_pressed()) == []
    assert m.view()["screen"] == "attract" and m.view()["notice"] == {"code": "help_requested", "params": {}}
    to_documents(m)
    clock.advance(70)
    m.help_pressed()
    v = m.view()
    assert v["screen"] == "documents" and v["notice"] == {"code": "help_requested", "params": {}}
    assert v["idle"]["countdown"] is None  # pressing for help counts as activity
    assert m.next_wakeup() == pytest.approx(clock.monotonic() + 60)
    clock.advance(60)
    m.tick()  # a minute later it has been said: the notice goes, the screen stays
    assert m.view()["notice"] is None and m.screen == "documents"


def test_language_switch_holds_for_the_session_and_resets_after():
    clock = HandClock()
    m = make_machine(clock)
    m.presence()
    m.intent("language", {"lang": "en"})
    assert m.view()["lang"] == "en"
    with pytest.raises(IntentRejected):
        m.intent("language", {"lang": "fr"})
    m.intent("end", {})
    assert m.view()["lang"] == "en"  # the goodbye is still in the villager's language
    clock.advance(6)
    m.tick()
    assert m.view()["lang"] == "zh-CN"


@pytest.mark.parametrize(
    "name, body, why",
    [
        ("launch_missiles", {}, "unknown intent"),
        ("select_item", {"item_id": "minzheng.low_income_allowance"}, "not available"),
        ("select_department", {"department_id": "../etc"}, "unknown department"),
        ("select_department", {"department_id": ["shebao"]}, "unknown department"),
        ("capture", {"doc_id": "hukou_book"}, "not available"),
        ("language", {"lang": None}, "lang"),
        ("touch", [], "JSON object"),
        ("touch", {"ref": "x" * 65}, "ref"),
        ("progress", {"screen": "attract"}, "stale"),
    ],
)
def test_hostile_or_misplaced_intents_change_nothing(name, body, why):
    m = make_machine()
    m.presence()
    before = json.dumps(m.view(), sort_keys=True)
    with pytest.raises(IntentRejected, match=why):
        m.intent(name, body)
    assert json.dumps(m.view(), sort_keys=True) == before


def test_intents_echo_ref_for_latency_measurement():
    m = make_machine()
    m.intent("wake", {"ref": "ui-17", "screen": "attract"})
    assert m.view()["ref"] == "ui-17"


@pytest.mark.parametrize(
    "name, params, status, why",
    [
        ("session.nonsense", {}, 400, "unknown"),
        ("session.message", {"text": "hi"}, 400, "session_id"),
        ("session.message", {"session_id": "s-1234", "text": "hi"}, 400, "session_id"),
        ("session.message", {"session_id": "s-ffffffffffffffff", "text": "hi"}, 409, "not active"),
        ("session.message", {"session_id": SESSION_ID, "text": ""}, 400, "text"),
        ("session.message", {"session_id": SESSION_ID, "text": "x" * 501}, 400, "text"),
        ("session.message", {"session_id": SESSION_ID, "text": 5}, 400, "text"),
        ("session.message", {"session_id": SESSION_ID, "text": "hi"}, 409, "call"),
        ("session.approve", {"session_id": SESSION_ID, "application_no": "a b"}, 400, "application_no"),
        ("session.approve", {"session_id": SESSION_ID, "application_no": "SQ-1"}, 409, "call"),
        (
            "session.call.queued",
            {"session_id": SESSION_ID, "position": -1, "estimated_wait_s": 1},
            400,
            "position",
        ),
        (
            "session.call.queued",
            {"session_id": SESSION_ID, "position": True, "estimated_wait_s": 1},
            400,
            "position",
        ),
        (
            "session.call.queued",
            {"session_id": SESSION_ID, "position": 1, "estimated_wait_s": 1},
            409,
            "no call",
        ),
        ("session.call.accepted", {"session_id": SESSION_ID, "clerk": "李明"}, 400, "clerk"),
        ("session.request_document", {"session_id": SESSION_ID}, 400, "name"),
        ("session.request_document", {"session_id": SESSION_ID, "doc_id": "passport"}, 400, "doc_id"),
        ("session.progress.result", {"session_id": SESSION_ID, "applications": {}}, 400, "applications"),
        ("session.progress.result", {"session_id": SESSION_ID, "applications": [1]}, 400, "applications.0"),
        ("session.progress.result", {"session_id": SESSION_ID, "applications": []}, 409, "progress"),
        (
            "session.appointment.slots",
            {"session_id": SESSION_ID, "department_id": "shebao", "slots": [{}]},
            400,
            "slot_id",
        ),
        ("session.identity.get", {"session_id": SESSION_ID}, 409, "identity"),
        ("session.end", {"session_id": SESSION_ID, "reason": 3}, 400, "reason"),
    ],
)
def test_hostile_or_misplaced_commands_answer_400_or_409_and_change_nothing(name, params, status, why):
    m = make_machine()
    m.presence()
    m.intent("select_department", {"department_id": "minzheng"})
    m.intent("select_item", {"item_id": "minzheng.low_income_allowance"})
    before = json.dumps(m.view(), sort_keys=True)
    with pytest.raises((BadRequest, Conflict), match=why) as info:
        m.command(name, params)
    assert info.value.status == status
    assert json.dumps(m.view(), sort_keys=True) == before


def test_commands_without_a_session_are_409_and_status_works_always():
    m = make_machine()
    with pytest.raises(Conflict):
        m.command("session.end", {"session_id": SESSION_ID})
    reply, _ = m.command("session.status", {})
    assert reply["screen"] == "attract" and reply["session_id"] is None
    to_call(m)
    reply, _ = m.command("session.status", {})
    assert reply["call"] == {"status": "connected", "clerk_id": "c-0042"}
    assert "张三" not in json.dumps(reply, ensure_ascii=False)


def test_clerk_can_ask_again_for_a_document_already_captured():
    m = make_machine()
    to_call(m)
    reply, _ = m.command("session.request_document", {**sid(m), "doc_id": "income_proof", "note": "盖章页"})
    assert reply == {"doc_id": "income_proof"}
    doc = next(d for d in m.view()["view"]["checklist"] if d["doc_id"] == "income_proof")
    assert doc["status"] == "missing" and doc["requested_by_clerk"] and doc["note"] == "盖章页"
    effects = capture(m, "income_proof", 5)
    assert effects[1].data["requested_by_clerk"] is True


def test_messages_are_capped():
    m = make_machine(max_messages=3)
    to_call(m)
    for n in range(5):
        m.command("session.message", {**sid(m), "text": f"第{n}条"})
    assert [x["text"] for x in m.view()["view"]["messages"]] == ["第2条", "第3条", "第4条"]


def test_approval_while_the_villager_captures_drops_the_capture():
    m = make_machine()
    to_call(m)
    m.command("session.request_document", {**sid(m), "name": "房产证"})
    m.intent("capture", {"doc_id": "req-1"})
    effects = m.intent("shoot", {})
    assert isinstance(effects[0], CaptureDocument)
    approve = {**sid(m), "application_no": "SQ-3", "qr_text": "https://x/y"}
    with pytest.raises(Conflict) as info:  # the paper the clerk asked for is not there yet
        m.command("session.approve", approve)
    assert info.value.detail == {"missing_documents": ["req-1"]} and m.screen == "capture"
    _, effects = m.command("session.approve", {**approve, "override_missing": True})
    assert DropCapture(SESSION_ID, "req-1") in effects and m.screen == "receipt"
    assert m.capture_finished(SESSION_ID, "req-1", 99, image=image()) is None
    assert m.view()["view"]["qr_text"] == "https://x/y"


def test_approve_with_a_requested_document_missing_is_409_unless_the_clerk_overrides():
    m = make_machine()
    to_call(m)
    reply, _ = m.command("session.request_document", {**sid(m), "name": "户口簿首页"})
    approve = {**sid(m), "application_no": "SQ-7"}
    for params in (approve, {**approve, "override_missing": False}):
        with pytest.raises(Conflict) as info:
            m.command("session.approve", params)
        assert info.value.status == 409 and info.value.detail == {"missing_documents": [reply["doc_id"]]}
        assert reply["doc_id"] in str(info.value) and "override_missing" in str(info.value)
    assert m.screen == "call" and m.session.outcome is None  # nothing changed
    for bad in ("yes", 1, None):
        with pytest.raises(BadRequest, match="override_missing"):
            m.command("session.approve", {**approve, "override_missing": bad})
    _, effects = m.command("session.approve", {**approve, "override_missing": True})
    approved = [e for e in effects if isinstance(e, Emit) and e.type == "session.approved"]
    assert approved[0].data["missing_documents"] == [reply["doc_id"]] and m.screen == "receipt"


def test_approve_with_every_document_there_needs_no_override():
    m = make_machine()
    to_call(m)
    m.command("session.request_document", {**sid(m), "name": "户口簿首页"})
    m.intent("capture", {"doc_id": "req-1"})
    (shot,) = m.intent("shoot", {})
    m.capture_finished(shot.session_id, shot.doc_id, shot.attempt, image=image())
    m.intent("accept", {})
    _, effects = m.command("session.approve", {**sid(m), "application_no": "SQ-8"})
    approved = [e for e in effects if isinstance(e, Emit) and e.type == "session.approved"]
    assert "missing_documents" not in approved[0].data and m.screen == "receipt"


def test_stop_ends_the_session_and_shows_unavailable():
    m = make_machine()
    to_documents(m)
    effects = m.stop()
    assert events(effects) == ["session.ended"] and effects[0].data["reason"] == "restart"
    v = m.view()
    assert v["screen"] == "unavailable" and v["actions"] == [] and v["identity"] is None


# --- anything, in any order ------------------------------------------------------------------------------

INTENT_BODIES = st.one_of(
    st.just({}),
    st.fixed_dictionaries({"department_id": st.sampled_from(["shebao", "minzheng", "x", 3])}),
    st.fixed_dictionaries(
        {"item_id": st.sampled_from(["shebao.pension_certification", "minzheng.low_income_allowance", None])}
    ),
    st.fixed_dictionaries(
        {"doc_id": st.sampled_from(["id_card", "hukou_book", "income_proof", "req-1", "zz"])}
    ),
    st.fixed_dictionaries({"score": st.integers(-1, 7)}),
    st.fixed_dictionaries({"slot_id": st.just("sl-1")}),
    st.fixed_dictionaries({"pin": st.sampled_from(["123456", "000000", "x"])}),
    st.fixed_dictionaries({"lang": st.sampled_from(["en", "zh-CN", "xx"])}),
    st.dictionaries(st.text(max_size=5), st.none() | st.integers() | st.text(max_size=5), max_size=3),
)
COMMAND_PARAMS = st.fixed_dictionaries(
    {
        "session_id": st.sampled_from([SESSION_ID, "s-ffffffffffffffff", None, 5]),
        "position": st.integers(-1, 3),
        "estimated_wait_s": st.integers(0, 99),
        "clerk": st.sampled_from([{"id": "c1", "name": "李明", "department": "shebao"}, "bad"]),
        "name": st.sampled_from(["户口簿", "", None]),
        "text": st.sampled_from(["hi", "", 7]),
        "application_no": st.sampled_from(["SQ-1", "bad no"]),
        "reason": st.sampled_from(["r", ""]),
        "applications": st.sampled_from(
            [[], [{"application_no": "A", "item_name": "x", "status": "ok"}], "x"]
        ),
        "department_id": st.sampled_from(["shebao", "yibao"]),
        "slots": st.sampled_from([[{"slot_id": "sl-1", "start": "a", "end": "b"}], []]),
        "slot_id": st.just("sl-1"),
        "booking_no": st.just("YY-1"),
    },
    optional={"unexpected": st.just(1)},
)


def own_fields(m, name: str, params: dict) -> dict:
    """The fields of ``params`` that command ``name`` takes, and a stray ``unexpected`` if drawn (its
    model rejects unknown fields, so sending every command every field would only ever test that)."""
    fields = m.commands[name].params.model_fields
    return {k: v for k, v in params.items() if k in fields or k == "unexpected"}


OPERATIONS = st.one_of(
    st.tuples(
        st.just("intent"), st.sampled_from(sorted(make_machine().intent_names) + ["bogus"]), INTENT_BODIES
    ),
    st.tuples(st.just("command"), st.sampled_from(make_machine().command_names), COMMAND_PARAMS),
    st.tuples(
        st.just("event"),
        st.sampled_from(
            [
                "presence",
                "card_read",
                "card_read_other",
                "card_removed",
                "help_held",
                "help_pressed",
                "capture_ok",
                "capture_failed",
            ]
        ),
        st.none(),
    ),
    st.tuples(st.just("time"), st.sampled_from([1.0, 20.0, 80.0, 700.0]), st.none()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(OPERATIONS, max_size=40))
def test_any_sequence_of_inputs_keeps_the_machine_consistent(ops):
    clock = HandClock()
    m = make_machine(clock, technician_pin_hash=hash_pin("123456", iterations=1000))
    pending: list[CaptureDocument] = []
    for kind, name, arg in ops:
        try:
            if kind == "intent":
                effects = m.intent(name, arg)
            elif kind == "command":
                _, effects = m.command(name, own_fields(m, name, arg))
            elif kind == "time":
                clock.advance(name)
                effects = m.tick()
            elif name == "presence":
                effects = m.presence()
            elif name == "card_read":
                effects = m.card_read(ZHANG_SAN)
            elif name == "card_read_other":
                effects = m.card_read(LI_SI)
            elif name == "card_removed":
                effects = m.card_removed()
            elif name == "help_held":
                effects = m.help_held()
            elif name == "help_pressed":
                effects = m.help_pressed()
            elif pending:
                shot = pending.pop()
                effects = (
                    m.capture_finished(
                        shot.session_id,
                        shot.doc_id,
                        shot.attempt,
                        image=image() if name == "capture_ok" else None,
                        error="x",
                    )
                    or []
                )
            else:
                effects = []
        except (IntentRejected, BadRequest, Conflict):
            continue
        pending += [e for e in effects if isinstance(e, CaptureDocument)]
        view = m.view()
        text = json.dumps(view, ensure_ascii=False)  # always serialisable
        assert "33080319900307123X" not in text
        assert all(
            isinstance(e.data, dict) and "33080319900307123X" not in json.dumps(e.data, ensure_ascii=False)
            for e in effects
            if hasattr(e, "data")
        )
        if m.session is None:
            assert view["identity"] is None and view["session_id"] is None
        nxt = m.next_wakeup()
        assert nxt is None or nxt >= clock.t - 1e-9
        assert set(view["actions"]) <= set(m.intent_names)
