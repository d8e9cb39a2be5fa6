"""The kiosk screen driven like the appliance drives it: retained session states on a real local bus.

Each test publishes states to a real mosquitto, presses keys or touches buttons the way a villager
would, and checks which intents arrive on ``kiosk/local/intent/#`` (docs/session.md §2).
"""

from __future__ import annotations

import copy
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from kiosk_ui.app import KioskApp
from kiosk_ui.qr import decode_lines, qr_lines
from kiosk_ui.widgets.choice import ChoiceButton
from sim.mosquitto import Mosquitto
from sim.ui_harness import SAMPLES, StateFeed, screen_text, wait_until

pytestmark = pytest.mark.timeout(30)
SIZE = (100, 30)


def sample(name: str, **changes: Any) -> dict[str, Any]:
    state = copy.deepcopy(SAMPLES[name])
    state.update(changes)
    return state


@pytest.fixture
async def feed(bus_broker: Mosquitto) -> AsyncIterator[StateFeed]:
    async with StateFeed("127.0.0.1", bus_broker.port) as f:
        yield f


class Kiosk:
    """The running app, its pilot and the appliance side of the bus, with a villager's verbs."""

    def __init__(self, app: KioskApp, pilot: Any, feed: StateFeed) -> None:
        self.app, self.pilot, self.feed = app, pilot, feed

    async def show(self, state: dict[str, Any], *, lang: str | None = None) -> None:
        """The appliance publishes ``state``; wait until that screen is up in that language."""
        if lang:
            state = {**state, "lang": lang}
        seq = self.feed.seq + 1
        await self.feed.publish("session", state)
        await wait_until(
            self.pilot,
            lambda: (
                self.app.states.get("session", {}).get("seq") == seq
                and self.app.screen_name == state["screen"]
            ),
            what=f"screen {state['screen']}",
        )
        await self.pilot.pause()

    @property
    def text(self) -> str:
        return screen_text(self.app)

    def buttons(self) -> dict[str, str]:
        """digit -> label of every choice on screen."""
        return {b.digit: b.choice_label for b in self.app.screen.query(ChoiceButton)}

    async def press(self, *keys: str) -> None:
        await self.pilot.press(*keys)
        await self.pilot.pause()


@pytest.fixture
async def kiosk(feed: StateFeed, bus_broker: Mosquitto) -> AsyncIterator[Kiosk]:
    app = KioskApp("127.0.0.1", bus_broker.port)
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.bus_connected, what="UI connected to the local bus")
        await pilot.pause()
        yield Kiosk(app, pilot, feed)


# --- waking up -------------------------------------------------------------------------------------


async def test_kiosk_starts_unavailable_then_shows_attract_and_wakes_on_any_key(kiosk: Kiosk):
    assert kiosk.app.screen_name == "unavailable"
    assert "服务暂时不可用" in kiosk.text
    await kiosk.show(SAMPLES["attract"])
    assert "欢迎使用村级便民服务" in kiosk.text and "赤柯山村便民服务站" in kiosk.text
    await kiosk.press("x")
    wake = await kiosk.feed.next_intent("wake")
    assert wake.body["screen"] == "attract" and wake.body["ref"].startswith("ui-")
    # No "touch" on attract: a key there means "start", nothing else.
    assert kiosk.feed.names(ignore=()) == []


async def test_touching_the_attract_screen_anywhere_wakes_it(kiosk: Kiosk):
    await kiosk.show(SAMPLES["attract"])
    await kiosk.pilot.click(offset=(50, 20))
    await kiosk.feed.next_intent("wake")


async def test_the_number_key_next_to_start_sends_wake_once(kiosk: Kiosk):
    await kiosk.show(SAMPLES["attract"])
    assert kiosk.buttons() == {"1": "开始办理", "9": "English"}
    await kiosk.press("1")
    await kiosk.feed.next_intent("wake")
    assert "wake" not in kiosk.feed.names()


