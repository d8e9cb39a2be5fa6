"""The fixed key map (docs/ui.md, "Number keys"), the question before ending, and the countdown's keys.

A villager who learned "0 ends, 1 goes on, 7 shows more" on one screen must find it so on every other
one; a key pressed to answer an overlay must never also press the button under it. Everything runs
against a real mosquitto with the app at the kiosk's size, like tests/test_ui_flows.py.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import pytest
import test_ui_flows
from test_ui_call_media import on_screen
from test_ui_flows import Kiosk, sample

from kiosk_ui.screens.base import FIXED_DIGITS
from kiosk_ui.widgets.choice import ChoiceButton
from sim.ui_harness import SAMPLES

pytestmark = pytest.mark.timeout(60)
# The fixtures of the flow tests: the app at 100x30 on a real mosquitto and the appliance's side of it.
feed = test_ui_flows.feed
kiosk = test_ui_flows.kiosk


def variants() -> dict[str, dict[str, Any]]:
    """Every sample screen plus the other phases whose buttons differ (docs/session.md §1.2)."""
    out = copy.deepcopy(SAMPLES)
    complete = sample("documents", actions=["capture", "call", "back", "end", "language"])
    complete["view"]["complete"] = True
    out["documents_complete"] = complete
    preview = sample("capture", actions=["shoot", "back", "end", "language"])
    preview["view"] = {**preview["view"], "phase": "preview", "image": None}
    out["capture_preview"] = preview
    no_answer = sample("call_waiting", actions=["call", "appointment", "end", "language"])
    no_answer["view"]["status"] = "no_answer"
    out["call_waiting_no_answer"] = no_answer
    failed = sample("progress", actions=["retry", "end", "language"])
    failed["view"] = {"phase": "failed"}
    out["progress_failed"] = failed
    out["appointment_department"] = sample(
        "appointment", actions=["select_department", "back", "end", "language"]
    )
    out["appointment_department"]["view"].update(phase="department", department=None, slots=[])
    return out


async def test_every_action_has_one_digit_on_every_screen(kiosk: Kiosk):
    """呼叫工作人员, 更多, 0/8/9 and the main action: the same key wherever they are offered."""
    digits: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], list[str]] = defaultdict(list)
    for name, state in variants().items():
        await kiosk.show(state)
        for button in kiosk.app.screen.query(ChoiceButton):
            if button.intent in ("select_department", "select_item", "capture", "book", "ui:score"):
                key = "entity"
            elif button.intent.startswith("technician_test"):
                key = "entity"
            elif button.intent == "continue" and name == "rejected":
                key = "rejected:continue"  # 结束并评价: there 1 calls again, so it is the way out
            else:
                key = button.intent
            digits[key].add(button.digit)
            where[(key, button.digit)].append(name)
    for action, keys in digits.items():
        if action != "entity":
            assert len(keys) == 1, f"{action} has the keys {sorted(keys)}: {dict(where)}"
    assert digits["end"] == {"0"} and digits["back"] == {"8"} and digits["language"] == {"9"}
    assert digits["ui:page_next"] == {"7"}, "更多 is always 7"
    assert digits["call"] == {"1"}, "呼叫工作人员 is always 1"
    assert digits["rejected:continue"] == {"0"}, "结束并评价 after a rejection is the way out"
    assert digits["appointment"] == {"6"}
    main = {"confirm", "shoot", "accept", "call", "continue", "done", "retry", "wake"}
    assert {d for a in main for d in digits[a]} == {"1"}, "the main action is always 1"
    # Entities never take a key that an action of the map holds (1, 7, 8, 9, 0).
    assert not digits["entity"] & {"0", "1", "7", "8", "9"}
    assert set(FIXED_DIGITS.values()) <= set("0123456789")


async def test_catalog_keys_and_paging(kiosk: Kiosk):
    await kiosk.show(SAMPLES["catalog"])
    buttons = kiosk.buttons()
    assert [buttons[d] for d in "234"] == ["社保  7 项", "医保  6 项", "民政  8 项"]
    assert buttons["5"] == "查询办理进度" and buttons["6"] == "预约办理"
    assert buttons["7"] == "更多 1/2" and buttons["0"] == "结束办理" and buttons["9"] == "English"
    await kiosk.press("7")
    assert [kiosk.buttons()[d] for d in "234"] == ["户籍  6 项", "农业农村  6 项", "残联  4 项"]
    await kiosk.press("3")
    assert (await kiosk.feed.next_intent("select_department")).body["department_id"] == "nongye"
    await kiosk.press("5")
    await kiosk.feed.next_intent("progress")


async def test_requested_documents_keep_their_digits_after_each_photo(kiosk: Kiosk):
    """The clerk asked for three papers: after the first photo the other two keep their keys."""

    def call(captured: set[str]) -> dict[str, Any]:
        state = sample("call")
        state["view"]["requested_documents"] = [
            {
                "doc_id": f"req-{i}",
                "name": {"zh-CN": name, "en": name},
                "required": True,
                "status": "captured" if f"req-{i}" in captured else "missing",
                "requested_by_clerk": True,
                "note": None,
                "image": None,
            }
            for i, name in enumerate(["户口簿首页", "结婚证", "房产证"], 1)
        ]
        return state

    def keys() -> dict[str, str]:
        return {
            b.data["doc_id"]: b.digit for b in kiosk.app.screen.query(ChoiceButton) if b.intent == "capture"
        }

    await kiosk.show(call(set()))
    before = keys()
    assert before == {"req-1": "2", "req-2": "3", "req-3": "4"}
    await kiosk.press("3")
    assert (await kiosk.feed.next_intent("capture")).body["doc_id"] == "req-2"
    await kiosk.show(call({"req-1"}))
    after = keys()
    assert after["req-2"] == "3" and after["req-3"] == "4"
    await kiosk.press("4")
    assert (await kiosk.feed.next_intent("capture")).body["doc_id"] == "req-3"


async def test_documents_keep_their_digits_when_the_call_key_appears(kiosk: Kiosk):
    await kiosk.show(SAMPLES["documents"])
    before = {
        b.data["doc_id"]: b.digit for b in kiosk.app.screen.query(ChoiceButton) if b.intent == "capture"
    }
    complete = sample("documents", actions=["capture", "call", "back", "end", "language"])
    complete["view"]["complete"] = True
    await kiosk.show(complete)
    after = {b.data["doc_id"]: b.digit for b in kiosk.app.screen.query(ChoiceButton) if b.intent == "capture"}
    assert before == after == {"hukou_book": "2", "income_proof": "3"}
    assert kiosk.buttons()["1"] == "呼叫工作人员"


# --- 0 asks first -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["documents", "call"])
async def test_zero_asks_before_ending_and_only_the_second_zero_ends(kiosk: Kiosk, name: str):
    await kiosk.show(SAMPLES[name])
    screen = kiosk.app.screen
    await kiosk.press("0")
    assert "确定结束吗？" in kiosk.text and "1  继续办理" in kiosk.text and "0  确定结束" in kiosk.text
    await kiosk.pilot.pause(0.2)
    assert kiosk.feed.names() == [], "the first 0 only asks"
    # Under the question the screen's other keys do nothing (2 would capture a document).
    await kiosk.press("2", "3", "8", "9")
    await kiosk.pilot.pause(0.2)
    assert kiosk.feed.names() == []
    await kiosk.press("1")  # 继续办理: the question goes, the screen is as it was
    assert "确定结束吗？" not in kiosk.text and kiosk.app.screen is screen
    await kiosk.pilot.pause(0.2)
    assert kiosk.feed.names() == []
    await kiosk.press("0")
    await kiosk.press("0")
    end = await kiosk.feed.next_intent("end")
    assert end.body["screen"] == name
    await kiosk.pilot.pause(0.2)
    assert kiosk.feed.names() == [], "one end, nothing else"


async def test_ending_by_touch_asks_too(kiosk: Kiosk):
    await kiosk.show(SAMPLES["identify"], lang="en")
    await kiosk.pilot.click(".action-end")
    await kiosk.pilot.pause()
    assert "Do you want to end now?" in kiosk.text and "确定" not in kiosk.text
    await kiosk.pilot.click(".action-back")  # under the question: nothing
    await kiosk.pilot.pause(0.2)
    assert kiosk.feed.names() == []
    await kiosk.pilot.click("#confirm-end ChoiceButton.-error")
    await kiosk.feed.next_intent("end")


async def test_the_question_goes_when_the_session_moves_on(kiosk: Kiosk):
    await kiosk.show(SAMPLES["call"])
    await kiosk.press("0")
    assert "确定结束吗？" in kiosk.text
    await kiosk.show(SAMPLES["receipt"])  # the clerk approved meanwhile: nothing to end
    assert "确定结束吗？" not in kiosk.text
    await kiosk.press("1")
    await kiosk.feed.next_intent("continue")


# --- the idle countdown ---------------------------------------------------------------------------------


def warned(name: str, countdown: int = 12) -> dict[str, Any]:
    state = sample(name, idle={"timeout_s": 90, "warn_s": 15, "countdown": countdown})
    state["actions"] = ["still_here", *state["actions"]]
    return state


async def test_countdown_button_has_the_main_key_and_digits_act_only_on_it(kiosk: Kiosk):
    await kiosk.show(warned("documents"))
    assert "1  我还在，继续办理" in kiosk.text
    await kiosk.press("2")  # under the overlay, 2 would capture the household register
    await kiosk.feed.next_intent("still_here")
    await kiosk.press("1")
    await kiosk.feed.next_intent("still_here")
    await kiosk.press("0")  # not even the way out: the villager is answering the overlay
    await kiosk.feed.next_intent("still_here")
    await kiosk.pilot.pause(0.2)
    assert kiosk.feed.names() == [], "only still_here, once per key"
    assert "确定结束吗？" not in kiosk.text
    await kiosk.show(SAMPLES["documents"])  # the appliance hid the countdown: keys work again
    await kiosk.press("3")
    assert (await kiosk.feed.next_intent("capture")).body["doc_id"] == "income_proof"


# --- the clerk's messages and the villager's replies ------------------------------------------------------


def chatty_call(n: int, media_view: dict[str, Any] | None) -> dict[str, Any]:
    state = sample("call")
    msgs = [
        {"from": "clerk", "text": f"第{i}条：请您把材料放平，谢谢配合。", "ts": float(i)} for i in range(1, n)
    ]
    msgs.append({"from": "villager", "code": "cant_hear", "text": "听不清", "ts": float(n)})
    msgs.append({"from": "clerk", "text": "最新一条：我再说一遍。", "ts": float(n + 1)})
    state["view"] = {**state["view"], "messages": msgs, "media": media_view}
    return state


VIDEO = {"state": "connected", "reason": None, "clerk_video": False, "mic": True, "speaker": True}


@pytest.mark.parametrize("size", [(80, 24), (100, 30)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("media_view", [None, VIDEO], ids=["text", "video"])
async def test_the_newest_clerk_message_is_visible_after_many(
    feed,
    bus_broker,
    size: tuple[int, int],
    media_view,  # noqa: F811
):
    from kiosk_ui.app import KioskApp
    from sim.ui_harness import wait_until

    app = KioskApp("127.0.0.1", bus_broker.port)
    async with app.run_test(size=size) as pilot:
        await wait_until(pilot, lambda: app.bus_connected, what="UI connected")
        k = Kiosk(app, pilot, feed)
        for n in (3, 12, 30):
            await k.show(chatty_call(n, media_view))
            # Wrapped lines are read column by column (on_screen), as a villager reads them.
            await wait_until(
                pilot,
                lambda: on_screen(k, "工作人员：最新一条：我再说一遍。"),
                what=f"newest of {n} at {size}",
            )
            if n == 3:
                assert on_screen(k, "我：听不清"), k.text  # the villager's own line, in words
        await k.show(chatty_call(12, media_view), lang="en")
        await wait_until(
            pilot, lambda: on_screen(k, "Clerk: 最新一条：我再说一遍。"), what="newest in English"
        )
        assert on_screen(k, "Me: I can't hear you") or not on_screen(k, "第1条")


async def test_answer_the_clerk_with_a_fixed_reply(kiosk: Kiosk):
    await kiosk.show(SAMPLES["call"])
    assert kiosk.buttons()["1"] == "回复工作人员" and kiosk.buttons()["2"].startswith("户口簿首页")
    await kiosk.press("1")  # the replies, in place of the documents
    buttons = kiosk.buttons()
    assert [buttons[d] for d in "2345"] == ["听不清", "看不懂", "请稍等", "请村干部帮忙"]
    assert buttons["8"] == "返回" and buttons["0"] == "结束办理" and "1" not in buttons
    assert kiosk.feed.names() == []  # opening the replies is the screen's own business
    await kiosk.press("8")
    assert kiosk.buttons()["2"].startswith("户口簿首页")
    await kiosk.press("1", "2")
    reply = await kiosk.feed.next_intent("reply")
    assert reply.body["code"] == "cant_hear" and reply.body["screen"] == "call"
    await kiosk.pilot.pause()
    assert kiosk.buttons()["1"] == "回复工作人员"  # closed again after the answer
    await kiosk.show(SAMPLES["call"], lang="en")
    await kiosk.press("1")
    assert [kiosk.buttons()[d] for d in "2345"] == [
        "I can't hear you",
        "I don't understand",
        "One moment please",
        "Please get the village official",
    ]
    await kiosk.press("5")
    assert (await kiosk.feed.next_intent("reply")).body["code"] == "need_official"
