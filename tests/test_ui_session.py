"""The kiosk screen over the real ``SessionService`` on a real local bus: a villager's whole application
done with number keys and touches only, the county clerk acting through platform commands.

The session service's test context (``BusContext``), document camera stand-in and config factory are
reused from tests/test_session_service.py, so both suites drive the service the same way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from session_helpers import ZHANG_SAN, HandClock
from test_session_service import BusContext, FakeDoccam, kiosk_config

from appliance.session.service import SessionService
from kiosk_core.localbus import LocalBus
from kiosk_ui.app import KioskApp
from kiosk_ui.widgets.choice import ChoiceButton
from sim.mosquitto import Mosquitto
from sim.ui_harness import screen_text, wait_until

pytestmark = pytest.mark.timeout(60)


class Villager:
    """Someone at the kiosk who reads the buttons and presses the number beside the one they want."""

    def __init__(self, app: KioskApp, pilot: Any) -> None:
        self.app, self.pilot = app, pilot

    @property
    def text(self) -> str:
        return screen_text(self.app)

    async def sees(self, screen: str, text: str = "", timeout_s: float = 5.0) -> None:
        await wait_until(
            self.pilot,
            lambda: self.app.screen_name == screen and text in screen_text(self.app),
            timeout_s=timeout_s,
            what=f"{screen} showing {text!r}",
        )

    async def choose(self, label: str) -> None:
        """Press the digit of the button whose label contains ``label`` (paging with "more" if needed)."""
        for _ in range(5):
            buttons = {b.choice_label: b.digit for b in self.app.screen.query(ChoiceButton)}
            for text, digit in buttons.items():
                if label in text:
                    await self.pilot.press(digit)
                    await self.pilot.pause()
                    return
            more = [d for t, d in buttons.items() if t.startswith("更多")]
            if not more:
                break
            await self.pilot.press(more[0])
            await self.pilot.pause()
        raise AssertionError(f"no button {label!r} on {self.app.screen_name}: {list(buttons)}")


@pytest.fixture
def clock() -> HandClock:
    """The session service's clock: its timers move only when a test says so (the UI keeps real time)."""
    return HandClock(time.monotonic())


@pytest.fixture
async def kiosk(
    tmp_path: Path,
    bus_broker: Mosquitto,
    clock: HandClock,
) -> AsyncIterator[tuple[BusContext, SessionService, Villager]]:
    bus = LocalBus("127.0.0.1", bus_broker.port, name="test-appliance")
    await bus.start()
    ctx = BusContext(kiosk_config(tmp_path / "data"), tmp_path / "data", bus)
    service = SessionService(ctx, clock=clock)
    doccam = await FakeDoccam(bus_broker.port, tmp_path / "media", size=20_000).start()
    await service.start()
    app = KioskApp("127.0.0.1", bus_broker.port)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            villager = Villager(app, pilot)
            await villager.sees("attract", "欢迎使用村级便民服务")
            yield ctx, service, villager
    finally:
        await service.stop()
        for b in (doccam.bus, bus):
            await b.stop()


async def clerk(service: SessionService, name: str, **params: Any) -> dict[str, Any]:
    """The county clerk's platform command, as the daemon would hand it to the session service."""
    return await service.commands()[name]({"session_id": service.machine.session.id, **params})


async def test_a_villager_applies_for_the_elderly_allowance_with_number_keys_alone(kiosk):
    ctx, service, villager = kiosk
    await villager.pilot.press("space")  # any key wakes the kiosk
    await villager.sees("catalog", "请选择部门")
    await villager.choose("民政")
    await villager.sees("catalog", "请选择要办理的事项")  # three items a page: choose() pages with 7
    await villager.choose("高龄津贴申请")
    await villager.sees("identify", "请把身份证放在读卡器上")
    await ctx.emit("card.read", ZHANG_SAN)  # the card reader's event
    await villager.sees("confirm_identity", "3308**********123X")
    assert "33080319900307123X" not in villager.text  # never the full number
    await villager.choose("是本人")
    await villager.sees("documents", "○ 待拍摄")
    assert "居民身份证" not in villager.text  # read from the card's chip: no photo of it is asked for
    for doc in ("户口簿", "本人银行卡或社保卡"):
        await villager.choose(doc)
        await villager.sees("capture", "请把材料平放在拍照台上")
        await villager.choose("拍照")
        await villager.sees("capture", "照片清楚吗")
        await villager.choose("使用这张")
        await villager.sees("documents", f"{doc}  ✔ 已拍摄")
    await villager.choose("呼叫工作人员")
    await villager.sees("call_waiting")
    await clerk(service, "session.call.queued", position=1, estimated_wait_s=60)
    await villager.sees("call_waiting", "您前面还有 1 人")
    await clerk(
        service, "session.call.accepted", clerk={"id": "c-0042", "name": "李明", "department": "minzheng"}
    )
    await villager.sees("call", "李明")
    await clerk(service, "session.message", text="您好，材料已收到，马上为您办理。")
    await villager.sees("call", "材料已收到")
    await clerk(service, "session.approve", application_no="SQ330803-20261121-0007")
    await villager.sees("receipt", "SQ330803-20261121-0007")
    assert "█" in villager.text  # the QR code is drawn
    await villager.choose("继续")
    await villager.sees("rating", "您对本次服务满意吗")
    await villager.choose("非常满意")
    await villager.choose("办得快")
    await villager.sees("ended", "谢谢使用")
    rated = [data for t, data in ctx.events if t == "session.rated"]
    assert rated and rated[0]["score"] == 5 and rated[0]["reason"] == "fast"
    assert "张三" not in villager.text
    funnel = ctx.types()
    for step in (
        "session.started",
        "session.item.selected",
        "session.identified",
        "session.identity.confirmed",
        "session.document.captured",
        "session.call.requested",
        "session.call.connected",
        "session.approved",
        "session.rated",
        "session.ended",
    ):
        assert step in funnel, f"{step} missing from {funnel}"