# --- choosing a service ------------------------------------------------------------------------------


async def test_choose_a_department_by_number_and_page_through_the_rest(kiosk: Kiosk):
    await kiosk.show(SAMPLES["catalog"])
    buttons = kiosk.buttons()
    # Departments take 2-4 (5 and 6 are progress and appointment): three a page and "7 更多".
    assert [buttons[d] for d in "234"] == ["社保  7 项", "医保  6 项", "民政  8 项"]
    assert buttons["7"].startswith("更多") and buttons["0"] == "结束办理" and buttons["9"] == "English"
    await kiosk.press("4")
    assert (await kiosk.feed.next_intent("select_department")).body["department_id"] == "minzheng"
    await kiosk.press("7")  # more: paging stays inside the UI
    assert kiosk.buttons()["3"] == "农业农村  6 项"
    await kiosk.press("4")
    assert (await kiosk.feed.next_intent("select_department")).body["department_id"] == "canlian"
    assert all(not i.name.startswith("ui:") for i in kiosk.feed.intents)


async def test_choose_an_item_by_touch_and_go_back_with_8(kiosk: Kiosk):
    await kiosk.show(SAMPLES["catalog_items"])
    assert "社保" in kiosk.text
    await kiosk.pilot.click(ChoiceButton)  # the first button: the first item
    selected = await kiosk.feed.next_intent("select_item")
    assert selected.body["item_id"] == "shebao.pension_certification"
    assert selected.body["screen"] == "catalog"
    await kiosk.press("8")
    await kiosk.feed.next_intent("back")
    await kiosk.press("0", "0")  # 0 asks "确定结束吗？" first
    await kiosk.feed.next_intent("end")


async def test_only_listed_actions_get_buttons(kiosk: Kiosk):
    state = sample("catalog_items", actions=["select_item", "end", "teleport"])  # teleport: unknown here
    await kiosk.show(state)
    assert set(kiosk.buttons()) == {"2", "3", "0"}
    await kiosk.press("8")  # "back" is not offered now: the key does nothing
    await kiosk.press("4")
    await kiosk.pilot.pause(0.2)
    assert kiosk.feed.names() == []


async def test_language_key_asks_the_appliance_and_its_state_switches_the_screen(kiosk: Kiosk):
    await kiosk.show(SAMPLES["catalog"])
    await kiosk.press("9")
    assert (await kiosk.feed.next_intent("language")).body["lang"] == "en"
    assert "请选择部门" in kiosk.text  # nothing changes until the appliance says so
    await kiosk.show(SAMPLES["catalog"], lang="en")
    assert "Choose a department" in kiosk.text and "Social insurance" in kiosk.text
    await kiosk.press("9")
    assert (await kiosk.feed.next_intent("language")).body["lang"] == "zh-CN"


# --- identity --------------------------------------------------------------------------------------


async def test_identify_then_confirm_the_masked_identity(kiosk: Kiosk):
    await kiosk.show(SAMPLES["identify"])
    assert "请把身份证放在读卡器上" in kiosk.text and "最低生活保障申请" in kiosk.text
    await kiosk.show(SAMPLES["confirm_identity"])
    assert "张三" in kiosk.text and "3308**********123X" in kiosk.text
    await kiosk.press("2")
    await kiosk.feed.next_intent("not_me")
    await kiosk.press("1")
    await kiosk.feed.next_intent("confirm")


async def test_card_removed_asks_to_put_it_back_and_says_when_it_is_another_card(kiosk: Kiosk):
    await kiosk.show(SAMPLES["card_removed"])
    assert "请把身份证放回读卡器" in kiosk.text
    await kiosk.show(sample("card_removed", notice={"code": "card_mismatch", "params": {}}))
    assert "这不是刚才的身份证" in kiosk.text
    await kiosk.press("0", "0")
    await kiosk.feed.next_intent("end")


# --- documents and the call ------------------------------------------------------------------------


