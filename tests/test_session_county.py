"""The simulated county centre against the real appliance daemon: MQTT 5 commands with response topics on a
real central mosquitto, durable events, the villager on the local bus, and a person playing the clerk."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from fleet_schema import SCHEMA
from session_helpers import ZHANG_SAN
from test_session_service import FakeDoccam, Ui, capture_and_keep, intents_flowing

from appliance.daemon import Appliance
from kiosk_core.mqtt import MqttConnection
from sim.county import ClerkConsole, CountyCentre, FleetRequester
from sim.mosquitto import Mosquitto
from tests.conftest import write_config

pytestmark = pytest.mark.timeout(60)

ROOT = "kiosk/v1/33/3308/330803/330803100/330803100201/kiosk-0001"


class Wire:
    """Everything published under the device's topics on the central broker, as the platform sees it.
    Events and replies are validated against docs/schema/fleet.schema.json; ``stop()`` fails on a misfit."""

    def __init__(self, port: int) -> None:
        self.conn = MqttConnection(host="127.0.0.1", port=port, client_id="test-wire", name="wire")
        self.messages: list[tuple[str, bytes]] = []
        self.off_schema: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Wire:
        await self.conn.connect()
        await self.conn.subscribe((f"{ROOT}/event", 1), ("platform/#", 1))
        self._task = asyncio.create_task(self._collect())
        return self

    async def _collect(self) -> None:
        async for msg in self.conn.messages():
            self.messages.append((msg.topic, msg.payload))
            self.off_schema += SCHEMA.problems(self._channel(msg.topic, msg.payload), msg.payload)

    @staticmethod
    def _channel(topic: str, payload: bytes) -> str:
        if topic.endswith("/event"):
            return "event"
        try:  # a reply under platform/: its schema is its command's
            name = json.loads(payload).get("name")
        except (ValueError, AttributeError):
            name = None
        return SCHEMA.reply_channel(name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.conn.close()
        assert not self.off_schema, "off docs/schema/fleet.schema.json:\n" + "\n".join(self.off_schema[:20])

    def events(self) -> list[dict]:
        return [json.loads(p) for t, p in self.messages if t.endswith("/event")]


@pytest.fixture
async def kiosk(kiosk_config: Path, bus_broker: Mosquitto, central_broker: Mosquitto, tmp_path: Path):
    wire = await Wire(central_broker.port).start()
    app = Appliance(kiosk_config)
    await app.start()
    await asyncio.wait_for(app.fleet.first_online.wait(), 10)
    ui = await Ui(bus_broker.port).start()
    doccam = await FakeDoccam(bus_broker.port, tmp_path / "media", size=40_000).start()
    await intents_flowing(ui)
    yield app, ui, wire
    for b in (ui.bus, doccam.bus):
        await b.stop()
    await app.stop()
    await wire.stop()


async def start_application(app: Appliance, ui: Ui, item: str = "shebao.pension_enrolment") -> None:
    await app.emit("presence.detected", {"screen_woken": False, "relay": None})
    await ui.screen("catalog")
    ui.send("select_department", {"department_id": item.split(".")[0]})
    await ui.wait(lambda s: s["view"].get("department"), "department chosen")
    ui.send("select_item", {"item_id": item})
    await ui.screen("identify")
    await app.emit("card.read", ZHANG_SAN)
    await ui.screen("confirm_identity")
    ui.send("confirm")
    await ui.screen("documents")


async def test_the_county_clerk_answers_asks_for_a_document_and_approves(kiosk, central_broker: Mosquitto):
    app, ui, wire = kiosk
    county = CountyCentre(
        FleetRequester("127.0.0.1", central_broker.port), answer_after_s=0.4, step_s=0.1, wait_document_s=20
    )
    await county.start()
    try:
        await start_application(app, ui)
        await capture_and_keep(ui, "hukou_book")
        ui.send("call")
        state = await ui.wait(
            lambda s: s["screen"] == "call_waiting" and s["view"]["status"] == "queued",
            "queued by the county",
        )
        assert state["view"]["position"] in (1, 2)
        state = await ui.screen("call")
        assert state["view"]["clerk"] == {
            "id": "c-0042",
            "name": "李明",
            "department": {"id": "shebao", "name": {"zh-CN": "社保", "en": "Social insurance"}},
        }
        state = await ui.wait(lambda s: s["view"].get("requested_documents"), "the clerk's request")
        requested = state["view"]["requested_documents"][0]
        assert requested["name"]["zh-CN"] == "户口簿本人页"
        await capture_and_keep(ui, requested["doc_id"])
        state = await ui.screen("receipt")
        number = state["view"]["application_no"]
        assert number.startswith("SQ330803-")
        ui.send("continue")
        await ui.screen("rating")
        ui.send("rate", {"score": 5})
        await ui.screen("ended")

        # every document reached the county intact, pulled in chunks and verified by hash
        assert {d for (_, d) in county.documents} == {"hukou_book", requested["doc_id"]}
        assert all(doc.verified and doc.chunks >= 1 for doc in county.documents.values())
        names = [name for name, _ in county.replies]
        assert names[:3] == ["session.call.queued", "session.call.queued", "session.call.accepted"]
        assert {
            "session.identity.get",
            "session.request_document",
            "session.message",
            "session.approve",
        } <= set(names)
        assert county.errors == []

        # the funnel on the fleet link, in order, with the full number nowhere in a durable event
        await asyncio.sleep(0.3)
        types = [e["type"] for e in wire.events() if e["type"].startswith("session.")]
        for step in (
            "session.started",
            "session.item.selected",
            "session.identified",
            "session.identity.confirmed",
            "session.document.captured",
            "session.call.requested",
            "session.call.connected",
            "session.document.requested",
            "session.approved",
            "session.rated",
            "session.ended",
        ):
            assert step in types, step
        assert (
            types.index("session.call.requested")
            < types.index("session.call.connected")
            < types.index("session.approved")
            < types.index("session.ended")
        )
        raw_events = b"".join(p for t, p in wire.messages if t.endswith("/event"))
        assert b"33080319900307123X" not in raw_events
        # replies with personal data were answered but not kept by the daemon's at-most-once store
        identity_reply = next(r for n, r in county.replies if n == "session.identity.get")
        assert identity_reply["id_number"] == "33080319900307123X"
        again = await county.link.command(
            ROOT,
            "session.identity.get",
            {"session_id": "s-0000000000000000"},
            command_id=identity_reply["id"],
        )
        assert again["status"] == 410 and "id_number" not in again

        # the same villager takes the card, and comes back to check progress: the county lists the new
        # application (with the card still on the reader, ended would keep asking to take it)
        await app.emit("card.removed", {"reader": "card_reader", "reason": "removed"})
        await app.emit(
            "presence.detected", {"screen_woken": False, "relay": None}
        )  # the ended screen wakes into a new session
        await ui.screen("catalog")
        ui.send("progress")
        await ui.screen("identify")
        await app.emit("card.read", ZHANG_SAN)
        await ui.screen("confirm_identity")
        ui.send("confirm")
        state = await ui.screen("progress", phase="result")
        numbers = [a["application_no"] for a in state["view"]["applications"]]
        assert number in numbers and len(numbers) == 2
    finally:
        await county.stop()


async def test_appointment_slots_and_a_declined_booking(kiosk, central_broker: Mosquitto):
    app, ui, wire = kiosk
    county = CountyCentre(FleetRequester("127.0.0.1", central_broker.port), step_s=0.05)
    await county.start()
    try:
        await app.emit("presence.detected", {"screen_woken": False, "relay": None})
        await ui.screen("catalog")
        ui.send("appointment")
        await ui.screen("appointment", phase="department")
        ui.send("select_department", {"department_id": "yibao"})
        await ui.screen("identify")
        await app.emit("card.read", ZHANG_SAN)
        await ui.screen("confirm_identity")
        ui.send("confirm")
        state = await ui.screen("appointment", phase="slots")
        slots = state["view"]["slots"]
        assert len(slots) == 3 and slots[0]["official"] == "王芳"
        afternoon = next(s["slot_id"] for s in slots if s["slot_id"].endswith("-1400"))
        ui.send("book", {"slot_id": afternoon})
        state = await ui.screen("appointment", phase="declined")
        assert state["notice"]["code"] == "slot_taken" and afternoon not in [
            s["slot_id"] for s in state["view"]["slots"]
        ]
        ui.send("book", {"slot_id": slots[0]["slot_id"]})
        state = await ui.screen("appointment", phase="booked")
        assert state["view"]["booking"]["booking_no"].startswith("YY330803-")
        ui.send("done")
        await ui.screen("ended", reason="completed")
    finally:
        await county.stop()


async def kiosk_cli(config: Path, *args: str) -> tuple[int, dict]:
    """Run ``kiosk --config CONFIG ARGS`` without blocking the loop the appliance runs on."""
    code, out, _ = await kiosk_cli_said(config, *args)
    return code, out


async def kiosk_cli_said(config: Path, *args: str) -> tuple[int, dict, str]:
    """``kiosk_cli`` that also returns what the command said on stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kiosk_cli.main",
        "--config",
        str(config),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert stdout, stderr.decode(errors="replace")
    return proc.returncode or 0, json.loads(stdout), stderr.decode(errors="replace")


