"""SessionService on a real local mosquitto: the UI's view of the state topic, intents, peripheral events,
the document camera over RPC, encrypted documents, platform commands and the catalog push."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest
from session_helpers import LI_SI, ZHANG_SAN, HandClock

from appliance.config import parse
from appliance.session.catalog import default_catalog
from appliance.session.service import SessionService
from kiosk_core.errors import CommandError
from kiosk_core.localbus import LocalBus, dumps
from sim.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(60)

REGION = ["33", "3308", "330803", "330803100", "330803100201"]
PLAIN_MARK = b"PLAINTEXT-DOCUMENT-MARK"


class BusContext:
    """The parts of the daemon's Context a subsystem uses, over a real local bus."""

    def __init__(self, config: Any, data_dir: Path, bus: LocalBus) -> None:
        self.config, self.data_dir, self.bus = config, data_dir, bus
        self.log = logging.getLogger("test.session")
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._listeners: list[tuple[str, Any]] = []

    async def emit(self, type: str, data: dict[str, Any], *, durable: bool = True) -> None:
        self.events.append((type, {k: v for k, v in data.items() if not k.startswith("_")}))
        for prefix, listener in list(self._listeners):
            if type.startswith(prefix):
                result = listener(type, data)
                if asyncio.iscoroutine(result):
                    await result

    def listen(self, prefix: str, listener: Any) -> None:
        self._listeners.append((prefix, listener))

    def publish_state(self, name: str, state: dict[str, Any] | None) -> None:
        self.bus.publish(f"kiosk/local/state/{name}", b"" if state is None else dumps(state), retain=True)

    def publish_local(
        self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False
    ) -> None:
        self.bus.publish(topic, payload, qos=qos, retain=retain)

    def subscribe_local(self, topic_filter: str, handler: Any) -> None:
        self.bus.subscribe(topic_filter, lambda msg: handler(msg.topic, msg.payload))

    def register_rpc(self, service: str, handlers: Any) -> None:
        self.bus.serve(service, handlers)

    async def call_rpc(
        self, service: str, method: str, params: dict[str, Any], timeout_s: float = 5.0
    ) -> dict:
        return await self.bus.call(service, method, params, timeout_s)

    def types(self, prefix: str = "session.") -> list[str]:
        return [t for t, _ in self.events if t.startswith(prefix)]


