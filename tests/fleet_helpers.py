"""Test-side stand-ins for the central platform and for the appliance process.

``Platform`` speaks only the fleet contract (docs/mqtt.md) over a real MQTT 5 connection;
``ApplianceProcess`` runs ``kiosk run`` as a real child process that tests can SIGTERM or SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fleet_schema import DEVICE_CHANNELS, SCHEMA

from kiosk_core.localbus import LocalBus
from kiosk_core.mqtt import Message, MqttConnection, publish_properties
from sim.mosquitto import Mosquitto

ROOT = "kiosk/v1/33/3308/330803/330803100/330803100201/kiosk-0001"


class Platform:
    """The central platform's side of the fleet contract.

    With ``session_expiry_s`` the platform holds a persistent session (clean_start=False) under
    ``client_id``: while it is away, and after a restart of a broker that saved the session
    (``Mosquitto.save()``), the broker queues for it whatever the device sends, so a device that
    reconnects before the platform does loses nothing to a broker with no subscriber yet.
    ``session_present`` says whether the broker still had the session at ``start()``.

    Everything the device sends (``state``, ``birth``, ``telemetry``, ``event``, ``config/reported``,
    replies) is validated against docs/schema/fleet.schema.json, and so is every request that was
    answered 200; ``stop()`` fails the test when one did not fit (``schema_errors``).
    """

    def __init__(
        self, port: int, root: str = ROOT, *, client_id: str | None = None, session_expiry_s: int = 0
    ) -> None:
        self.port, self.root = port, root
        self.client_id = client_id or f"platform-{uuid.uuid4().hex[:6]}"
        self.session_expiry_s = session_expiry_s
        self.session_present = False
        self.messages: list[tuple[str, dict[str, Any] | None, Message]] = []
        self._replies: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        self._conn: MqttConnection | None = None
        self._task: asyncio.Task[None] | None = None
        # One reply topic per client id: a resumed session keeps receiving its replies there.
        self.reply_topic = f"platform/replies/{self.client_id}"
        self._changed = asyncio.Event()
        self.schema_errors: list[str] = []
        # What this platform published itself (a forged stale state, say) is not the device's to answer for.
        self._own: set[tuple[str, bytes]] = set()

    def check(self, channel: str, payload: bytes) -> None:
        """Validate ``payload`` against the schema of ``channel``; a misfit fails the test at ``stop()``."""
        for problem in SCHEMA.problems(channel, payload):
            self.schema_errors.append(f"{problem} in {bytes(payload[:300])!r}")

    async def start(self) -> Platform:
        self._conn = MqttConnection(
            host="127.0.0.1",
            port=self.port,
            client_id=self.client_id,
            clean_start=not self.session_expiry_s,
            session_expiry_s=self.session_expiry_s,
            name="platform",
        )
        self.session_present = await self._conn.connect()
        await self._conn.subscribe((f"{self.root}/#", 1), (self.reply_topic, 1))
        self._task = asyncio.create_task(self._collect())
        return self

    def again(self) -> Platform:
        """A new platform under the same client id and session settings (to resume its session)."""
        return Platform(
            self.port, self.root, client_id=self.client_id, session_expiry_s=self.session_expiry_s
        )

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._conn:
            await self._conn.close()
        errors, self.schema_errors = self.schema_errors, []
        assert not errors, "messages off docs/schema/fleet.schema.json:\n" + "\n".join(errors[:20])

    async def _collect(self) -> None:
        assert self._conn is not None
        async for msg in self._conn.messages():
            try:
                body = json.loads(msg.payload) if msg.payload else None
            except (ValueError, RecursionError):  # our own hostile commands come back too
                body = None
            if msg.topic == self.reply_topic:
                self.check(
                    SCHEMA.reply_channel(body.get("name") if isinstance(body, dict) else None), msg.payload
                )
                fut = self._replies.pop(msg.correlation_data or b"", None)
                if fut and not fut.done():
                    fut.set_result(body)
                continue
            channel = msg.topic[len(self.root) + 1 :]
            if channel in DEVICE_CHANNELS and msg.payload and (channel, msg.payload) not in self._own:
                self.check(channel, msg.payload)
            self.messages.append((channel, body, msg))
            self._changed.set()

    def of(self, channel: str) -> list[dict[str, Any]]:
        return [b for c, b, _ in self.messages if c == channel and b is not None]

    def events(self, type_prefix: str = "") -> list[dict[str, Any]]:
        return [e for e in self.of("event") if e["type"].startswith(type_prefix)]

    def unique_events(self, type_prefix: str = "") -> list[dict[str, Any]]:
        """What a platform keeps after de-duplicating by seq (the contract's consumer rule)."""
        seen: dict[int, dict[str, Any]] = {}
        for e in self.events(type_prefix):
            seen.setdefault(e["seq"], e)
        return [seen[s] for s in sorted(seen)]

    async def wait_for(
        self, predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition"
    ) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), 0.1)
            except TimeoutError:
                pass

    async def command(
        self,
        name: str,
        body: dict[str, Any] | bytes | None = None,
        *,
        timeout_s: float = 10.0,
        correlation: bytes | None = None,
        expiry_s: int | None = None,
        response_topic: str | None = "default",
    ) -> dict[str, Any]:
        corr = correlation or uuid.uuid4().bytes
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[corr] = fut
        rt = self.reply_topic if response_topic == "default" else response_topic
        await self.request(name, body, response_topic=rt, correlation=corr, expiry_s=expiry_s)
        reply = await asyncio.wait_for(fut, timeout_s)
        # Tests send hostile requests on purpose: only a request the device ran and answered 200 must fit.
        if isinstance(reply, dict) and reply.get("status") == 200 and f"cmd/{name}" in SCHEMA.channels:
            self.check(f"cmd/{name}", body if isinstance(body, bytes) else json.dumps(body or {}).encode())
        return reply

    async def request(
        self,
        name: str,
        body: dict[str, Any] | bytes | None = None,
        *,
        response_topic: str | None,
        correlation: bytes,
        expiry_s: int | None = None,
    ) -> None:
        """Publish a request (PUBACK awaited) without waiting for any reply."""
        assert self._conn is not None
        payload = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
        await self._conn.publish(
            f"{self.root}/cmd/{name}",
            payload,
            qos=1,
            properties=publish_properties(
                response_topic=response_topic, correlation_data=correlation, expiry_s=expiry_s
            ),
        )

    async def publish(self, channel: str, obj: Any, *, retain: bool = False) -> None:
        assert self._conn is not None
        payload = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self._own.add((channel, payload))
        await self._conn.publish(f"{self.root}/{channel}", payload, qos=1, retain=retain)


