"""Where a real villager got stuck (issue 8), on the kiosk screen over the real ``SessionService`` and a
real local mosquitto (Pilot at 100x30): the villager reads the screen and presses number keys; the card
reader's events are emitted as the reader would; the clerk acts through platform commands."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from session_helpers import LI_SI, ZHANG_SAN, HandClock
from test_session_service import BusContext, FakeDoccam, kiosk_config
from test_ui_session import Villager

from appliance.session.service import SessionService
from kiosk_core.localbus import LocalBus
from kiosk_ui.app import KioskApp
from sim.mosquitto import Mosquitto
from sim.ui_harness import screen_text

pytestmark = pytest.mark.timeout(60)

CLERK = {"id": "c-0042", "name": "李明", "department": "shebao"}


@pytest.fixture
def clock() -> HandClock:
    return HandClock(time.monotonic())


@pytest.fixture
async def kiosk(
    tmp_path: Path, bus_broker: Mosquitto, clock: HandClock, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[BusContext, SessionService, Villager]]:
    data = tmp_path / "data"
    if getattr(request, "param", None) == "crashed":
        (data / "session").mkdir(parents=True)
        (data / "session" / "active.json").write_text(json.dumps({"session_id": "s-00000000000000aa"}))
    bus = LocalBus("127.0.0.1", bus_broker.port, name="test-appliance")
    await bus.start()
    ctx = BusContext(kiosk_config(data), data, bus)
    service = SessionService(ctx, clock=clock)
    doccam = await FakeDoccam(bus_broker.port, tmp_path / "media", size=20_000).start()
    await service.start()
    app = KioskApp("127.0.0.1", bus_broker.port)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            yield ctx, service, Villager(app, pilot)
    finally:
        await service.stop()
        for b in (doccam.bus, bus):
            await b.stop()


async def clerk(service: SessionService, command: str, **params: Any) -> dict[str, Any]:
    return await service.commands()[command]({"session_id": service.machine.session.id, **params})


async def to_documents(ctx: BusContext, villager: Villager, department: str, item: str) -> None:
    await villager.sees("attract", "欢迎使用村级便民服务")
    await villager.pilot.press("space")
    await villager.sees("catalog", "请选择部门")
    await villager.choose(department)
    await villager.choose(item)
    await villager.sees("identify", "请把身份证放在读卡器上")
    await ctx.emit("card.read", ZHANG_SAN)
    await villager.sees("confirm_identity", "3308**********123X")
    await villager.choose("是本人")
    await villager.sees("documents")


async def capture_every_missing_document(villager: Villager) -> None:
    """Photograph whatever the checklist still asks for, with number keys."""
    for _ in range(6):
        if "○ 待拍摄" not in villager.text:
            return
        await villager.choose("○ 待拍摄")
        await villager.sees("capture")
        await villager.choose("拍照")
        await villager.sees("capture", "照片清楚吗")
        await villager.choose("清楚，使用这张")
        await villager.sees("documents")
    raise AssertionError(f"the checklist never completed: {villager.text}")


def tick(service: SessionService, clock: HandClock, seconds: float) -> None:
    clock.advance(seconds)
    service._wake.set()  # the timers look at the hand-wound clock again


@pytest.mark.parametrize("kiosk", ["crashed"], indirect=True)
async def test_after_a_crash_the_villager_is_told_the_visit_was_cut_short(kiosk, clock: HandClock):
    ctx, service, villager = kiosk
    await villager.sees("ended", "设备刚重启，本次办理已中断，请重新开始")
    assert ("session.ended", {"session_id": "s-00000000000000aa"}) in [
        (t, {"session_id": d["session_id"]}) for t, d in ctx.events
    ]
    await ctx.emit("presence.detected", {"screen_woken": False, "relay": None})  # does not skip it
    await villager.pilot.pause(0.2)
    assert villager.app.screen_name == "ended"
    await villager.pilot.press("9")  # the language key
    await villager.sees("ended", "The kiosk has just restarted and your visit was interrupted")
    shown = villager.text.replace("中文", "")  # the language key names the other language
    assert not any("\u4e00" <= ch <= "\u9fff" for ch in shown), shown
    await villager.pilot.press("space")  # a touch starts again
    await villager.sees("catalog")


async def test_the_checklist_never_asks_for_a_photo_of_the_card_the_chip_gave(kiosk):
    ctx, service, villager = kiosk
    await to_documents(ctx, villager, "社保", "养老待遇资格认证")
    # the card's chip gave everything: nothing to photograph, the clerk may be called at once
    assert "居民身份证" not in villager.text
    await villager.sees("documents", "材料已齐全，可以呼叫工作人员")
    assert "呼叫工作人员" in villager.text


async def test_ended_asks_to_take_the_card_and_the_papers_while_the_card_is_on_the_reader(kiosk):
    ctx, service, villager = kiosk
    await to_documents(ctx, villager, "社保", "城乡居民养老保险参保登记")
    await capture_every_missing_document(villager)
    await villager.pilot.press("0", "0")  # end: 0 asks "确定结束吗？" first
    await villager.sees("ended", "请取回身份证和材料")
    assert "身份证还在读卡器上，请取走" in villager.text
    await ctx.emit("card.removed", {"reader": "card_reader", "reason": "removed"})
    await villager.sees("ended", "请取回身份证和材料")
    await villager.pilot.pause(0.3)
    assert "身份证还在读卡器上" not in screen_text(villager.app)


async def test_the_clerk_asks_for_the_back_of_the_card_and_the_screen_lets_it_off_the_reader(kiosk):
    ctx, service, villager = kiosk
    await to_documents(ctx, villager, "社保", "城乡居民养老保险参保登记")
    await capture_every_missing_document(villager)
    await villager.choose("呼叫工作人员")
    await villager.sees("call_waiting")
    await clerk(service, "session.call.accepted", clerk=CLERK)
    await villager.sees("call", "李明")
    await clerk(service, "session.request_document", name="身份证背面")
    await villager.sees("call", "身份证背面")
    await villager.choose("身份证背面")
    await villager.sees("capture", "请把身份证从读卡器上拿起，放到拍照台下")
    await ctx.emit("card.removed", {"reader": "card_reader", "reason": "removed"})
    await villager.pilot.pause(0.2)
    assert villager.app.screen_name == "capture"  # not "身份证已移开"
    await villager.choose("拍照")
    await villager.sees("capture", "已拍好")
    await villager.choose("清楚，使用这张")
    await villager.sees("card_removed", "请把身份证放回读卡器")
    await ctx.emit("card.read", LI_SI)
    await villager.sees("card_removed", "这不是刚才的身份证")
    await ctx.emit("card.read", ZHANG_SAN)
    await villager.sees("call", "李明")


async def test_a_villager_sitting_still_in_the_clerk_queue_is_not_logged_out(kiosk, clock: HandClock):
    ctx, service, villager = kiosk
    await to_documents(ctx, villager, "社保", "城乡居民养老保险参保登记")
    await capture_every_missing_document(villager)
    await villager.choose("呼叫工作人员")
    await villager.sees("call_waiting")
    for _ in range(5):  # five minutes, no key, no presence sensor
        tick(service, clock, 60)
        await villager.pilot.pause(0.1)
    await villager.pilot.pause(0.3)
    assert villager.app.screen_name == "call_waiting"
    assert "无人操作" not in villager.text and "我还在" not in villager.text
    await clerk(service, "session.call.accepted", clerk=CLERK)
    await villager.sees("call", "李明")