class Ui:
    """What the kiosk UI does: read the retained state, send intents."""

    def __init__(self, port: int) -> None:
        self.bus = LocalBus("127.0.0.1", port, name="test-ui")
        self.state: dict[str, Any] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> Ui:
        self.bus.subscribe("kiosk/local/state/session", self._on_state)
        await self.bus.start()
        return self

    def _on_state(self, msg: Any) -> None:
        self.state = json.loads(msg.payload) if msg.payload else None
        self._changed.set()

    async def wait(self, predicate: Any, what: str, timeout_s: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while not (self.state is not None and predicate(self.state)):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"UI never saw {what}; last state: {json.dumps(self.state, ensure_ascii=False)[:600]}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), 0.1)
            except TimeoutError:
                pass
        return self.state

    async def screen(self, name: str, **view: Any) -> dict[str, Any]:
        return await self.wait(
            lambda s: s["screen"] == name and all(s["view"].get(k) == v for k, v in view.items()),
            f"screen {name} {view}",
        )

    def send(self, intent: str, body: Any = None, raw: bytes | None = None) -> None:
        self.bus.publish(f"kiosk/local/intent/{intent}", raw if raw is not None else dumps(body or {}))


class FakeDoccam:
    """The media process's ``doccam_capture``: writes a plaintext JPEG-like file, reports its hash."""

    def __init__(self, port: int, directory: Path, size: int = 150_000) -> None:
        self.bus = LocalBus("127.0.0.1", port, name="test-media")
        self.dir, self.size, self.shots = directory, size, 0
        self.fail = False
        self.paths: list[Path] = []

    async def start(self) -> FakeDoccam:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bus.serve("media", {"doccam_capture": self.capture})
        await self.bus.start()
        return self

    async def capture(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.fail:
            raise CommandError(503, "doccam: no frames (is the document camera plugged in?)")
        self.shots += 1
        data = b"\xff\xd8\xff\xe0" + PLAIN_MARK + os.urandom(self.size - 4 - len(PLAIN_MARK))
        path = self.dir / f"capture-{self.shots}.jpg"
        path.write_bytes(data)
        self.paths.append(path)
        return {
            "path": str(path),
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "width": 1920,
            "height": 1080,
        }


def kiosk_config(data_dir: Path, **session: Any) -> Any:
    return parse(
        {
            "device": {"id": "kiosk-0001", "name": "赤柯山村便民服务站", "region": REGION},
            "storage": {"data_dir": str(data_dir)},
            "session": session,
        }
    )


@pytest.fixture
async def rig(tmp_path: Path, bus_broker: Mosquitto):
    bus = LocalBus("127.0.0.1", bus_broker.port, name="test-appliance")
    await bus.start()
    ctx = BusContext(kiosk_config(tmp_path / "data", technician_pin_hash=PIN_HASH), tmp_path / "data", bus)
    clock = HandClock(time.monotonic())
    service = SessionService(ctx, clock=clock)
    ui = await Ui(bus_broker.port).start()
    doccam = await FakeDoccam(bus_broker.port, tmp_path / "media").start()
    await service.start()
    await intents_flowing(ui)
    yield ctx, service, ui, doccam, clock
    await service.stop()
    for b in (ui.bus, doccam.bus, bus):
        await b.stop()


async def intents_flowing(ui: Ui) -> None:
    """The service subscribes asynchronously: touch (which echoes ``ref``) until it answers."""
    for n in range(50):
        ui.send("touch", {"ref": f"ready-{n}"})
        try:
            await ui.wait(
                lambda s: (s.get("ref") or "").startswith("ready"), "the first touch", timeout_s=0.2
            )
            return
        except AssertionError:
            continue
    raise AssertionError("the session service never answered an intent")


PIN_HASH = (
    "pbkdf2_sha256$1000$73616c742d73616c74$"
    + hashlib.pbkdf2_hmac("sha256", b"246810", b"salt-salt", 1000).hex()
)


async def command(service: SessionService, name: str, params: dict[str, Any]) -> dict[str, Any]:
    return await service.commands()[name](params)


def stored_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "session" / "documents").rglob("*") if p.is_file()]


async def capture_and_keep(ui: Ui, doc_id: str) -> None:
    ui.send("capture", {"doc_id": doc_id})
    await ui.screen("capture", phase="preview")
    ui.send("shoot", {"screen": "capture"})
    state = await ui.screen("capture", phase="review")
    assert state["actions"][:2] == ["accept", "retake"]
    ui.send("accept")
    await ui.wait(
        lambda s: (
            s["screen"] in ("documents", "call")
            and any(d["doc_id"] == doc_id and d["status"] == "captured" for d in s["view"]["checklist"])
        ),
        f"{doc_id} kept",
    )