async def durable_platform(broker: Mosquitto, client_id: str = "platform-durable") -> Platform:
    """A platform subscribed with a persistent session that ``broker`` has saved to its database.

    The session survives ``broker.kill()`` and ``broker.start()``: from the moment the restarted broker
    listens, what the device sends is queued for the platform, even if the device reconnects first.
    Resume it with ``platform.again().start()`` (and check ``session_present``).
    """
    p = await Platform(broker.port, client_id=client_id, session_expiry_s=3600).start()
    await asyncio.to_thread(broker.save)
    return p


async def platform_away(broker: Mosquitto) -> Platform:
    """A durable platform that subscribed (its session saved by ``broker``) and left, then the
    central broker killed: the device works offline; ``away.again().start()`` after
    ``broker.start()`` gets everything sent meanwhile."""
    away = await durable_platform(broker)
    await away.stop()
    broker.kill()
    return away


class ApplianceProcess:
    """``kiosk run`` as a child process, logs in ``log_path``."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.config, self.log_path = config, log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ApplianceProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kiosk_cli.main", "--config", str(self.config), "run"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )
        log.close()
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def produce(port: int, events: list[dict[str, Any]], client_id: str = "producer") -> None:
    """Publish local events with QoS 1 and wait for every PUBACK from the local broker."""
    conn = MqttConnection(host="127.0.0.1", port=port, client_id=client_id, name="producer")
    await conn.connect()
    try:
        futs = [conn.publish("kiosk/local/event", json.dumps(e).encode(), qos=1) for e in events]
        await asyncio.gather(*futs)
    finally:
        await conn.close()


async def produce_stored(port: int, events: list[dict[str, Any]], name: str = "producer") -> None:
    """Hand local events to the appliance and wait until it answers that each one is stored
    (``LocalBus.publish_event``), up to 256 at a time."""
    bus = LocalBus("127.0.0.1", port, name=name)
    await bus.start()
    gate = asyncio.Semaphore(256)

    async def one(e: dict[str, Any]) -> None:
        async with gate:
            await bus.publish_event(e["type"], e.get("data", {}), id=e.get("id"), timeout_s=60)

    try:
        await asyncio.gather(*(one(e) for e in events))
    finally:
        await bus.stop()


async def wait_appliance_ready(
    port: int, timeout_s: float = 15.0, boot_changed_from: str | None = None
) -> dict[str, Any]:
    """Wait for the retained ``kiosk/local/state/appliance`` to say ``ready`` (events are taken durably)."""
    conn = MqttConnection(
        host="127.0.0.1", port=port, client_id=f"ready-{uuid.uuid4().hex[:6]}", name="ready"
    )
    await conn.connect()
    try:
        await conn.subscribe(("kiosk/local/state/appliance", 1))
        async with asyncio.timeout(timeout_s):
            async for msg in conn.messages():
                state = json.loads(msg.payload) if msg.payload else {}
                if state.get("state") == "ready":
                    return state
    finally:
        await conn.close()
    raise AssertionError("the appliance never said ready")