async def test_a_person_plays_the_clerk(kiosk, central_broker: Mosquitto, kiosk_config: Path):
    app, ui, wire = kiosk
    county = CountyCentre(FleetRequester("127.0.0.1", central_broker.port), clerk=False)
    await county.start()
    link = FleetRequester("127.0.0.1", central_broker.port, name="clerk")
    await link.start()
    console = ClerkConsole(link, ROOT)
    try:
        await start_application(app, ui)
        await capture_and_keep(ui, "hukou_book")
        ui.send("call")
        await ui.screen("call_waiting", status="requesting")
        await asyncio.sleep(0.3)
        assert ui.state["screen"] == "call_waiting"  # the county left the call to a person
        reply = await console.act("message", text="你好")
        assert reply["status"] == 409 and "call" in reply["error"]
        assert (await console.act("accept"))["status"] == 200
        state = await ui.screen("call")
        assert state["view"]["clerk"]["department"]["id"] == "shebao"
        assert (await console.act("message", text="请稍等"))["status"] == 200
        docs = await console.fetch_all()
        assert [d.doc_id for d in docs] == ["hukou_book"] and docs[0].verified
        # the CLI, as a technician would type it
        code, out = await kiosk_cli(kiosk_config, "sim", "clerk", "reject", "材料不全，请补充后再来")
        assert code == 0 and out["status"] == 200, out
        state = await ui.screen("rejected")
        assert state["view"]["reason"] == "材料不全，请补充后再来"
        code, out = await kiosk_cli(kiosk_config, "sim", "clerk", "approve")
        assert code == 1 and out["status"] == 409
    finally:
        await link.stop()
        await county.stop()