async def test_documents_checklist_capture_review_and_accept(kiosk: Kiosk):
    await kiosk.show(SAMPLES["documents"])
    assert "户口簿  ✔ 已拍摄" in kiosk.text and "家庭收入证明  ○ 待拍摄" in kiosk.text
    assert "呼叫工作人员" not in kiosk.text  # call is not listed until the checklist is complete
    await kiosk.press("3")
    assert (await kiosk.feed.next_intent("capture")).body["doc_id"] == "income_proof"
    preview = sample("capture", actions=["shoot", "back", "end", "language"])
    preview["view"] = {**preview["view"], "phase": "preview", "image": None}
    await kiosk.show(preview)
    assert "请把材料平放在拍照台上" in kiosk.text
    await kiosk.press("1")
    await kiosk.feed.next_intent("shoot")
    await kiosk.show(SAMPLES["capture"])
    assert "已拍好" in kiosk.text and "197 KB" in kiosk.text
    await kiosk.press("2")
    await kiosk.feed.next_intent("retake")
    await kiosk.press("1")
    await kiosk.feed.next_intent("accept")
    complete = sample("documents", actions=["capture", "call", "back", "end", "language"])
    complete["view"] = {**complete["view"], "complete": True}
    await kiosk.show(complete)
    assert kiosk.buttons()["1"] == "呼叫工作人员"
    await kiosk.press("1")
    await kiosk.feed.next_intent("call")


async def test_queue_position_then_clerk_messages_and_a_requested_document(kiosk: Kiosk):
    await kiosk.show(SAMPLES["call_waiting"])
    assert "您前面还有 2 人" in kiosk.text and "预计等待约 2 分钟" in kiosk.text
    # waited_s ticks on every republish: the screen must not be rebuilt for it.
    screen = kiosk.app.screen
    ticked = sample("call_waiting")
    ticked["view"] = {**ticked["view"], "waited_s": 15}
    await kiosk.show(ticked)
    assert kiosk.app.screen is screen
    await kiosk.show(SAMPLES["call"])
    text = kiosk.text
    assert "已接通：民政 李明" in text and "请把户口簿首页再拍一张。" in text
    assert "工作人员需要补充材料：户口簿首页" in text
    await kiosk.press("2")
    assert (await kiosk.feed.next_intent("capture")).body["doc_id"] == "req-1"
    # A clerk's text is shown as typed, brackets and all (no markup interpretation).
    chatty = sample("call")
    chatty["view"] = {
        **chatty["view"],
        "messages": [{"from": "clerk", "text": "[b]急[/b] [/] [red", "ts": 1.0}],
    }
    await kiosk.show(chatty)
    assert "工作人员：[b]急[/b] [/] [red" in kiosk.text


async def test_receipt_shows_the_number_and_a_scannable_qr(kiosk: Kiosk):
    await kiosk.show(SAMPLES["receipt"])
    text = kiosk.text
    assert "SQ330803-20261121-0007" in text
    expected = qr_lines(SAMPLES["receipt"]["view"]["qr_text"])
    rows = text.splitlines()
    # Find the drawn code by its second line (the first is all quiet zone), then read it back.
    key = expected[1]
    found = next(i for i, row in enumerate(rows) if key.strip() in row)
    col = rows[found].index(key.strip()) - (len(key) - len(key.lstrip()))
    start = found - 1
    drawn = [
        rows[start + i][col : col + len(expected[0])].ljust(len(expected[0])) for i in range(len(expected))
    ]
    assert decode_lines(drawn) == decode_lines(expected)
    await kiosk.press("1")
    await kiosk.feed.next_intent("continue")


async def test_rejection_shows_the_clerks_reason(kiosk: Kiosk):
    await kiosk.show(SAMPLES["rejected"])
    assert "收入证明需村委会盖章后再申请。" in kiosk.text and "李明" in kiosk.text
    await kiosk.press("0")  # 结束并评价, the way out (1 calls again, 6 books a visit)
    await kiosk.feed.next_intent("continue")


