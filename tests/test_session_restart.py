"""A restart in the middle of a visit, on the real ``SessionService`` and a real local mosquitto: the
recording kiosk-media kept making of the dead session is closed before the next one starts, and a
recording kiosk-media refuses shows in health with the reason."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config
from fleet_helpers import ApplianceProcess, Platform
from test_session_service import BusContext, Ui, intents_flowing, kiosk_config

from appliance.session.service import SessionService
from kiosk_core.errors import CommandError, Conflict
from kiosk_core.localbus import LocalBus
from sim.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(60)

ORPHAN = "s-00000000000000aa"


class FakeRecorder:
    """kiosk-media's ``record_start``/``record_stop`` as edge_media.service answers them: one recording
    at a time, 409 naming the session being recorded, 409 when there is nothing to stop."""

    def __init__(self, port: int, recording: str | None = None, refuse: int | None = None) -> None:
        self.bus = LocalBus("127.0.0.1", port, name="test-media")
        self.recording, self.refuse = recording, refuse
        self.calls: list[tuple[str, str | None]] = []

    async def start(self) -> FakeRecorder:
        self.bus.serve("media", {"record_start": self.record_start, "record_stop": self.record_stop})
        await self.bus.start()
        return self

    async def record_start(self, params: dict[str, Any]) -> dict[str, Any]:
        sid = params["session_id"]
        self.calls.append(("record_start", sid))
        if self.refuse is not None:
            raise CommandError(self.refuse, "recording is disabled in [media.recording]")
        if self.recording is not None and self.recording != sid:
            raise Conflict(
                f"session {self.recording} is being recorded; stop it first", recording=self.recording
            )
        self.recording = sid
        return {"session_id": sid, "dir": f"/var/lib/kiosk/recordings/{sid}"}

    async def record_stop(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("record_stop", self.recording))
        if self.recording is None:
            raise Conflict("nothing is being recorded")
        sid, self.recording = self.recording, None
        return {"session_id": sid, "segments": 3, "bytes": 123456}


async def until(predicate: Any, what: str, timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


@pytest.fixture
async def parts(tmp_path: Path, bus_broker: Mosquitto):
    bus = LocalBus("127.0.0.1", bus_broker.port, name="test-appliance")
    await bus.start()
    ui = await Ui(bus_broker.port).start()
    started: list[Any] = []
    yield bus, ui, started
    for service in started:
        await service.stop()
    for b in (ui.bus, bus):
        await b.stop()


def crashed_mid_session(data: Path) -> None:
    """What a kill -9 mid-session leaves: the marker with the session id (no personal data)."""
    (data / "session").mkdir(parents=True)
    (data / "session" / "active.json").write_text(json.dumps({"session_id": ORPHAN}))


async def test_a_restarted_appliance_closes_the_orphaned_recording_then_records_the_next_session(
    tmp_path: Path, bus_broker: Mosquitto, parts
):
    bus, ui, started = parts
    media = await FakeRecorder(bus_broker.port, recording=ORPHAN).start()  # it kept recording the dead one
    try:
        data = tmp_path / "data"
        crashed_mid_session(data)
        service = SessionService(BusContext(kiosk_config(data), data, bus))
        started.append(service)
        await service.start()
        await intents_flowing(ui)
        await ui.screen("ended", reason="restart")
        await until(lambda: media.recording is None, "the orphaned recording stopped")
        ui.send("wake")
        state = await ui.screen("catalog")
        await until(lambda: media.recording == state["session_id"], "the new session recorded")
        assert media.calls == [("record_stop", ORPHAN), ("record_start", state["session_id"])]
        assert service.health()["recording"].status == "ok"
    finally:
        await media.bus.stop()


async def test_an_orphan_found_only_at_the_next_start_is_stopped_and_the_start_tried_again(
    tmp_path: Path, bus_broker: Mosquitto, parts
):
    """No marker (the disk lost it), but kiosk-media still records another session: the 409 of
    record_start is not ignored any more."""
    bus, ui, started = parts
    media = await FakeRecorder(bus_broker.port, recording=ORPHAN).start()
    try:
        data = tmp_path / "data"
        service = SessionService(BusContext(kiosk_config(data), data, bus))
        started.append(service)
        await service.start()
        await intents_flowing(ui)
        ui.send("wake")
        state = await ui.screen("catalog")
        await until(lambda: media.recording == state["session_id"], "the new session recorded")
        assert media.calls == [
            ("record_start", state["session_id"]),
            ("record_stop", ORPHAN),
            ("record_start", state["session_id"]),
        ]
        assert service.health()["recording"].status == "ok"
    finally:
        await media.bus.stop()


async def test_a_refused_recording_degrades_the_recording_health_with_the_reason(
    tmp_path: Path, bus_broker: Mosquitto, parts
):
    bus, ui, started = parts
    media = await FakeRecorder(bus_broker.port, refuse=503).start()
    try:
        data = tmp_path / "data"
        service = SessionService(BusContext(kiosk_config(data), data, bus))
        started.append(service)
        await service.start()
        await intents_flowing(ui)
        assert service.health()["recording"].status == "ok"
        ui.send("wake")
        state = await ui.screen("catalog")
        await until(lambda: service.health()["recording"].status == "degraded", "recording degraded")
        reason = service.health()["recording"].reason
        assert state["session_id"] in reason and "503" in reason and "recording is disabled" in reason
        assert state["screen"] == "catalog"  # the villager is never held up by it
        # kiosk-media records again: the next session clears it
        media.refuse = None
        ui.send("end")
        await ui.screen("ended")
        ui.send("wake")
        state = await ui.screen("catalog")
        await until(lambda: service.health()["recording"].status == "ok", "recording ok again")
        assert media.recording == state["session_id"]
    finally:
        await media.bus.stop()


async def test_an_unreadable_marker_changes_nothing(tmp_path: Path, bus_broker: Mosquitto, parts):
    bus, ui, started = parts
    data = tmp_path / "data"
    for raw in (b"\xff\xfe", b"[1]", b'{"session_id": "../../etc"}', b'{"session_id": "s-00000000000000aa"'):
        (data / "session").mkdir(parents=True, exist_ok=True)
        (data / "session" / "active.json").write_bytes(raw)
        ctx = BusContext(kiosk_config(data), data, bus)
        service = SessionService(ctx)
        await service.start()
        try:
            await intents_flowing(ui)
            assert service.machine.screen == "attract" and ctx.types() == []
            assert not (data / "session" / "active.json").exists()
        finally:
            await service.stop()


async def test_the_platform_sees_the_refused_recording_in_telemetry(
    tmp_path: Path, bus_broker: Mosquitto, central_broker: Mosquitto, platform: Platform
):
    """The real daemon (``kiosk run``): a session kiosk-media will not record shows in the periodic
    telemetry's health as ``recording: degraded`` with the reason."""
    config = write_config(
        tmp_path / "kiosk.toml",
        bus_port=bus_broker.port,
        fleet_port=central_broker.port,
        data_dir=tmp_path / "data",
        telemetry_interval_s=1,
    )
    media = await FakeRecorder(bus_broker.port, refuse=503).start()
    app = ApplianceProcess(config, tmp_path / "appliance.log").start()
    ui = await Ui(bus_broker.port).start()
    try:
        await platform.wait_for(lambda: platform.of("telemetry"), timeout_s=20, what="telemetry")
        assert platform.of("telemetry")[-1]["peripherals"]["recording"]["status"] == "ok"
        await intents_flowing(ui)
        ui.send("wake")
        state = await ui.screen("catalog")

        def degraded() -> dict[str, Any] | None:
            last = platform.of("telemetry")[-1]["peripherals"].get("recording", {})
            return last if last.get("status") == "degraded" else None

        recording = await platform.wait_for(degraded, timeout_s=10, what="recording degraded in telemetry")
        assert state["session_id"] in recording["reason"] and "503" in recording["reason"]
    finally:
        await ui.bus.stop()
        await media.bus.stop()
        app.terminate()
