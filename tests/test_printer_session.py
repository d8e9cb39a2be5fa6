"""The receipt printed after the clerk's approval and for a booked appointment: what the session asks
the printer to print (masked name only), what the villager sees when it cannot, and what the platform
learns. The service tests run the session and the peripherals on a real mosquitto with the printer
simulator on a pty."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from session_helpers import ZHANG_SAN, HandClock, make_machine, to_call
from test_session_service import BusContext, FakeDoccam, Ui, capture_and_keep, intents_flowing

from appliance.config import parse
from appliance.peripherals import Peripherals
from appliance.session.machine import PrintReceipt
from appliance.session.printing import mask_name
from appliance.session.service import SessionService
from kiosk_core.health import HealthStatus
from kiosk_core.localbus import LocalBus
from sim.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(60)

REGION = ["33", "3308", "330803", "330803100", "330803100201"]
# Zhang San's card (session_helpers.ZHANG_SAN): none of this may reach the printer.
PERSONAL = ("33080319900307123X", "张三", "1990-03-07", "19900307")
SLOTS = [{"slot_id": "sl-1", "start": "2026-11-23T09:00:00+08:00", "end": "2026-11-23T09:20:00+08:00"}]


def prints(effects: list[Any]) -> list[PrintReceipt]:
    return [e for e in effects if isinstance(e, PrintReceipt)]


def printing_machine() -> Any:
    m = make_machine()
    m.printer = True  # as SessionService sets it when [drivers.printer] is present
    return m


def test_names_are_masked_to_their_first_character():
    assert [mask_name(n) for n in ("张三", "欧阳娜娜", "李", "", None)] == ["张*", "欧***", "李*", "*", "*"]


def test_approval_prints_the_receipt_with_the_screens_qr_and_nothing_personal():
    m = printing_machine()
    to_call(m)
    sid = m.session.id
    _, effects = m.command("session.approve", {"session_id": sid, "application_no": "SQ330803-20261121-0007"})
    [job] = prints(effects)
    r = job.receipt
    view = m.view()["view"]
    assert job.job == "receipt" and job.session_id == sid
    assert r["qr_url"] == view["qr_text"]  # the same text as the screen's QR code
    assert r["number"] == "SQ330803-20261121-0007" and r["site"] == "赤柯山村便民服务站"
    assert r["name_masked"] == "张*" and r["item"] == m.session.item.name.zh
    assert r["department"] == view["clerk"]["department"]["name"]["zh-CN"] and len(r["date"]) == 10
    assert not any(p in json.dumps(r, ensure_ascii=False) for p in PERSONAL)
    assert view["print"] == {"status": "printing", "code": None}

    # The printer's answer: out of paper -> the screen says where else to get it.
    assert m.print_finished(sid, "receipt", "failed", "printer.no_paper") is True
    assert m.view()["view"]["print"] == {"status": "failed", "code": "printer.no_paper"}
    # Stale answers change nothing.
    assert m.print_finished("s-other", "receipt", "printed") is False
    assert m.print_finished(sid, "appointment", "printed") is False


def test_without_a_printer_nothing_is_printed_and_the_screen_is_as_before():
    m = make_machine()
    to_call(m)
    _, effects = m.command("session.approve", {"session_id": m.session.id, "application_no": "SQ1-0007"})
    assert prints(effects) == [] and m.view()["view"]["print"] is None


def test_a_booked_appointment_prints_its_slip():
    m = printing_machine()
    m.presence()
    m.intent("appointment", {})
    m.intent("select_department", {"department_id": "shebao"})
    m.card_read(ZHANG_SAN)
    m.intent("confirm", {})
    sid = m.session.id
    m.command("session.appointment.slots", {"session_id": sid, "department_id": "shebao", "slots": SLOTS})
    m.intent("book", {"slot_id": "sl-1"})
    _, effects = m.command(
        "session.appointment.confirmed",
        {"session_id": sid, "slot_id": "sl-1", "booking_no": "YY-2", "qr_text": "https://x.example/yy/2"},
    )
    [job] = prints(effects)
    assert job.job == "appointment" and job.receipt["number"] == "YY-2"
    assert job.receipt["qr_url"] == m.view()["view"]["booking"]["qr_text"]
    assert job.receipt["extra"] == [["预约时间", "2026-11-23 09:00-09:20"]]
    assert job.receipt["name_masked"] == "张*"
    m.print_finished(sid, "appointment", "printed")
    assert m.view()["view"]["print"] == {"status": "printed", "code": None}


# --- the service and the peripherals on a real local bus -------------------------------------------


def kiosk_config(data_dir: Path, out_dir: Path) -> Any:
    return parse(
        {
            "device": {"id": "kiosk-0001", "name": "赤柯山村便民服务站", "region": REGION},
            "storage": {"data_dir": str(data_dir)},
            "drivers": {
                "printer": {
                    "backend": "sim",
                    "status_timeout_s": 0.3,
                    "print_timeout_s": 3,
                    "sim": {"out_dir": str(out_dir)},
                }
            },
        }
    )


@pytest.fixture
async def rig(tmp_path: Path, bus_broker: Mosquitto):
    bus = LocalBus("127.0.0.1", bus_broker.port, name="test-appliance")
    await bus.start()
    ctx = BusContext(kiosk_config(tmp_path / "data", tmp_path / "paper"), tmp_path / "data", bus)
    peripherals = Peripherals(ctx)
    await peripherals.start()
    service = SessionService(ctx, clock=HandClock(time.monotonic()))
    ui = await Ui(bus_broker.port).start()
    doccam = await FakeDoccam(bus_broker.port, tmp_path / "media").start()
    await service.start()
    await intents_flowing(ui)
    yield ctx, service, peripherals, ui
    await service.stop()
    await peripherals.stop()
    for b in (ui.bus, doccam.bus, bus):
        await b.stop()


async def book(ctx: BusContext, service: SessionService, ui: Ui) -> str:
    await ctx.emit("presence.detected", {"screen_woken": False, "relay": None})
    await ui.screen("catalog")
    ui.send("appointment")
    await ui.screen("appointment")
    ui.send("select_department", {"department_id": "shebao"})
    await ui.screen("identify")
    await ctx.emit("card.read", ZHANG_SAN)
    await ui.screen("confirm_identity")
    ui.send("confirm")
    await ui.wait(lambda s: s["view"].get("phase") == "loading", "slots requested")
    sid = ui.state["session_id"]
    commands = service.commands()
    await commands["session.appointment.slots"](
        {"session_id": sid, "department_id": "shebao", "slots": SLOTS}
    )
    await ui.wait(lambda s: s["view"].get("phase") == "slots", "slots")
    ui.send("book", {"slot_id": "sl-1"})
    await ui.wait(lambda s: s["view"].get("phase") == "booking", "booking")
    await commands["session.appointment.confirmed"](
        {"session_id": sid, "slot_id": "sl-1", "booking_no": "YY-7"}
    )
    return sid


async def test_a_booking_comes_out_of_the_printer_without_personal_data(rig, tmp_path: Path):
    ctx, service, peripherals, ui = rig
    sid = await book(ctx, service, ui)
    state = await ui.wait(lambda s: (s["view"].get("print") or {}).get("status") == "printed", "printed")
    assert state["view"]["phase"] == "booked"
    sim = peripherals.devices["printer"].simulator
    assert sim.wait_printed(1)
    out = sim.receipts[-1]
    assert out.path is not None and out.path.parent == tmp_path / "paper" and out.path.exists()
    assert "预约号：YY-7" in out.lines and "申请人：张*" in out.lines and out.qr_data == ["YY-7"]
    raw = b"".join(c.raw for c in out.commands)
    for personal in PERSONAL:
        assert personal.encode("gb18030") not in raw and personal.encode() not in raw
    printed = [d for t, d in ctx.events if t == "printer.printed"]
    assert printed == [
        {"printer": "printer", "job": "appointment", "session_id": sid, "bytes": printed[0]["bytes"]}
    ]


async def test_an_approval_prints_the_receipt_with_the_screens_qr(rig):
    ctx, service, peripherals, ui = rig
    await ctx.emit("presence.detected", {"screen_woken": False, "relay": None})
    await ui.screen("catalog")
    ui.send("select_department", {"department_id": "minzheng"})
    await ui.wait(lambda s: s["view"]["department"] is not None, "items of 民政")
    ui.send("select_item", {"item_id": "minzheng.low_income_allowance"})
    await ui.screen("identify")
    await ctx.emit("card.read", ZHANG_SAN)
    await ui.screen("confirm_identity")
    ui.send("confirm")
    await ui.screen("documents")
    for doc in ("hukou_book", "income_proof"):
        await capture_and_keep(ui, doc)
    ui.send("call")
    await ui.screen("call_waiting", status="requesting")
    sid = ui.state["session_id"]
    commands = service.commands()
    clerk = {"id": "c-0042", "name": "李明", "department": "minzheng"}
    await commands["session.call.accepted"]({"session_id": sid, "clerk": clerk})
    await ui.screen("call")
    await commands["session.approve"]({"session_id": sid, "application_no": "SQ330803-20261121-0007"})
    state = await ui.wait(lambda s: (s["view"].get("print") or {}).get("status") == "printed", "printed")
    assert state["screen"] == "receipt"
    sim = peripherals.devices["printer"].simulator
    assert sim.wait_printed(1)
    out = sim.receipts[-1]
    assert out.qr_data == [state["view"]["qr_text"]]  # the QR the screen shows
    assert "申请编号：SQ330803-20261121-0007" in out.lines and "申请人：张*" in out.lines
    department = state["view"]["clerk"]["department"]["name"]["zh-CN"]
    assert "赤柯山村便民服务站" in out.lines and f"部门：{department}" in out.lines
    raw = b"".join(c.raw for c in out.commands)
    for personal in PERSONAL:
        assert personal.encode("gb18030") not in raw and personal.encode() not in raw
    assert [d["job"] for t, d in ctx.events if t == "printer.printed"] == ["receipt"]


async def test_no_paper_tells_the_villager_where_to_get_it_and_the_platform_sees_a_fault(rig):
    ctx, service, peripherals, ui = rig
    reply = await ctx.call_rpc("sim", "fault", {"device": "printer", "fault": "no_paper"})
    assert reply["health"]["status"] == "degraded"
    started = time.monotonic()
    sid = await book(ctx, service, ui)
    state = await ui.wait(lambda s: (s["view"].get("print") or {}).get("status") == "failed", "print failed")
    assert time.monotonic() - started < 8
    assert state["view"]["print"] == {"status": "failed", "code": "printer.no_paper"}
    assert state["actions"][0] == "done"  # the villager is not held up
    failed = [d for t, d in ctx.events if t == "printer.failed"]
    assert failed and failed[0]["code"] == "printer.no_paper" and failed[0]["session_id"] == sid
    health = peripherals.health()["printer"]
    assert health.status is HealthStatus.DEGRADED and "out of paper" in health.reason
    assert "printer" in peripherals.capabilities()


async def test_the_printer_service_refuses_malformed_receipts_and_survives(rig):
    ctx, _, peripherals, _ = rig
    from kiosk_core.errors import CommandError

    bad = [
        {"job": "receipt", "receipt": {"title": "x"}},  # fields missing
        {"job": "receipt", "receipt": {"nonsense": 1}},
        {"job": "fax", "receipt": {}},
        {"job": "receipt", "receipt": "not an object"},
    ]
    for params in bad:
        with pytest.raises(CommandError) as info:
            await ctx.call_rpc("printer", "print", params)
        assert info.value.status == 400
    assert peripherals.devices["printer"].simulator.printed == 0
    assert (await peripherals.devices["printer"].check()).status is HealthStatus.OK


async def test_a_switched_off_printer_never_holds_the_villager(rig):
    ctx, service, peripherals, ui = rig
    await ctx.call_rpc("sim", "fault", {"device": "printer", "fault": "offline"})
    assert peripherals.health()["printer"].status is HealthStatus.MISSING
    await book(ctx, service, ui)
    # The booking is on screen (and "done" works) while the printer is still being waited for.
    state = await ui.wait(lambda s: s["view"].get("phase") == "booked", "booked")
    assert state["view"]["print"]["status"] in ("printing", "failed") and state["actions"][0] == "done"
    state = await ui.wait(lambda s: (s["view"].get("print") or {}).get("status") == "failed", "print failed")
    assert state["view"]["print"]["code"] == "printer.offline"
    ui.send("done")
    await ui.screen("ended", reason="completed")


async def test_kiosk_sim_injects_and_clears_printer_faults(rig, tmp_path: Path, bus_broker: Mosquitto):
    import asyncio

    from conftest import write_config

    from kiosk_cli import main as cli

    ctx, service, peripherals, ui = rig
    path = write_config(
        tmp_path / "kiosk.toml", bus_port=bus_broker.port, fleet_port=1883, data_dir=tmp_path / "d"
    )

    def kiosk(*args: str) -> int:
        return cli.main(["--config", str(path), "sim", *args])

    assert await asyncio.to_thread(kiosk, "fault", "printer", "cover_open") == 0
    assert peripherals.health()["printer"].status is HealthStatus.DEGRADED
    assert "cover" in peripherals.health()["printer"].reason
    assert await asyncio.to_thread(kiosk, "fault", "printer", "jam") == 1  # unknown: refused, nothing changes
    assert peripherals.devices["printer"].simulator.faults == ["cover_open"]
    assert await asyncio.to_thread(kiosk, "unplug", "printer") == 0
    assert peripherals.health()["printer"].status is HealthStatus.MISSING
    assert await asyncio.to_thread(kiosk, "fault", "printer", "clear") == 0
    assert peripherals.health()["printer"].status is HealthStatus.OK