async def test_language_switch_round_trips_through_the_session(kiosk):
    _, _, villager = kiosk
    await villager.choose("English")
    await villager.sees("attract", "Welcome to the village service point")
    await villager.choose("中文")
    await villager.sees("attract", "欢迎使用村级便民服务")


async def test_session_service_restart_shows_unavailable_and_the_kiosk_recovers(kiosk):
    ctx, service, villager = kiosk
    await villager.pilot.press("1")
    await villager.sees("catalog")
    started = time.monotonic()
    await service.stop()  # publishes "unavailable" on a clean stop
    await villager.sees("unavailable", "服务暂时不可用")
    await asyncio.sleep(0.1)
    restarted = SessionService(ctx)  # as a restarted appliance process would
    await restarted.start()
    try:
        # the visit the restart cut short is not dropped without a word
        await villager.sees("ended", "设备刚重启，本次办理已中断，请重新开始")
        assert time.monotonic() - started < 5
        await villager.pilot.press("1")
        await villager.sees("catalog")
    finally:
        await restarted.stop()


async def test_idle_countdown_comes_from_the_session_and_a_key_keeps_the_session(kiosk, clock: HandClock):
    _, service, villager = kiosk
    await villager.pilot.press("1")
    await villager.sees("catalog", "请选择部门")
    clock.advance(76)  # 90 s timeout, warning for the last 15 s
    service._wake.set()
    await villager.sees("catalog", "14 秒后自动结束")
    await villager.pilot.press("space")  # anything: the UI says "still here"
    await wait_until(
        villager.pilot,
        lambda: "秒后自动结束" not in villager.text,
        timeout_s=5,
        what="countdown gone after still_here",
    )
    assert villager.app.screen_name == "catalog"
    clock.advance(91)  # now nobody is there
    service._wake.set()
    await villager.sees("ended", "长时间无人操作，已自动结束")


async def test_progress_lookup_and_an_appointment_with_the_real_session(kiosk):
    ctx, service, villager = kiosk
    await villager.pilot.press("1")
    await villager.sees("catalog")
    await villager.choose("查询办理进度")
    await villager.sees("identify", "查询办理进度")
    await ctx.emit("card.read", ZHANG_SAN)
    await villager.sees("confirm_identity", "张三")
    await villager.choose("是本人")
    await villager.sees("progress", "正在查询")
    await clerk(
        service,
        "session.progress.result",
        applications=[
            {
                "application_no": "SQ330803-20261102-0031",
                "item_name": {"zh-CN": "最低生活保障申请", "en": "Allowance"},
                "status": "in_review",
                "updated_at": "2026-11-18",
            }
        ],
    )
    await villager.sees("progress", "【审核中】")
    await villager.choose("完成")
    await villager.sees("ended")
    await villager.pilot.press("1")  # ended: start again at once
    await villager.sees("catalog")
    await villager.choose("预约办理")
    await villager.sees("appointment", "请选择要预约的部门")
    await villager.choose("社保")
    await villager.sees("identify")
    await ctx.emit("card.read", ZHANG_SAN)
    await villager.sees("confirm_identity")
    await villager.choose("是本人")
    await villager.sees("appointment", "正在查询可预约时间")
    await clerk(
        service,
        "session.appointment.slots",
        department_id="shebao",
        slots=[
            {
                "slot_id": "sl-20261123-0900",
                "start": "2026-11-23T09:00:00+08:00",
                "end": "2026-11-23T09:20:00+08:00",
                "official": "王芳",
            }
        ],
    )
    await villager.sees("appointment", "11月23日 星期一 上午 09:00-09:20  王芳")
    await villager.choose("09:00")
    await villager.sees("appointment", "正在预约")
    await clerk(service, "session.appointment.confirmed", slot_id="sl-20261123-0900", booking_no="YY-0001")
    await villager.sees("appointment", "YY-0001")
    assert "session.appointment.booked" in ctx.types()