async def test_a_villager_completes_an_application_and_nothing_personal_remains(rig, tmp_path: Path):
    ctx, service, ui, doccam, clock = rig
    state = await ui.screen("attract")
    assert state["v"] == 1 and state["heartbeat_s"] == 5 and state["actions"] == ["wake", "language"]

    await ctx.emit("presence.detected", {"screen_woken": False, "relay": None})
    await ui.screen("catalog")
    ui.send("select_department", {"department_id": "minzheng", "ref": "t1"})
    state = await ui.wait(lambda s: s["view"]["department"] is not None, "items of 民政")
    assert state["ref"] == "t1"
    ui.send("select_item", {"item_id": "minzheng.low_income_allowance"})
    await ui.screen("identify")

    await ctx.emit("card.read", ZHANG_SAN)
    state = await ui.screen("confirm_identity")
    assert state["identity"] == {"name": "张三", "id_masked": "3308**********123X"}
    ui.send("confirm")
    await ui.screen("documents")

    for doc in ("hukou_book", "income_proof"):
        await capture_and_keep(ui, doc)
    # the camera's plaintext files are gone; what is stored is encrypted
    assert not any(p.exists() for p in doccam.paths)
    files = stored_files(tmp_path / "data")
    assert len(files) == 2 and all(PLAIN_MARK not in f.read_bytes() for f in files)

    ui.send("call")
    await ui.screen("call_waiting", status="requesting")
    sid = ui.state["session_id"]
    requested = dict(ctx.events)["session.call.requested"]
    await command(service, "session.call.queued", {"session_id": sid, "position": 1, "estimated_wait_s": 30})
    await ui.screen("call_waiting", status="queued", position=1)
    await command(
        service,
        "session.call.accepted",
        {"session_id": sid, "clerk": {"id": "c-0042", "name": "李明", "department": "minzheng"}},
    )
    state = await ui.screen("call")
    assert state["view"]["clerk"]["name"] == "李明" and state["idle"] is None

    # the platform pulls a document in chunks and verifies its hash
    doc = requested["documents"][0]
    data, offset = b"", 0
    while True:
        chunk = await command(
            service,
            "session.document.get",
            {"session_id": sid, "doc_id": doc["doc_id"], "offset": offset, "length": 65536},
        )
        piece = base64.b64decode(chunk["data"])
        assert hashlib.sha256(piece).hexdigest() == chunk["chunk_sha256"]
        data, offset = data + piece, offset + len(piece)
        if chunk["eof"]:
            break
    assert hashlib.sha256(data).hexdigest() == doc["sha256"] and data.startswith(b"\xff\xd8\xff")
    # resuming from the middle gives the same bytes
    again = await command(
        service,
        "session.document.get",
        {"session_id": sid, "doc_id": doc["doc_id"], "offset": 100_000, "length": 1000},
    )
    assert base64.b64decode(again["data"]) == data[100_000:101_000]

    identity = await command(service, "session.identity.get", {"session_id": sid})
    assert identity["id_number"] == "33080319900307123X"
    assert service.commands()["session.identity.get"].personal is True
    assert service.commands()["session.document.get"].personal is True

    reply = await command(service, "session.request_document", {"session_id": sid, "name": "户口簿本人页"})
    state = await ui.wait(
        lambda s: s["notice"] and s["notice"]["code"] == "clerk_requested_document", "request"
    )
    assert "capture" in state["actions"]
    await capture_and_keep(ui, reply["doc_id"])
    await command(service, "session.message", {"session_id": sid, "text": "材料齐全"})
    await ui.wait(
        lambda s: s["view"].get("messages") and s["view"]["messages"][-1]["text"] == "材料齐全", "message"
    )
    await command(service, "session.approve", {"session_id": sid, "application_no": "SQ330803-20261121-0007"})
    state = await ui.screen("receipt", application_no="SQ330803-20261121-0007")
    ui.send("continue")
    await ui.screen("rating")
    ui.send("rate", {"score": 4, "reason": "clear"})
    await ui.screen("ended", reason="completed")

    # personal data: gone from disk, from memory and from every fleet event
    assert stored_files(tmp_path / "data") == [] and service.machine.session is None
    assert service.documents._keys == {}
    text = json.dumps(ctx.events, ensure_ascii=False, default=str)
    assert "33080319900307123X" not in text
    assert ctx.types() == [
        "session.started",
        "session.item.selected",
        "session.identified",
        "session.identity.confirmed",
        "session.document.captured",
        "session.document.captured",
        "session.call.requested",
        "session.call.connected",
        "session.document.requested",
        "session.document.captured",
        "session.approved",
        "session.rated",
        "session.ended",
        "session.card.left",  # not durable: the buzzer's "take your card" (the card is on the reader)
    ]
    with pytest.raises(CommandError) as info:
        await command(
            service,
            "session.document.get",
            {"session_id": sid, "doc_id": doc["doc_id"], "offset": 0, "length": 10},
        )
    assert info.value.status == 409


