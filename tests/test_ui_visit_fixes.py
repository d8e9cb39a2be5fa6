"""Where a real villager got stuck (issue 8), on the kiosk screen: Pilot at 100x30 on a real mosquitto.

Each test shows the appliance's state for the moment it went wrong, acts as the villager (or the
technician) would, and checks what the screen says and which intents arrive.
"""

from __future__ import annotations

import pytest
import test_ui_flows
from test_ui_flows import Kiosk, sample

from sim.ui_harness import SAMPLES

pytestmark = pytest.mark.timeout(30)
# The UI flows' fixtures: the real app at 100x30 and the appliance's side of a real local bus.
feed = test_ui_flows.feed
kiosk = test_ui_flows.kiosk


# --- the help button and the PIN pad ------------------------------------------------------------------


async def test_help_press_confirms_staff_were_notified_over_the_current_screen(kiosk: Kiosk):
    await kiosk.show(sample("documents", notice={"code": "help_requested", "params": {}}))
    assert "已通知工作人员，请稍候" in kiosk.text and "help_requested" not in kiosk.text
    assert "户口簿" in kiosk.text  # over the screen the villager was on
    await kiosk.show(sample("documents", notice={"code": "help_requested", "params": {}}), lang="en")
    assert "Staff have been notified, please wait" in kiosk.text


async def test_the_pin_pad_says_how_to_leave_and_backspace_on_an_empty_pin_leaves(kiosk: Kiosk):
    paused = sample("technician_pin", notice=None, session_id="s-5d1e0a7c9b2f4e61")
    paused["view"] = {**paused["view"], "session_running": True}
    await kiosk.show(paused)
    text = kiosk.text
    assert "按 ✗、退格键或帮助按钮返回" in text and "30 秒无操作自动返回" in text
    assert "村民正在办理的业务已暂停" in text
    await kiosk.press("1", "backspace")  # a digit typed, then deleted: still on the pad
    await kiosk.pilot.pause(0.2)
    assert kiosk.feed.names() == []
    await kiosk.press("backspace")  # Backspace on the empty PIN: the way out
    await kiosk.feed.next_intent("technician_exit")


async def test_after_the_right_pin_the_technician_confirms_ending_the_villagers_session(kiosk: Kiosk):
    confirm = sample(
        "technician_pin",
        actions=["technician_end_session", "technician_exit"],
        notice=None,
        session_id="s-5d1e0a7c9b2f4e61",
    )
    confirm["view"] = {**confirm["view"], "session_running": True, "phase": "confirm_end"}
    await kiosk.show(confirm)
    assert "有村民正在办理业务" in kiosk.text and "已拍的材料将被删除" in kiosk.text
    assert kiosk.buttons() == {"1": "结束办理", "0": "返回办理"}
    await kiosk.press("0")
    await kiosk.feed.next_intent("technician_exit")
    await kiosk.press("1")
    await kiosk.feed.next_intent("technician_end_session")


# --- an invalid card ----------------------------------------------------------------------------------


async def test_an_invalid_card_says_in_plain_words_what_to_do_never_the_code_or_the_reason(kiosk: Kiosk):
    problems = ["the card expired on 2020-01-01", "ID number check digit does not match (GB 11643)"]
    invalid = sample("identify", notice={"code": "card_invalid", "params": {"problems": problems}})
    await kiosk.show(invalid)
    text = kiosk.text
    assert "这张卡无法使用" in text and "第二代居民身份证" in text and "正面朝上平放在读卡器上" in text
    assert "呼叫工作人员" in text
    for technical in ("card_invalid", "expired", "GB 11643", "check digit"):
        assert technical not in text
    await kiosk.show(invalid, lang="en")
    text = kiosk.text
    assert "This card cannot be used" in text and "lay it flat on the reader" in text
    assert "card_invalid" not in text and "2020-01-01" not in text and "check digit" not in text


# --- progress lookup ----------------------------------------------------------------------------------


