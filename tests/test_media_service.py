"""The kiosk-media process over a real local mosquitto: RPC, events, retained state, and MediaControl."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from appliance import config as config_mod
from appliance.commands import Accepted
from appliance.media_control import MediaControl
from edge_media.service import STATE_TOPIC, MediaService
from kiosk_core.errors import CommandError, NotConnected
from kiosk_core.localbus import EVENT_TOPIC, LocalBus
from kiosk_core.mqtt import Message, publish_properties
from kiosk_core.payload import dumps
from sim.mosquitto import Mosquitto
from tests.conftest import write_config

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = pytest.mark.xdist_group("heavy")

MEDIA = """
[drivers.camera.room_main]
backend = "synthetic"
video_size = "320x240"
[drivers.camera.room_backup]
backend = "synthetic"
pattern = "testsrc"
video_size = "320x240"
[drivers.doccam]
backend = "synthetic"
preview_size = "320x240"
still_size = "1280x960"
still_framerate = 10
warmup_frames = 1
[media.renditions.main]
size = "320x240"
bitrate_kbps = 300
threads = 1
[media.failover]
holdoff_s = 0.5
[media.recording]
segment_s = 1.0
min_free_mb = 1
[media]
state_interval_s = 0.3
"""


class Bench:
    """A technician's view of the bus: calls, the event feed and the retained media state."""

    def __init__(self, port: int) -> None:
        self.bus = LocalBus("127.0.0.1", port, name="bench")
        self.events: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {}
        self.bus.subscribe(EVENT_TOPIC, self._stored)
        self.bus.subscribe(STATE_TOPIC, lambda m: self.state.update(json.loads(m.payload)))

    def _stored(self, msg: Message) -> None:
        """Take the event as the appliance's intake would and answer that it is stored."""
        self.events.append(json.loads(msg.payload))
        if msg.response_topic:
            reply = dumps({"status": 200, "seq": len(self.events)})
            props = publish_properties(correlation_data=msg.correlation_data)
            # The stand-in's bus may be closing (the end of a test): the media process keeps the event
            # and asks again, as it would of an appliance that went away.
            with contextlib.suppress(NotConnected):
                self.bus.link.publish(msg.response_topic, reply, qos=1, properties=props)

    async def call(self, method: str, params: dict | None = None, timeout_s: float = 15) -> dict[str, Any]:
        return await self.bus.call("media", method, params or {}, timeout_s=timeout_s)

    async def wait_for(self, cond, within_s: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while not cond():
            if loop.time() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_media(
    tmp_path: Path, bus_port: int, extra: str, *, data_dir: Path | None = None, wait_audio: bool = True
) -> AsyncIterator[tuple[MediaService, Bench]]:
    """The media process (in this loop) on a config with ``extra`` (written in ``tmp_path``, data in
    ``data_dir`` or ``tmp_path/data``), and a bench on its bus; with ``wait_audio``, once the
    microphone or its stand-in is healthy."""
    path = write_config(
        tmp_path / "kiosk.toml",
        bus_port=bus_port,
        fleet_port=1,
        data_dir=data_dir or tmp_path / "data",
        extra=extra,
    )
    service = MediaService(config_mod.load(path))
    await service.start()
    bench = Bench(bus_port)
    await bench.bus.start()
    try:
        if wait_audio:
            await bench.wait_for(lambda: bench.state.get("audio", {}).get("health", {}).get("status") == "ok")
        yield service, bench
    finally:
        await bench.bus.stop()
        await service.stop()


class Ctx:
    """The part of the appliance's Context that MediaControl uses, over the same real bus."""

    def __init__(self, bus: LocalBus) -> None:
        self.bus = bus
        self.log = logging.getLogger("test.media.control")

    def subscribe_local(self, topic_filter: str, handler) -> None:
        self.bus.subscribe(topic_filter, lambda m: handler(m.topic, m.payload))

    async def call_rpc(self, service: str, method: str, params: dict, timeout_s: float = 5.0) -> dict:
        return await self.bus.call(service, method, params, timeout_s)


@pytest.fixture
async def media(tmp_path: Path, bus_broker: Mosquitto):
    async with running_media(tmp_path, bus_broker.port, MEDIA, wait_audio=False) as pair:
        yield pair


@pytest.mark.timeout(60)
async def test_record_a_session_snapshot_doccam_and_export(media) -> None:
    service, bench = media
    await bench.wait_for(
        lambda: (
            bench.state.get("active_source") == "main"
            and bench.state["sources"]["doccam"]["health"]["status"] == "ok"
        )
    )
    assert bench.state["sources"]["main"]["health"]["status"] == "ok"

    started = await bench.call("record_start", {"session_id": "s-20261121-001"})
    assert started["session_id"] == "s-20261121-001"
    with pytest.raises(CommandError) as busy:
        await bench.call("record_start", {"session_id": "another"})
    assert busy.value.status == 409

    snap = await bench.call("snapshot", {"source": "main"})
    assert hashlib.sha256(Path(snap["path"]).read_bytes()).hexdigest() == snap["sha256"]
    still = await bench.call("doccam_capture")
    data = Path(still["path"]).read_bytes()
    assert data[:2] == b"\xff\xd8" and hashlib.sha256(data).hexdigest() == still["sha256"]
    assert still["size"] == len(data)
    assert still["page"] is not None and still["width"] < 1280  # the simulated page, cut from the desk

    await asyncio.sleep(2.2)
    stopped = await bench.call("record_stop")
    assert stopped["segments"] >= 2 and stopped["errors"] == 0
    exported = await bench.call("export", {"session_id": "s-20261121-001"}, timeout_s=30)
    probe = await asyncio.to_thread(
        subprocess.run,
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", exported["path"]],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert probe.returncode == 0 and float(probe.stdout) >= 2.0
    await bench.wait_for(
        lambda: (
            {"media.record.started", "media.record.stopped", "doccam.captured"}
            <= {e["type"] for e in bench.events}
        )
    )


@pytest.mark.timeout(60)
async def test_sim_unplug_main_fails_over_with_an_event(media) -> None:
    service, bench = media
    await bench.wait_for(lambda: bench.state.get("active_source") == "main")
    await bench.call("sim", {"action": "unplug", "source": "room_main"})

    def to_backup() -> list[dict]:
        return [
            e["data"]
            for e in bench.events
            if e["type"] == "media.failover" and (e["data"]["from"], e["data"]["to"]) == ("main", "backup")
        ]

    await bench.wait_for(lambda: bool(to_backup()))
    failover = to_backup()[0]
    # the capture layer reports the device gone: no waiting out the silence window
    assert failover["from"] == "main" and failover["reason"].startswith("main lost: "), failover
    assert failover["gap_ms"] <= 100  # the budget; ~one frame interval on an idle machine
    await bench.wait_for(lambda: bench.state["sources"]["main"]["health"]["status"] == "missing")
    await bench.call("sim", {"action": "replug", "source": "main"})
    await bench.wait_for(lambda: bench.state.get("active_source") == "main", within_s=6)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "method,params,status",
    [
        ("record_start", {}, 400),
        ("record_start", {"session_id": "../../etc"}, 400),
        ("record_start", {"session_id": "x" * 500}, 400),
        ("record_stop", {}, 409),
        ("snapshot", {"source": "ceiling"}, 404),
        ("snapshot", {"source": ["main"]}, 404),
        ("sim", {"action": "explode", "source": "main"}, 400),
        ("sim", {"action": "unplug", "source": "nothing"}, 404),
        ("push_start", {"url": "http://example/"}, 400),
        ("push_stop", {}, 409),
        ("export", {"session_id": "never-recorded"}, 404),
        ("upload", {"session_id": "s1", "url": "ftp://x/"}, 400),
        ("no_such_method", {}, 404),
    ],
)
async def test_bad_requests_get_a_status_and_change_nothing(
    media, method: str, params: dict, status: int
) -> None:
    service, bench = media
    with pytest.raises(CommandError) as err:
        await bench.call(method, params)
    assert err.value.status == status
    assert service.recorder is None and service.push is None
    assert (await bench.call("status"))["running"] is True


@pytest.mark.timeout(60)
async def test_media_control_forwards_commands_and_reports_health(
    tmp_path: Path, bus_broker: Mosquitto
) -> None:
    bus = LocalBus("127.0.0.1", bus_broker.port, name="appliance")
    control = MediaControl(Ctx(bus))  # type: ignore[arg-type]
    await control.start()
    await bus.start()
    try:
        assert control.health()["media"].status == "missing"
        assert "not running" in control.health()["media"].reason
        with pytest.raises(CommandError) as down:
            await control.commands()["camera.snapshot"]({"source": "main"})
        assert down.value.status == 503

        path = write_config(
            tmp_path / "kiosk.toml",
            bus_port=bus_broker.port,
            fleet_port=1,
            data_dir=tmp_path / "data",
            extra=MEDIA,
        )
        service = MediaService(config_mod.load(path))
        await service.start()
        try:
            for _ in range(100):
                health = control.health()
                if all(name in health and health[name].status == "ok" for name in ("camera.main", "doccam")):
                    break
                await asyncio.sleep(0.05)
            health = control.health()
            assert health["camera.main"].status == "ok" and health["doccam"].status == "ok"
            kinds = {i["name"]: i["kind"] for i in control.inventory()}
            assert kinds == {"camera.main": "camera", "camera.backup": "camera", "doccam": "doccam"}
            snap = await control.commands()["camera.snapshot"]({"source": "backup"})
            assert snap["source"] == "backup" and len(snap["sha256"]) == 64
            # The platform gets the picture in the reply, checked, and the device keeps no copy.
            jpeg = base64.b64decode(snap["jpeg_base64"])
            assert snap["inline"] is True and jpeg[:2] == b"\xff\xd8"
            assert hashlib.sha256(jpeg).hexdigest() == snap["sha256"] and "path" not in snap
            assert control.commands()["camera.snapshot"].personal
            still = await control.commands()["doccam.capture"]({})
            if still["inline"]:
                assert hashlib.sha256(base64.b64decode(still["jpeg_base64"])).hexdigest() == still["sha256"]
            else:  # a full-size page may be larger than a reply carries: kept and named
                assert Path(still["path"]).exists()
            with pytest.raises(CommandError) as bad:
                await control.commands()["media.record.export"]({"session": "x"})
            assert bad.value.status == 400
            await bus.call("media", "record_start", {"session_id": "s-ctl"})
            await asyncio.sleep(1.5)
            await bus.call("media", "record_stop", {})
            accepted = await control.commands()["media.record.export"]({"session_id": "s-ctl"})
            assert isinstance(accepted, Accepted) and accepted.body["export"] == "started"
            exported = await accepted.then()  # what the daemon puts in command.completed
            assert "status" not in exported and Path(exported["path"]).stat().st_size == exported["bytes"]
            assert control.telemetry()["active_source"] in ("main", "backup")
        finally:
            await service.stop()
        for _ in range(40):
            if control.health()["media"].status == "missing":
                break
            await asyncio.sleep(0.05)
        assert control.health()["media"].reason == "the media process stopped"
    finally:
        await bus.stop()


@pytest.mark.timeout(60)
async def test_push_start_streams_the_rendition_to_a_loopback_receiver(media, tmp_path: Path) -> None:
    import socket
    import threading

    service, bench = media
    received = tmp_path / "received.ts"
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.settimeout(10)

    def receive() -> None:  # a platform ingest that stores what it gets
        conn, _ = server.accept()
        conn.settimeout(5)
        with conn, open(received, "wb") as f:
            while chunk := conn.recv(65536):
                f.write(chunk)

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    try:
        started = await bench.call("push_start", {"url": f"tcp://127.0.0.1:{port}"})
        assert started["rendition"] == "main"
        with pytest.raises(CommandError) as again:
            await bench.call("push_start", {"url": f"tcp://127.0.0.1:{port}"})
        assert again.value.status == 409
        await bench.wait_for(lambda: bench.state.get("uplink", {}).get("packets_sent", 0) > 45, within_s=10)
        stopped = await bench.call("push_stop")
        assert stopped["stopped"] is True
        await asyncio.to_thread(receiver.join, 10)
    finally:
        server.close()
    probe = await asyncio.to_thread(
        subprocess.run,
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,width,nb_read_frames",
            "-of",
            "json",
            str(received),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream["codec_name"] == "h264" and stream["width"] == 320 and int(stream["nb_read_frames"]) >= 30


@pytest.mark.timeout(60)
async def test_a_stalled_pipeline_is_restarted_within_two_seconds(media) -> None:
    service, bench = media
    await bench.wait_for(lambda: bench.state.get("active_source") == "main")
    loop = asyncio.get_running_loop()
    await bench.call("sim", {"action": "stall", "source": "pipeline", "seconds": 30})
    stalled_at = loop.time()
    await bench.wait_for(
        lambda: any(e["type"] == "media.pipeline.restarted" for e in bench.events), within_s=4
    )
    restarted = next(e for e in bench.events if e["type"] == "media.pipeline.restarted")["data"]
    assert restarted["ok"] is True
    assert loop.time() - stalled_at < 2.5  # includes the event's trip over the bus
    await bench.wait_for(
        lambda: bench.state.get("watchdog_restarts") == 1 and bench.state["pipeline"]["fps_out"] > 20,
        within_s=5,
    )


@pytest.mark.timeout(60)
async def test_kiosk_media_run_serves_and_stops_cleanly_on_sigterm(
    tmp_path: Path, bus_broker: Mosquitto
) -> None:
    import signal
    import sys

    path = write_config(
        tmp_path / "kiosk.toml",
        bus_port=bus_broker.port,
        fleet_port=1,
        data_dir=tmp_path / "data",
        extra=MEDIA,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kiosk_cli.main",
        "--config",
        str(path),
        "media",
        "run",
        cwd=Path(__file__).resolve().parent.parent,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    bench = Bench(bus_broker.port)
    await bench.bus.start()
    try:
        await bench.wait_for(lambda: bench.state.get("active_source") == "main", within_s=10)
        status = await bench.call("status")
        assert status["pid"] == proc.pid and status["sources"]["backup"]["health"]["status"] == "ok"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        await bench.wait_for(lambda: bench.state.get("running") is False)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await bench.bus.stop()


def test_platform_command_params_are_checked_before_anything_is_forwarded() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from pydantic import ValidationError

    from appliance.media_control import FORWARDED, PARAMS
    from kiosk_core.commands import body_of

    values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=1100),
        st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    )

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from(sorted(FORWARDED)),
        st.dictionaries(
            st.sampled_from(["source", "url", "session_id", "session", "x", ""]), values, max_size=4
        ),
    )
    def run(command: str, params: dict) -> None:
        try:
            out = body_of(PARAMS[command][1].model_validate(params))
        except ValidationError:
            return
        assert out == params and all(isinstance(v, str) and 0 < len(v) <= 1000 for v in out.values())

    run()