async def test_the_clerk_cannot_approve_over_a_missing_requested_document_unless_overriding(
    kiosk, central_broker: Mosquitto, kiosk_config: Path
):
    app, ui, wire = kiosk
    county = CountyCentre(FleetRequester("127.0.0.1", central_broker.port), clerk=False)
    await county.start()
    link = FleetRequester("127.0.0.1", central_broker.port, name="clerk")
    await link.start()
    console = ClerkConsole(link, ROOT)
    try:
        await start_application(app, ui)
        await capture_and_keep(ui, "hukou_book")
        ui.send("call")
        await ui.screen("call_waiting", status="requesting")
        assert (await console.act("accept"))["status"] == 200
        await ui.screen("call")
        requested = await console.act("request-document", text="户口簿本人页")
        assert requested["status"] == 200
        code, out, said = await kiosk_cli_said(kiosk_config, "sim", "clerk", "approve")
        assert code == 1 and out["status"] == 409 and out["missing_documents"] == [requested["doc_id"]]
        assert "NOT APPROVED" in said and requested["doc_id"] in said and "--override-missing" in said
        assert ui.state["screen"] == "call"  # the villager is still with the clerk
        code, out, said = await kiosk_cli_said(
            kiosk_config, "sim", "clerk", "approve", "--override-missing", "--application-no", "SQ-OVR-1"
        )
        assert code == 0 and out["status"] == 200, (out, said)
        await ui.screen("receipt", application_no="SQ-OVR-1")
        approved: list[dict] = []
        for _ in range(50):  # the durable event reaches the central broker within 5 s
            approved = [e for e in wire.events() if e.get("type") == "session.approved"]
            if approved:
                break
            await asyncio.sleep(0.1)
        assert approved and approved[0]["data"]["missing_documents"] == [requested["doc_id"]]
    finally:
        await link.stop()
        await county.stop()