async def test_rating_score_then_reason_by_number_keys(kiosk: Kiosk):
    await kiosk.show(SAMPLES["rating"])
    await kiosk.press("5")  # the stars take 2-6: ★★★★
    assert "您的评价：★★★★" in kiosk.text
    assert kiosk.feed.names() == []  # the score alone is not sent yet
    await kiosk.press("3")  # 2 is "no reason", first so that it is on every page
    rate = await kiosk.feed.next_intent("rate")
    assert rate.body["score"] == 4 and rate.body["reason"] == "fast"


async def test_rating_without_reason_and_skipping(kiosk: Kiosk):
    await kiosk.show(SAMPLES["rating"])
    await kiosk.press("6", "2")
    rate = await kiosk.feed.next_intent("rate")
    assert rate.body["score"] == 5 and rate.body["reason"] is None
    await kiosk.show(SAMPLES["ended"])
    await kiosk.show(SAMPLES["rating"])  # a fresh rating screen starts at the score again
    await kiosk.press("0")  # the way out of the rating: skip it (nothing to lose, so no question)
    await kiosk.feed.next_intent("skip")


# --- progress and appointments ---------------------------------------------------------------------


async def test_progress_lookup_lists_applications_with_status_words(kiosk: Kiosk):
    loading = sample("progress", actions=["end", "language"])
    loading["view"] = {"phase": "loading"}
    await kiosk.show(loading)
    assert "正在查询" in kiosk.text
    await kiosk.show(SAMPLES["progress"])
    assert (
        "SQ330803-20261102-0031" in kiosk.text and "【审核中】" in kiosk.text and "【已办结】" in kiosk.text
    )
    await kiosk.press("1")
    await kiosk.feed.next_intent("done")


async def test_appointment_department_slot_and_booking(kiosk: Kiosk):
    dept = sample("appointment", actions=["select_department", "back", "end", "language"])
    dept["view"] = {**dept["view"], "phase": "department", "department": None, "slots": []}
    await kiosk.show(dept)
    await kiosk.press("3")
    assert (await kiosk.feed.next_intent("select_department")).body["department_id"] == "yibao"
    await kiosk.show(SAMPLES["appointment"])
    assert "11月23日 星期一 上午 09:30-09:50  王芳" in kiosk.text
    await kiosk.press("3")
    assert (await kiosk.feed.next_intent("book")).body["slot_id"] == "sl-20261123-0930"
    booked = sample("appointment", actions=["done", "language"])
    booked["view"] = {
        **booked["view"],
        "phase": "booked",
        "booking": {
            "booking_no": "YY-20261123-0001",
            "slot": booked["view"]["slots"][0],
            "qr_text": "https://zwfw.example.gov.cn/booking?no=YY-20261123-0001",
        },
    }
    await kiosk.show(booked)
    assert "YY-20261123-0001" in kiosk.text and "预约成功" in kiosk.text
    await kiosk.press("1")
    await kiosk.feed.next_intent("done")


# --- idle countdown --------------------------------------------------------------------------------


async def test_idle_countdown_shows_the_seconds_and_any_key_says_still_here(kiosk: Kiosk):
    await kiosk.show(SAMPLES["documents"])
    assert "秒后自动结束" not in kiosk.text
    warned = sample(
        "documents",
        actions=["still_here", "capture", "back", "end", "language"],
        idle={"timeout_s": 90, "warn_s": 15, "countdown": 12},
    )
    screen = kiosk.app.screen
    await kiosk.show(warned)
    assert "无人操作，12 秒后自动结束" in kiosk.text
    assert kiosk.app.screen is screen  # the overlay, not a rebuilt screen
    # The screen's keys stay drawn; the overlay's "1 我还在" is the only one a digit reaches now.
    assert set(kiosk.buttons()) == {"1", "2", "3", "8", "0", "9"}
    await kiosk.show({**warned, "idle": {"timeout_s": 90, "warn_s": 15, "countdown": 11}})
    assert "11 秒后" in kiosk.text
    await kiosk.press("space")
    await kiosk.feed.next_intent("still_here")
    await kiosk.show(SAMPLES["documents"])
    assert "秒后自动结束" not in kiosk.text


