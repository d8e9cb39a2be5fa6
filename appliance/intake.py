"""Events from producers on the device (UI, media, tools), taken from the local bus durably.

The appliance holds a persistent MQTT session on the local broker (clean start off, a week of session
expiry) and acknowledges each ``kiosk/local/event`` message only after the outbox committed it. So an
event the local broker accepted is never lost: if the appliance dies before the commit, the broker
still holds it and redelivers after the restart; the producer's ``id`` makes the redelivery a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from kiosk_core.backoff import full_jitter
from kiosk_core.errors import LinkError, StorageError
from kiosk_core.localbus import EVENT_TOPIC, decode_json_object
from kiosk_core.mqtt import Message, MqttConnection

log = logging.getLogger("kiosk.intake")

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+){0,7}$")
MAX_TYPE = 64
MAX_ID = 128
SESSION_EXPIRY_S = 7 * 86400
# Unacknowledged events the local broker may have in flight towards us: bounds the appliance's memory
# during a burst (each is a task until its group commit) while keeping commits large enough.
RECEIVE_MAXIMUM = 256

# record(type, data, producer_id) -> seq (None when the id was stored before)
Record = Callable[[str, dict[str, Any], str | None], Awaitable[int | None]]


class RejectedEvent(ValueError):
    pass


def parse_local_event(payload: bytes) -> tuple[str, dict[str, Any], str | None]:
    """Validate a producer's event; raises ``RejectedEvent`` naming the problem."""
    try:
        obj = decode_json_object(payload, "event")
    except ValueError as exc:
        raise RejectedEvent(str(exc)) from None
    unknown = set(obj) - {"type", "data", "id", "producer"}
    if unknown:
        raise RejectedEvent(f"unknown field(s) {sorted(unknown)[:5]}; allowed: type, data, id, producer")
    etype = obj.get("type")
    if not isinstance(etype, str) or len(etype) > MAX_TYPE or not EVENT_TYPE.match(etype):
        raise RejectedEvent(
            f"type must be dotted lower-case words like 'media.failover' (<= {MAX_TYPE} chars), "
            f"got {str(etype)[:80]!r}"
        )
    data = obj.get("data", {})
    if not isinstance(data, dict):
        raise RejectedEvent(f"data must be a JSON object, got {type(data).__name__}")
    pid = None
    if "id" in obj:
        eid = obj["id"]
        if not isinstance(eid, str) or not 0 < len(eid) <= MAX_ID:
            raise RejectedEvent(f"id must be a string of 1-{MAX_ID} characters")
        producer = obj.get("producer", "")
        if not isinstance(producer, str) or len(producer) > 64:
            raise RejectedEvent("producer must be a string of at most 64 characters")
        pid = f"{producer}/{eid}"
    return etype, data, pid


class EventIntake:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        record: Record,
        reject: Callable[[str, int], Awaitable[None]],
    ) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self._record = record
        self._reject = reject
        self._task: asyncio.Task[None] | None = None
        self._conn: MqttConnection | None = None
        self.accepted = 0
        self.duplicates = 0
        self.rejected = 0
        self.subscribed = asyncio.Event()

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self._run(), name="event-intake")
        return self._task

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            await self._conn.close(timeout_s=1)

    async def _run(self) -> None:
        attempt = 0
        while True:
            conn = MqttConnection(
                host=self.host,
                port=self.port,
                client_id=self.client_id,
                keepalive_s=15,
                clean_start=False,
                session_expiry_s=SESSION_EXPIRY_S,
                manual_ack=True,
                receive_maximum=RECEIVE_MAXIMUM,
                name="intake",
            )
            try:
                await conn.connect(timeout_s=5)
                self._conn = conn
                await conn.subscribe((EVENT_TOPIC, 1))
                self.subscribed.set()
                attempt = 0
                tasks: set[asyncio.Task[None]] = set()
                async for msg in conn.messages():
                    # One task per message: they join one group commit, and each is acked after it.
                    t = asyncio.create_task(self._take(conn, msg))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
            except LinkError as exc:
                if attempt in (0, 5) or attempt % 30 == 0:
                    log.warning("intake: local bus %s:%d unavailable: %s", self.host, self.port, exc)
            finally:
                self.subscribed.clear()
                self._conn = None
                with contextlib.suppress(Exception):
                    await conn.close(timeout_s=0.5)
            attempt += 1
            await asyncio.sleep(full_jitter(attempt, 0.05, 2.0))

    async def _take(self, conn: MqttConnection, msg: Message) -> None:
        try:
            etype, data, pid = parse_local_event(msg.payload)
        except RejectedEvent as exc:
            self.rejected += 1
            log.warning("intake: rejected a local event (%d bytes): %s", len(msg.payload), exc)
            try:
                await self._reject(str(exc), len(msg.payload))
            except StorageError:
                await self._drop(conn, "cannot record the rejection")
                return
            msg.ack()
            return
        try:
            seq = await self._record(etype, data, pid)
        except StorageError as exc:
            # Not acknowledged: the broker keeps it. Reconnect later so it is redelivered.
            log.error("intake: cannot store event %s: %s; will retry", etype, exc)
            await self._drop(conn, str(exc))
            return
        if seq is None:
            self.duplicates += 1
        else:
            self.accepted += 1
        msg.ack()

    async def _drop(self, conn: MqttConnection, why: str) -> None:
        await asyncio.sleep(1.0)
        if conn.connected:
            log.warning("intake: reconnecting to get unacknowledged events redelivered (%s)", why)
            await conn.close(timeout_s=0.5)