async def test_hostile_rpc_payloads_get_400_and_the_media_process_goes_on(
    media, bus_broker: Mosquitto
) -> None:
    """Nested, truncated, non-UTF-8, NaN and oversized requests on every media RPC method: each is
    answered 400, and the process still records and answers afterwards."""
    from test_hostile_payloads import HOSTILE, publish_all

    service, bench = media
    replies: list[dict] = []
    bench.bus.subscribe("test/media-replies", lambda m: replies.append(json.loads(m.payload)))
    await bench.bus.wait_connected(5)
    await asyncio.sleep(0.2)  # the subscription is in place
    methods = ["status", "record_start", "record_stop", "snapshot", "doccam_capture", "push_start"]
    methods += ["push_stop", "export", "upload", "sim"]
    bodies = [b for b in HOSTILE if b]  # an empty body means "no parameters"
    for method in methods:
        await publish_all(
            bus_broker.port, f"kiosk/local/rpc/media/{method}", bodies, reply_to="test/media-replies"
        )
    await bench.wait_for(lambda: len(replies) >= len(methods) * len(bodies), within_s=15)
    assert {r["status"] for r in replies} == {400}, [r for r in replies if r["status"] != 400][:3]
    assert service.recorder is None and service.push is None
    assert (await bench.call("status"))["running"] is True