async def test_touching_the_still_here_button(kiosk: Kiosk):
    warned = sample(
        "identify",
        actions=["still_here", "back", "end", "language"],
        idle={"timeout_s": 90, "warn_s": 15, "countdown": 3},
    )
    await kiosk.show(warned)
    await kiosk.pilot.click("#still-here")
    await kiosk.feed.next_intent("still_here")


async def test_activity_in_a_session_is_reported_as_touch_at_most_once_a_second(kiosk: Kiosk):
    await kiosk.show(SAMPLES["identify"])
    await kiosk.press("a", "b", "c")
    await kiosk.feed.next_intent("touch")
    await kiosk.pilot.pause(0.2)
    assert [i.name for i in kiosk.feed.intents].count("touch") == 0


# --- technician ------------------------------------------------------------------------------------


async def test_pin_pad_masks_digits_and_sends_the_whole_pin_once_complete(kiosk: Kiosk):
    await kiosk.show(SAMPLES["technician_pin"])
    assert "密码错误，还可尝试 2 次" in kiosk.text
    await kiosk.press("1", "2", "3")
    assert "● ● ● _ _ _" in kiosk.text and "123" not in kiosk.text.split("维护密码")[1].split("←")[0]
    await kiosk.press("backspace", "9", "4", "5")
    await kiosk.pilot.pause(0.2)
    assert kiosk.feed.names() == []
    await kiosk.press("6")
    assert (await kiosk.feed.next_intent("technician_pin")).body["pin"] == "129456"
    await kiosk.pilot.click("#pin-7")
    await kiosk.press("enter")
    assert (await kiosk.feed.next_intent("technician_pin")).body["pin"] == "7"
    await kiosk.press("escape")
    await kiosk.feed.next_intent("technician_exit")


async def test_locked_pin_pad_accepts_no_digits(kiosk: Kiosk):
    locked = sample("technician_pin", actions=["technician_exit"])
    locked["view"] = {"digits": 6, "attempts_left": 0, "locked_s": 280}
    await kiosk.show(locked)
    assert "280 秒后再试" in kiosk.text
    await kiosk.press(*"123456", "enter")
    await kiosk.pilot.pause(0.2)
    assert kiosk.feed.names() == []


async def test_technician_screen_health_and_a_test_button_per_peripheral(kiosk: Kiosk):
    await kiosk.feed.publish("media", {"pipeline": "running", "recording": True})
    await kiosk.feed.publish(
        "peripherals",
        {
            "peripherals": [
                {
                    "name": "presence",
                    "kind": "presence",
                    "model": "PIR",
                    "backend": "mock",
                    "health": {"status": "degraded", "reason": "flapping", "since": 1.0},
                }
            ]
        },
    )
    await kiosk.show(SAMPLES["technician"])
    text = kiosk.text
    assert "警告：仍在使用出厂维护密码" in text
    assert "✖ 未连接  拍照台（高拍仪）" in text and "● 正常  身份证阅读器  测试通过" in text
    assert "▲ 异常  人体感应器" in text and "人体感应器时好时坏：请检查连接线是否松动" in text
    assert "录像：未录像" in text and "平台连接：已连接" in text
    assert "人体感应器" in kiosk.buttons()["4"]  # each peripheral is its own numbered test button
    await kiosk.press("3")
    assert (await kiosk.feed.next_intent("technician_test")).body["peripheral"] == "doccam"
    await kiosk.press("1")
    await kiosk.feed.next_intent("technician_refresh")
    await kiosk.press("0")
    await kiosk.feed.next_intent("technician_exit")
    assert "touch" not in kiosk.feed.names(ignore=())