async def test_idle_timeout_shows_the_countdown_then_wipes_memory_and_disk(rig, tmp_path: Path):
    ctx, service, ui, doccam, clock = rig
    await ctx.emit("presence.detected", {"screen_woken": False, "relay": None})
    ui.send("progress")
    await ui.screen("identify")
    ui.send("back")
    await ui.screen("catalog")
    ui.send("select_department", {"department_id": "shebao"})
    ui.send("select_item", {"item_id": "shebao.pension_enrolment"})
    await ui.wait(
        lambda s: s["screen"] == "identify" and s["view"]["item"] is not None, "identify for the item"
    )
    await ctx.emit("card.read", LI_SI)
    ui.send("confirm", {"screen": "confirm_identity"})
    await ui.screen("documents")
    await capture_and_keep(ui, "hukou_book")
    assert len(stored_files(tmp_path / "data")) == 1

    clock.advance(76)
    service._wake.set()
    state = await ui.wait(lambda s: (s["idle"] or {}).get("countdown") == 14, "countdown 14")
    assert state["actions"][0] == "still_here"
    clock.advance(14)
    service._wake.set()
    state = await ui.screen("ended", reason="idle_timeout")
    assert state["identity"] is None and state["session_id"] is None
    assert stored_files(tmp_path / "data") == []
    assert "session.idle.warning" in ctx.types()


async def test_hostile_intents_are_ignored_and_the_session_carries_on(rig):
    ctx, service, ui, doccam, clock = rig
    await ui.screen("attract")
    for topic_tail, raw in (
        ("wake", b"{not json"),
        ("wake", b"[1,2]"),
        ("wake", b"\xff\xfe"),
        ("wake", b"{" + b" " * 5000 + b"}"),
        ("format_disk", b"{}"),
        ("select_item", b"{}"),
        ("wake/again", b"{}"),
        ("technician_pin", b'{"pin": "000000"}'),
    ):
        ui.bus.publish(f"kiosk/local/intent/{topic_tail}", raw)
    await asyncio.sleep(0.3)
    assert service.intents_rejected == 8
    assert ui.state["screen"] == "attract" and ctx.types() == []
    ui.send("wake")
    await ui.screen("catalog")


async def test_the_camera_failing_shows_a_notice_and_a_retry(rig):
    ctx, service, ui, doccam, clock = rig
    await ctx.emit("presence.detected", {"screen_woken": False, "relay": None})
    ui.send("select_department", {"department_id": "shebao"})
    ui.send("select_item", {"item_id": "shebao.pension_enrolment"})
    await ui.screen("identify")
    await ctx.emit("card.read", ZHANG_SAN)
    ui.send("confirm")
    await ui.screen("documents")
    doccam.fail = True
    ui.send("capture", {"doc_id": "hukou_book"})
    ui.send("shoot")
    state = await ui.screen("capture", phase="failed")
    assert (
        state["notice"]["code"] == "doccam_unavailable" and "no frames" in state["notice"]["params"]["detail"]
    )
    assert state["actions"][0] == "shoot"
    doccam.fail = False
    ui.send("shoot")
    await ui.screen("capture", phase="review")


