"""The supervised link against real brokers and a broker that misbehaves on a real socket.

"A broker that accepts the connection but never answers SUBSCRIBE must not end the link; a transient
disk error in the fleet's outbox drain must not leave events stuck behind a link that looks healthy;
a task set logs what fails."
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from conftest import write_config
from fleet_helpers import ROOT, Platform

from appliance import config as kconfig
from appliance.fleet import FleetLink
from appliance.outbox import Outbox
from kiosk_core.errors import CommandError, StorageError
from kiosk_core.link import Backoff, SupervisedLink
from kiosk_core.mqtt import MqttConnection
from kiosk_core.requester import Requester
from kiosk_core.tasks import TaskSet
from sim.mosquitto import Mosquitto

CONNACK = bytes([0x20, 0x03, 0x00, 0x00, 0x00])  # MQTT 5: no session, success, no properties


class SilentSubscribeBroker:
    """Accepts CONNECT with a CONNACK, then never answers anything (no SUBACK, no PINGRESP)."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        await reader.read(1)  # the CONNECT's first byte is enough to answer
        writer.write(CONNACK)
        await writer.drain()
        while await reader.read(4096):
            pass

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()


async def test_a_broker_that_never_acknowledges_subscribe_does_not_end_the_link():
    stub = SilentSubscribeBroker()
    port = await stub.start()
    link = SupervisedLink(
        "stubborn",
        lambda: MqttConnection(host="127.0.0.1", port=port, client_id="t", name="stubborn"),
        handler=lambda msg: None,
        subscriptions=lambda: [("a/b", 1)],
        backoff=Backoff(0.01, 0.05),
        connect_timeout_s=0.3,
    )
    link.start()
    try:
        for _ in range(100):
            if stub.connections >= 3:
                break
            await asyncio.sleep(0.05)
        assert stub.connections >= 3, "the link keeps retrying after a SUBACK timeout"
        assert link.alive and not link.connected
        assert "SUBACK" in link.last_error
    finally:
        await link.stop()
        await stub.stop()
    assert not link.alive


class FlakyOutbox:
    """The real outbox, whose drain query fails once (e.g. SQLITE_BUSY or EIO on a worn SD card)."""

    def __init__(self, box: Outbox) -> None:
        self._box = box
        self.failures_left = 1

    def __getattr__(self, name: str):
        return getattr(self._box, name)

    async def batch_after(self, seq: int, limit: int):
        if self.failures_left and self._box.depth:
            self.failures_left -= 1
            raise StorageError("disk I/O error (injected)")
        return await self._box.batch_after(seq, limit)


@pytest.mark.timeout(60)
async def test_a_transient_error_in_the_drain_does_not_leave_events_stuck(
    tmp_path: Path, central_broker: Mosquitto, caplog: pytest.LogCaptureFixture
):
    cfg = kconfig.load(
        write_config(
            tmp_path / "kiosk.toml", bus_port=1, fleet_port=central_broker.port, data_dir=tmp_path / "d"
        )
    )
    box = await Outbox.open(tmp_path / "d" / "outbox.sqlite", quota_bytes=10 << 20)
    flaky = FlakyOutbox(box)
    platform = await Platform(central_broker.port).start()

    async def nothing(*_args) -> None:
        return None

    def birth() -> dict:  # the smallest birth the contract allows (the platform validates it)
        return {
            "epoch": box.epoch,
            "boot_id": "b",
            "firmware": "test",
            "device": {"id": cfg.device.id, "name": "", "role": "main", "region": list(cfg.device.region)},
            "drivers": [],
            "capabilities": [],
            "commands": [],
            "config_version": 0,
            "time_synced": False,
            "telemetry_interval_s": 30,
            "ts": 0.0,
        }

    fleet = FleetLink(cfg, flaky, boot_id="b", birth=birth, on_command=nothing, on_desired=nothing)  # type: ignore[arg-type]
    try:
        for i in range(20):
            await box.append("test.drain", {"n": i})
        with caplog.at_level(logging.ERROR, logger="kiosk.fleet"):
            fleet.start()
            await platform.wait_for(
                lambda: len(platform.unique_events("test.drain")) == 20, timeout_s=20, what="all 20 events"
            )
        assert flaky.failures_left == 0, "the fault was injected"
        assert any("fleet-drain" in r.getMessage() for r in caplog.records), "the failure is logged"
        assert [e["data"]["n"] for e in platform.unique_events("test.drain")] == list(range(20))
        assert fleet.alive and fleet.connects >= 2
    finally:
        await fleet.stop()
        await box.close()
        await platform.stop()


async def test_requests_fail_fast_when_the_link_drops_and_work_again_after(central_broker: Mosquitto):
    requester = Requester("test/replies/me")
    link = SupervisedLink(
        "req",
        lambda: MqttConnection(host="127.0.0.1", port=central_broker.port, client_id="req", name="req"),
        requester=requester,
        backoff=Backoff(0.05, 0.2),
    )
    link.start()
    try:
        assert await link.wait_connected(5)
        central_broker.kill()
        with pytest.raises(CommandError) as err:
            await requester.request(link, f"{ROOT}/cmd/ping", b"{}", timeout_s=0.5, what="ping")
        assert err.value.status in (503, 504)
        central_broker.start()
        assert await link.wait_connected(10)
        with pytest.raises(CommandError) as err:  # nobody answers: the request went out, no reply came
            await requester.request(link, f"{ROOT}/cmd/ping", b"{}", timeout_s=0.3, what="ping")
        assert err.value.status == 504 and requester.pending == 0
    finally:
        await link.stop()


async def test_a_task_set_logs_and_counts_failures_and_closes_everything(caplog: pytest.LogCaptureFixture):
    errors: list[BaseException] = []
    tasks = TaskSet("unit", on_error=errors.append)

    async def fail() -> None:
        raise ValueError("broken")

    async def forever() -> None:
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR):
        tasks.spawn(fail(), name="failing")
        long = tasks.spawn(forever(), name="forever")
        await asyncio.sleep(0.01)
    assert tasks.failures == 1 and isinstance(errors[0], ValueError)
    assert any("failing" in r.getMessage() and r.exc_info for r in caplog.records)
    await tasks.close()
    assert long.cancelled() and len(tasks) == 0
    await tasks.close()  # idempotent