# --- the appliance goes away and comes back --------------------------------------------------------


async def test_appliance_says_unavailable_then_recovers_without_anyone(kiosk: Kiosk):
    await kiosk.show(SAMPLES["documents"])
    await kiosk.show(SAMPLES["unavailable"])
    assert "服务暂时不可用" in kiosk.text and "服务程序正在重启" in kiosk.text
    await kiosk.press("1")
    await kiosk.pilot.pause(0.2)
    assert kiosk.feed.names(ignore=()) == []  # nothing pressed here goes anywhere
    await kiosk.show(SAMPLES["attract"])


async def test_silent_appliance_is_noticed_after_three_heartbeats(kiosk: Kiosk):
    await kiosk.show(sample("catalog", heartbeat_s=0.2))
    await wait_until(
        kiosk.pilot, lambda: kiosk.app.screen_name == "unavailable", timeout_s=3, what="stale state noticed"
    )
    assert kiosk.app.state_seen_at is not None
    assert time.monotonic() - kiosk.app.state_seen_at >= 0.6  # not before 3 x heartbeat_s
    assert "很久没有收到服务程序的消息" in kiosk.text
    await kiosk.show(sample("catalog", heartbeat_s=5))


async def test_local_bus_restart_shows_unavailable_and_recovers(kiosk: Kiosk, bus_broker: Mosquitto):
    await kiosk.show(SAMPLES["catalog"])
    bus_broker.kill()
    await wait_until(
        kiosk.pilot, lambda: kiosk.app.screen_name == "unavailable", timeout_s=5, what="bus loss"
    )
    assert "本机内部连接中断" in kiosk.text
    bus_broker.start()
    await wait_until(kiosk.pilot, lambda: kiosk.app.bus_connected, timeout_s=10, what="UI reconnected")
    await wait_until(kiosk.pilot, lambda: kiosk.feed.bus.connected, timeout_s=10, what="feed reconnected")
    await kiosk.show(SAMPLES["attract"])


async def test_unreadable_state_is_ignored_and_the_screen_stays(kiosk: Kiosk):
    await kiosk.show(SAMPLES["identify"])
    conn = kiosk.feed.bus.link.connection
    assert conn is not None
    nested = b'{"screen":' + b"[" * 1100 + b"]" * 1100 + b"}"
    for junk in (
        b"\xff\xfe not utf-8",
        b"[1, 2]",
        b'{"screen": ',
        b"x" * 300_000,
        nested,
        b'{"screen": NaN}',
    ):
        await conn.publish("kiosk/local/state/session", junk, qos=1, retain=True)
    await kiosk.pilot.pause(0.3)
    assert kiosk.app.screen_name == "identify" and kiosk.app.link.rejected == 6
    await kiosk.feed.session("no_such_screen", ["end"])  # a newer appliance than this UI
    await wait_until(kiosk.pilot, lambda: kiosk.app.screen_name == "unavailable", what="unknown screen")
    assert "界面与服务程序版本不一致" in kiosk.text
    await kiosk.show(SAMPLES["attract"])


async def test_intent_ref_echo_measures_latency(kiosk: Kiosk):
    await kiosk.show(SAMPLES["catalog"])
    await kiosk.press("2")
    intent = await kiosk.feed.next_intent("select_department")
    await kiosk.show(sample("catalog_items", ref=intent.body["ref"]))
    assert [ref for ref, _ in kiosk.app.latencies] == [intent.body["ref"]]
    assert 0 < kiosk.app.latencies[0][1] < 2


# --- hostile states --------------------------------------------------------------------------------

WEIRD = [None, 7, -1, True, "", "文字", [None, 3, "x", {"a": 1}], {"zh-CN": 5, "en": None}, {"x": [1, 2]}]