async def test_card_removed_and_clerk_commands_in_the_wrong_state(rig):
    ctx, service, ui, doccam, clock = rig
    await ctx.emit("presence.detected", {"screen_woken": False, "relay": None})
    ui.send("select_department", {"department_id": "shebao"})
    ui.send("select_item", {"item_id": "shebao.pension_enrolment"})
    await ui.screen("identify")
    await ctx.emit("card.read", ZHANG_SAN)
    ui.send("confirm")
    await ui.screen("documents")
    await ctx.emit("card.removed", {"reader": "card_reader", "reason": "removed"})
    await ui.screen("card_removed", returns_to="documents")
    sid = ui.state["session_id"]
    for name, params, status in (
        ("session.approve", {"session_id": sid, "application_no": "SQ-1"}, 409),
        ("session.message", {"session_id": "s-ffffffffffffffff", "text": "hi"}, 409),
        ("session.document.get", {"session_id": sid, "doc_id": "hukou_book", "offset": 0, "length": 10}, 409),
        (
            "session.document.get",
            {"session_id": sid, "doc_id": "hukou_book", "offset": -1, "length": 10},
            400,
        ),
        (
            "session.document.get",
            {"session_id": sid, "doc_id": "hukou_book", "offset": 0, "length": 10**9},
            400,
        ),
        (
            "session.document.get",
            {"session_id": sid, "doc_id": "../../etc/passwd", "offset": 0, "length": 9},
            400,
        ),
    ):
        with pytest.raises(CommandError) as info:
            await command(service, name, params)
        assert info.value.status == status, (name, params)
    await ctx.emit("card.read", ZHANG_SAN)
    await ui.screen("documents")


async def test_catalog_push_only_newer_validated_and_kept_across_restart(rig, tmp_path: Path):
    ctx, service, ui, doccam, clock = rig
    base = default_catalog().model_dump(mode="json", by_alias=True)
    assert await command(service, "session.catalog.set", {"version": 1, "catalog": base}) == {
        "applied": False,
        "version": 1,
    }
    broken = {**base, "version": 2, "items": [{**base["items"][0], "department": "nowhere"}]}
    with pytest.raises(CommandError) as info:
        await command(service, "session.catalog.set", {"version": 2, "catalog": broken})
    assert info.value.status == 400 and "nowhere" in str(info.value) and info.value.detail["problems"]
    for bad in (
        {"version": "2", "catalog": base},
        {"version": 2, "catalog": []},
        {"version": 2},
        {"version": 3, "catalog": base},  # the catalog says version 1
        {"version": True, "catalog": base},
    ):
        with pytest.raises(CommandError) as info:
            await command(service, "session.catalog.set", bad)
        assert info.value.status == 400
    smaller = {
        **base,
        "version": 2,
        "departments": base["departments"][:1],
        "items": [i for i in base["items"] if i["department"] == base["departments"][0]["id"]],
    }
    assert await command(service, "session.catalog.set", {"version": 2, "catalog": smaller}) == {
        "applied": True,
        "version": 2,
    }
    assert (
        "session.catalog.applied",
        {"version": 2, "items": len(smaller["items"]), "departments": 1},
    ) in ctx.events
    await ui.wait(lambda s: s["view"].get("catalog_version") == 2, "attract shows catalog v2")
    # a restarted appliance keeps the pushed catalog
    again = SessionService(ctx)
    assert again.catalogs.current.version == 2 and len(again.catalogs.current.departments) == 1


async def test_technician_mode_over_the_bus(rig):
    ctx, service, ui, doccam, clock = rig
    await ctx.emit("button.help.held", {"hold_time_s": 3})
    state = await ui.screen("technician_pin")
    assert state["view"]["attempts_left"] == 3
    ui.send("technician_pin", {"pin": "111111"})
    await ui.wait(lambda s: (s["notice"] or {}).get("code") == "wrong_pin", "wrong pin notice")
    ui.send("technician_pin", {"pin": "246810"})
    state = await ui.screen("technician")
    assert state["view"]["device"]["id"] == "kiosk-0001" and state["view"]["pin_is_default"] is False
    from appliance.sysinfo import clock_synced

    assert state["view"]["clock"] == {"synced": clock_synced()}  # the technician sees the clock's sync
    ui.send("technician_exit")
    await ui.screen("attract")
    assert ctx.types("session.technician") == [
        "session.technician.pin_failed",
        "session.technician.entered",
        "session.technician.exited",
    ]