async def test_progress_labels_each_date_and_says_the_status_once(kiosk: Kiosk):
    result = sample("progress")
    result["view"]["applications"][1]["note"] = "已办结"  # the platform's note only repeats the status
    await kiosk.show(result)
    text = kiosk.text
    assert "受理日期：2026-11-02" in text and "更新时间：2026-11-18" in text
    assert "更新时间：2026-09-16" in text and "等待入户调查" in text
    assert text.count("已办结") == 1 and text.count("审核中") == 1
    dates = [line for line in text.splitlines() if "2026-" in line]
    assert all("时间：" in line or "日期：" in line for line in dates), dates  # no bare date
    await kiosk.show(result, lang="en")
    text = kiosk.text
    assert "Accepted on 2026-11-02" in text and "Updated 2026-11-18" in text
    assert text.count("Completed") + text.count("completed") == 1, text


# --- appointments -------------------------------------------------------------------------------------


async def test_slots_say_weekday_half_of_day_and_place(kiosk: Kiosk):
    await kiosk.show(SAMPLES["appointment"])
    text = kiosk.text
    assert "11月23日 星期一 上午 09:00-09:20  王芳" in text
    assert "地点：县行政服务中心一楼综合窗口" in text
    afternoon = sample("appointment")
    afternoon["view"]["slots"] = [
        {
            **afternoon["view"]["slots"][0],
            "start": "2026-11-24T14:00:00+08:00",
            "end": "2026-11-24T14:20:00+08:00",
        },
        {**afternoon["view"]["slots"][1], "place": "赤柯山乡便民服务中心"},
    ]
    await kiosk.show(afternoon)
    text = kiosk.text
    assert (
        "11月24日 星期二 下午 14:00-14:20" in text and "赤柯山乡便民服务中心" in text
    )  # places differ: on each
    await kiosk.show(SAMPLES["appointment"], lang="en")
    assert "Mon 11/23 morning 09:00-09:20" in kiosk.text and "Place:" in kiosk.text


async def test_the_booking_says_when_where_and_to_bring_the_id_card(kiosk: Kiosk):
    booked = sample("appointment", actions=["done", "language"])
    booked["view"] = {
        **booked["view"],
        "phase": "booked",
        "booking": {"booking_no": "YY-20261123-0001", "slot": booked["view"]["slots"][0], "qr_text": "YY-1"},
    }
    await kiosk.show(booked)
    text = kiosk.text
    assert "时间：11月23日 星期一 上午 09:00-09:20" in text
    assert "地点：县行政服务中心一楼综合窗口" in text and "请携带身份证" in text
    await kiosk.show(booked, lang="en")
    assert "Please bring your ID card" in kiosk.text and "morning" in kiosk.text


async def test_a_declined_slot_is_one_clear_sentence(kiosk: Kiosk):
    declined = sample(
        "appointment",
        notice={"code": "slot_taken", "params": {"reason": "该时段刚被预约，请选择其他时段"}},
    )
    declined["view"]["phase"] = "declined"
    await kiosk.show(declined)
    notice = [line.strip() for line in kiosk.text.splitlines() if "时段" in line]
    assert notice == ["您选的时段约不上了，请另选一个时段。"], notice


# --- a rejection --------------------------------------------------------------------------------------


async def test_a_rejection_offers_calling_again_and_booking_and_never_says_completed(kiosk: Kiosk):
    await kiosk.show(SAMPLES["rejected"])
    assert kiosk.buttons() == {  # the key map: 1 call, 6 appointment, 0 the way out
        "1": "再次呼叫",
        "6": "预约窗口办理",
        "9": "English",
        "0": "结束并评价",
    }
    assert "补齐材料后再次呼叫工作人员" in kiosk.text and "本次办理已完成" not in kiosk.text
    await kiosk.press("1")
    assert (await kiosk.feed.next_intent("call")).body["screen"] == "rejected"
    await kiosk.press("6")
    await kiosk.feed.next_intent("appointment")
    await kiosk.press("0")  # nothing is lost by going to the rating: no question first
    await kiosk.feed.next_intent("continue")
    await kiosk.show(SAMPLES["rejected"], lang="en")
    assert kiosk.buttons() == {"1": "Call again", "6": "Book a visit", "9": "中文", "0": "Rate and end"}
    assert "call the clerk again" in kiosk.text
    after = sample("ended")
    after["view"] = {"reason": "completed", "outcome": "rejected"}
    await kiosk.show(after)
    assert "本次办理已完成" not in kiosk.text and "本次申请未受理" in kiosk.text
    await kiosk.show(SAMPLES["ended"])  # an approved visit still ends "completed"
    assert "本次办理已完成" in kiosk.text