def mangled(state: dict[str, Any], k: int) -> dict[str, Any]:
    """The sample with every view value (and list element fields) replaced by a wrong type."""
    out = copy.deepcopy(state)

    def spoil(value: Any, depth: int = 0) -> Any:
        if isinstance(value, dict) and depth < 3:
            return {
                key: spoil(v, depth + 1) if (hash(key) + k) % 3 else WEIRD[(len(key) + k) % len(WEIRD)]
                for key, v in value.items()
            }
        if isinstance(value, list) and depth < 3:
            return [spoil(v, depth + 1) for v in value] + [WEIRD[k % len(WEIRD)]]
        return WEIRD[(k + depth) % len(WEIRD)]

    out["view"] = spoil(out["view"])
    out["actions"] = [*out["actions"], 5, None, "no_such_action"]
    out["notice"] = [{"code": 5, "params": "x"}, {"code": "no_such_notice", "params": {"name": [1]}}, "x"][
        k % 3
    ]
    out["identity"] = [{"name": None, "id_masked": 5}, "张三", None][k % 3]
    out["idle"] = [{"countdown": "12"}, {"countdown": -3}, 5][k % 3]
    return out


async def test_wrong_types_in_any_state_never_take_the_screen_down(kiosk: Kiosk):
    for k, (name, state) in enumerate(SAMPLES.items()):
        for variant in (k % 3, (k + 1) % 3):
            await kiosk.show(mangled(state, variant))
            assert kiosk.app.is_running, f"{name} variant {variant} stopped the app"
    await kiosk.show(SAMPLES["attract"])
    assert "欢迎使用村级便民服务" in kiosk.text


async def test_screen_changes_do_not_keep_dead_widgets_styles_alive(kiosk: Kiosk):
    """Textual memoises style colours per widget cache object; the app clears that after each change
    (see ``release_dead_styles``), so a kiosk changing screen all day does not accumulate dead widgets."""
    from textual._styles_cache import StylesCache

    for _ in range(3):
        for name in ("catalog", "documents", "technician", "receipt"):
            await kiosk.show(SAMPLES[name])
    live = sum(1 for _ in kiosk.app.screen.walk_children(with_self=True))
    assert StylesCache.get_inner_outer.cache_info().currsize <= 2 * live


# --- every button is on the screen ------------------------------------------------------------------


def _long_checklist(n: int) -> list[dict[str, Any]]:
    return [
        {
            "doc_id": f"doc{i}",
            "name": {"zh-CN": f"材料{i}", "en": f"Document number {i}"},
            "required": i < 3,
            "status": "captured" if i % 2 else "missing",
            "requested_by_clerk": False,
            "note": None,
            "image": None,
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("count", [2, 5, 8])
async def test_a_long_checklist_pages_so_every_button_is_visible(kiosk: Kiosk, count: int):
    """A villager cannot press what is below the screen's edge: the 30-row screen pages by height."""
    state = copy.deepcopy(SAMPLES["documents"])
    state["view"]["checklist"] = _long_checklist(count)
    state["actions"] = ["capture", "call", "back", "end", "language"]
    await kiosk.show(state, lang="en")
    buttons = list(kiosk.app.screen.query(ChoiceButton))
    height = kiosk.app.size.height
    off_screen = [b.choice_label for b in buttons if b.region.bottom > height or b.region.height == 0]
    assert off_screen == [], f"below row {height}: {off_screen}"
    labels = " ".join(kiosk.buttons().values())
    assert "Call a clerk" in labels
    assert ("More" in labels) == (count > 4)


async def test_the_rating_reasons_fit_and_no_reason_is_always_offered(kiosk: Kiosk):
    await kiosk.show(SAMPLES["rating"], lang="en")
    await kiosk.press("6")
    buttons = list(kiosk.app.screen.query(ChoiceButton))
    assert all(b.region.bottom <= kiosk.app.size.height for b in buttons)
    assert kiosk.buttons()["2"] == "Submit without a reason"