async def test_help_button_press_is_confirmed_and_a_hold_never_ends_the_villagers_session(rig):
    """The gpio driver's events as the daemon hands them over: a press shows "staff notified" over the
    screen; a hold opens the PIN pad over the paused session, which a press leaves again."""
    ctx, service, ui, doccam, clock = rig
    await ctx.emit("presence.detected", {"screen_woken": False, "relay": None})
    ui.send("select_department", {"department_id": "shebao"})
    ui.send("select_item", {"item_id": "shebao.pension_certification"})
    await ui.screen("identify")
    await ctx.emit("card.read", ZHANG_SAN)
    ui.send("confirm")
    state = await ui.screen("documents")
    sid = state["session_id"]
    await ctx.emit("button.help.pressed", {"meaning": "asks for staff", "duration_s": 0.2})
    state = await ui.wait(lambda s: (s["notice"] or {}).get("code") == "help_requested", "help notice")
    assert state["screen"] == "documents" and state["session_id"] == sid
    await ctx.emit("button.help.held", {"meaning": "technician mode", "hold_time_s": 3})
    state = await ui.screen("technician_pin")
    assert state["session_id"] == sid and state["view"]["session_running"] is True
    await ctx.emit("button.help.pressed", {"meaning": "asks for staff", "duration_s": 0.2})
    state = await ui.screen("documents")
    assert state["session_id"] == sid and state["identity"]["id_masked"]
    assert "session.ended" not in ctx.types()
    assert ctx.types("button.help.") == ["button.help.pressed", "button.help.held", "button.help.pressed"]


async def test_stop_publishes_unavailable_and_start_wipes_leftovers(tmp_path: Path, bus_broker: Mosquitto):
    bus = LocalBus("127.0.0.1", bus_broker.port, name="test-appliance")
    await bus.start()
    leftover = tmp_path / "data" / "session" / "documents" / "s-00000000000000aa"
    leftover.mkdir(parents=True)
    (leftover / "id_card.bin").write_bytes(b"sealed under a key nobody has any more")
    # the appliance died mid-session: only the session id survived on disk
    (tmp_path / "data" / "session" / "active.json").write_text('{"session_id": "s-00000000000000aa"}')
    ctx = BusContext(kiosk_config(tmp_path / "data"), tmp_path / "data", bus)
    service = SessionService(ctx)
    ui = await Ui(bus_broker.port).start()
    try:
        await service.start()
        await intents_flowing(ui)
        assert not leftover.exists()
        assert ctx.events[0] == (
            "session.ended",
            {
                "session_id": "s-00000000000000aa",
                "reason": "restart",
                "purpose": None,
                "last_screen": None,
                "duration_s": None,
                "item_id": None,
                "recovered": True,
            },
        )
        assert service.health()["session"].status == "degraded"  # the factory PIN is still set
        # the villager is told the visit was cut short; a presence sensor does not skip that
        await ui.screen("ended", reason="restart")
        await ctx.emit("presence.detected", {"screen_woken": False, "relay": None})
        assert ui.state["screen"] == "ended"
        ui.send("wake")
        await ui.screen("catalog")
        marker = json.loads((tmp_path / "data" / "session" / "active.json").read_text())
        assert marker == {"session_id": ui.state["session_id"]}
        await service.stop()
        # a clean stop mid-session: session.ended is sent now, the villager is told at the next start
        marker = json.loads((tmp_path / "data" / "session" / "active.json").read_text())
        assert marker == {"session_id": ctx.events[-1][1]["session_id"], "ended": True}
        state = await ui.screen("unavailable")
        assert state["actions"] == [] and ctx.types()[-1] == "session.ended"
    finally:
        await ui.bus.stop()
        await bus.stop()
