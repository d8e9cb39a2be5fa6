"""Hostile payloads on every topic the appliance and the media process listen to, through real brokers.

A technician's script: "flood the kiosk's local bus and its command topics with deeply nested JSON
(2 KB of ``[[[[…]]]]`` and more), truncated JSON, invalid UTF-8, NaN and oversized payloads; every
request is answered 400, nothing crashes, and afterwards a real event still reaches the platform, a
``ping`` still answers 200, and the watchdog's loops are all alive."
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from fleet_helpers import ApplianceProcess, Platform, produce, wait_appliance_ready

from kiosk_core.localbus import EVENT_TOPIC, LocalBus
from kiosk_core.mqtt import MqttConnection, publish_properties
from kiosk_core.payload import MAX_DEPTH, decode_json_object
from sim.mosquitto import Mosquitto

NESTED_LIST = b"[" * 1100 + b"]" * 1100  # ~2 KB: enough for RecursionError in json.loads
NESTED_OBJECT = b'{"a":' * 3000 + b"1" + b"}" * 3000
JUST_TOO_DEEP = b'{"type":"x.y","data":' + b'{"a":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH + b"}"
HOSTILE = [
    NESTED_LIST,
    NESTED_OBJECT,
    JUST_TOO_DEEP,
    b'{"type": "test.x", "da',  # truncated
    b'\xff\xfe{"type": "test.x"}',  # not UTF-8
    b'{"type": "test.x", "data": {"v": NaN}}',
    b'{"type": "test.x", "data": {"v": 1e400}}',  # valid syntax, but no double holds it: Infinity
    b'{"type": "test.x", "data": {"v": "' + b"x" * 300_000 + b'"}}',  # oversized
    b"[]",
    b"",
]


def test_the_decoder_turns_every_hostile_payload_into_a_value_error():
    for payload in HOSTILE:
        with pytest.raises(ValueError):
            decode_json_object(payload, "event")
    with pytest.raises(ValueError, match="nests deeper"):
        decode_json_object(NESTED_LIST, "event")
    ok = b'{"a":' * (MAX_DEPTH - 1) + b"1" + b"}" * (MAX_DEPTH - 1)
    assert decode_json_object(ok)["a"]


async def publish_all(port: int, topic: str, payloads: list[bytes], *, reply_to: str | None = None) -> None:
    conn = MqttConnection(host="127.0.0.1", port=port, client_id=f"hostile-{uuid.uuid4().hex[:6]}")
    await conn.connect()
    try:
        for p in payloads:
            props = publish_properties(response_topic=reply_to, correlation_data=uuid.uuid4().bytes)
            await conn.publish(topic, p, qos=1, properties=props if reply_to else None)
    finally:
        await conn.close()


@pytest.mark.timeout(90)
async def test_hostile_payloads_on_every_appliance_topic_change_nothing(
    tmp_path: Path, kiosk_config: Path, bus_broker: Mosquitto, platform: Platform
):
    app = ApplianceProcess(kiosk_config, tmp_path / "a.log").start()
    probe = LocalBus("127.0.0.1", bus_broker.port, name="probe")
    replies: list[dict] = []
    probe.subscribe("test/replies", lambda m: replies.append(json.loads(m.payload)))
    try:
        await wait_appliance_ready(bus_broker.port)
        await platform.wait_for(lambda: platform.of("state"), what="online")
        await probe.start()

        # More poison events than the intake's window of unacknowledged messages (256): before the
        # fix, intake stopped for good after ~256 of them, and a restart did not help.
        await publish_all(bus_broker.port, EVENT_TOPIC, [NESTED_LIST] * 300 + HOSTILE)
        for topic in ("kiosk/local/state/media", "kiosk/local/intent/select_item", "kiosk/local/intent/x"):
            await publish_all(bus_broker.port, topic, HOSTILE)
        rpc = [p for p in HOSTILE if p]  # an empty RPC body means "no parameters"
        await publish_all(bus_broker.port, "kiosk/local/rpc/sim/status", rpc, reply_to="test/replies")

        # Command bodies: each one gets a 400 naming the problem.
        for body in HOSTILE[:-1]:  # an empty body is a valid command without parameters
            reply = await platform.command("ping", body)
            assert reply["status"] == 400, (body[:40], reply)
        # The local-bus RPCs got a 400 each too.
        await platform.wait_for(lambda: len(replies) >= len(rpc), timeout_s=15, what="RPC replies")
        assert {r["status"] for r in replies} == {400}, replies

        # Everything still works: a real event reaches the platform, a ping answers, health is fine.
        await produce(bus_broker.port, [{"type": "test.after_poison", "data": {"n": 1}, "id": "after-1"}])
        await platform.wait_for(lambda: platform.events("test.after_poison"), timeout_s=15, what="event")
        assert (await platform.command("ping", {}))["status"] == 200
        rejected = await platform.wait_for(
            lambda: [e for e in platform.events("bus.event_rejected")], timeout_s=15, what="rejections"
        )
        assert rejected, "poison events are reported, not silently dropped"
        assert app.alive
        log = app.log()
        assert "RecursionError" not in log and "Traceback" not in log, log[-3000:]
    finally:
        await probe.stop()
        app.terminate()


@pytest.mark.timeout(60)
async def test_an_appliance_restart_after_poison_events_takes_new_events(
    tmp_path: Path, kiosk_config: Path, bus_broker: Mosquitto, platform: Platform
):
    """The broker redelivers what was not acknowledged: poison must have been acknowledged."""
    app = ApplianceProcess(kiosk_config, tmp_path / "a.log").start()
    try:
        await wait_appliance_ready(bus_broker.port)
        await publish_all(bus_broker.port, EVENT_TOPIC, [NESTED_OBJECT] * 260)
        await produce(bus_broker.port, [{"type": "test.before_restart", "data": {}, "id": "r-1"}])
        await platform.wait_for(lambda: platform.events("test.before_restart"), timeout_s=15, what="event")
        assert app.terminate() == 0
        app = ApplianceProcess(kiosk_config, tmp_path / "a.log").start()
        await wait_appliance_ready(bus_broker.port)
        await produce(bus_broker.port, [{"type": "test.after_restart", "data": {}, "id": "r-2"}])
        await platform.wait_for(lambda: platform.events("test.after_restart"), timeout_s=15, what="event")
    finally:
        app.terminate()


async def test_a_handler_that_raises_is_counted_and_the_bus_goes_on(bus_broker: Mosquitto):
    bus = LocalBus("127.0.0.1", bus_broker.port, name="fragile")
    seen: list[bytes] = []

    def handler(msg) -> None:
        if msg.payload == b"boom":
            raise RecursionError("a handler bug")
        seen.append(msg.payload)

    bus.subscribe("test/t", handler)
    await bus.start()
    try:
        await publish_all(bus_broker.port, "test/t", [b"boom"] * 20 + [b"ok"])
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert seen == [b"ok"]
        assert bus.link.failed == 20 and bus.alive
    finally:
        await bus.stop()


async def test_a_burst_is_handled_by_a_fixed_number_of_tasks(bus_broker: Mosquitto):
    """No task per message: 2,000 messages to a slow handler never raise the task count above the
    link's workers, and every one is handled."""
    bus = LocalBus("127.0.0.1", bus_broker.port, name="burst")
    handled: list[bytes] = []

    async def slow(msg) -> None:
        await asyncio.sleep(0.002)
        handled.append(msg.payload)

    bus.subscribe("test/burst", slow)
    await bus.start()
    try:
        baseline = len(asyncio.all_tasks())
        peak = baseline
        sender = asyncio.create_task(publish_all(bus_broker.port, "test/burst", [b"{}"] * 2000))
        while len(handled) < 2000:
            peak = max(peak, len(asyncio.all_tasks()))
            await asyncio.sleep(0.005)
        await sender
        assert peak - baseline <= 3, f"tasks grew from {baseline} to {peak} during the burst"
        assert len(handled) == 2000 and bus.link.failed == 0
    finally:
        await bus.stop()