async def test_the_help_button_on_gpiozero_mock_pins_reaches_the_screen_and_the_platform(
    tmp_path: Path, bus_broker: Mosquitto, central_broker: Mosquitto
):
    """The real gpio driver on gpiozero's mock pins (pressed through the appliance's ``sim.button``):
    a press says "staff notified" on the villager's screen and goes to the platform as a durable
    ``button.help.pressed``; a hold opens the PIN pad over the paused session; a press leaves it."""
    config = write_config(
        tmp_path / "kiosk.toml",
        bus_port=bus_broker.port,
        fleet_port=central_broker.port,
        data_dir=tmp_path / "data",
        extra='[drivers.gpio]\nbackend = "sim"\nhold_time_s = 0.3\n',
    )
    wire = await Wire(central_broker.port).start()
    app = Appliance(config)
    await app.start()
    ui = await Ui(bus_broker.port).start()
    try:
        await asyncio.wait_for(app.fleet.first_online.wait(), 10)
        await intents_flowing(ui)
        await start_application(app, ui)
        sid = ui.state["session_id"]
        reply = await ui.bus.call("sim", "button", {"action": "press"}, 5)
        assert reply["button"] == "help" and reply["action"] == "press"
        state = await ui.wait(lambda s: (s["notice"] or {}).get("code") == "help_requested", "help notice")
        assert state["screen"] == "documents" and state["session_id"] == sid
        await ui.bus.call("sim", "button", {"action": "hold"}, 5)
        state = await ui.screen("technician_pin", session_running=True)
        assert state["session_id"] == sid
        await ui.bus.call("sim", "button", {"action": "press"}, 5)
        state = await ui.screen("documents")
        assert state["session_id"] == sid
        pressed: list[dict] = []
        for _ in range(50):  # durable events reach the central broker within 5 s
            pressed = [e for e in wire.events() if e.get("type") == "button.help.pressed"]
            if len(pressed) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(pressed) == 2 and pressed[0]["data"]["meaning"] == "asks for staff"
        assert "session.ended" not in [e.get("type") for e in wire.events()]
    finally:
        await ui.bus.stop()
        await app.stop()
        await wire.stop()


async def test_the_county_survives_a_central_broker_restart(central_broker: Mosquitto):
    link = FleetRequester("127.0.0.1", central_broker.port, name="county")
    county = CountyCentre(link)
    await county.start()
    try:
        central_broker.kill()
        await asyncio.sleep(0.3)
        reply_error = None
        try:
            await link.command(ROOT, "session.status", {}, timeout_s=0.5)
        except Exception as exc:  # noqa: BLE001
            reply_error = exc
        assert getattr(reply_error, "status", None) in (503, 504)
        central_broker.start()
        assert await link.link.wait_connected(10), "the county reconnects to the restarted broker"
        # nobody answers for this device, but the request goes out again: the link is back
        reply_error = None
        try:
            await link.command(ROOT, "session.status", {}, timeout_s=0.5)
        except Exception as exc:  # noqa: BLE001
            reply_error = exc
        assert getattr(reply_error, "status", None) == 504
    finally:
        await county.stop()
