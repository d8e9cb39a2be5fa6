"""Events from producers on the device (UI, media, tools), taken from the local bus durably.

The appliance holds a persistent MQTT session on the local broker (clean start off, a week of session
expiry) and acknowledges each ``kiosk/local/event`` message only after the outbox committed it: if the
appliance dies before the commit, the broker still holds the event and redelivers it after the
restart; the producer's ``id`` makes the redelivery a no-op.

The local broker's PUBACK to the producer is not the end of the story: mosquitto writes its
persistence file only every ``autosave_interval``, so a power cut loses what it had acknowledged but
not yet delivered. The end-to-end acknowledgement is the **stored reply**: an event published with an
MQTT 5 Response Topic (under ``kiosk/local/reply/``) and Correlation Data is answered on that topic
after the commit (``{"status": 200, "seq": N}``, or ``{"status": 200, "duplicate": true}`` when its id
was stored before), with 400 when it is unusable and 503 while storage is failing. The reply is sent
before the PUBACK to the broker, so an appliance that dies between the two gets the event again and
answers the redelivery. ``LocalBus.publish_event`` waits for that reply and re-publishes with the
same id until it comes.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from kiosk_core.errors import LinkError, StorageError
from kiosk_core.link import SupervisedLink
from kiosk_core.localbus import BACKOFF, EVENT_TOPIC, REPLY_PREFIX
from kiosk_core.mqtt import Message, MqttConnection, ignore_outcome, publish_properties
from kiosk_core.payload import decode_json_object, dumps

log = logging.getLogger("kiosk.intake")

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+){0,7}$")
MAX_TYPE = 64
MAX_ID = 128
SESSION_EXPIRY_S = 7 * 86400
# Unacknowledged events the local broker may have in flight towards us: bounds the appliance's memory
# during a burst while keeping group commits large. As many workers take them, so a whole window
# joins one group commit; the broker never has more outstanding, so the link's queue never fills.
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
    """Takes ``kiosk/local/event`` durably: a ``SupervisedLink`` with a persistent session and manual
    acknowledgements, each message acknowledged only after the outbox committed it."""

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
        self.accepted = 0
        self.duplicates = 0
        self.rejected = 0
        self.subscribed = asyncio.Event()
        self.link = SupervisedLink(
            "intake",
            self._new_connection,
            handler=self._take,
            subscriptions=lambda: [(EVENT_TOPIC, 1)],
            setup=self._subscribed,
            backoff=BACKOFF,
            workers=RECEIVE_MAXIMUM,
            queue_size=RECEIVE_MAXIMUM,
            log=log,
        )

    def start(self) -> asyncio.Task[None]:
        return self.link.start()

    @property
    def alive(self) -> bool:
        return self.link.alive

    @property
    def connected(self) -> bool:
        return self.link.connected

    async def stop(self) -> None:
        await self.link.stop(timeout_s=1.0)

    def _new_connection(self) -> MqttConnection:
        self.subscribed.clear()
        return MqttConnection(
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

    async def _subscribed(self, conn: MqttConnection, _tasks: object) -> None:
        self.subscribed.set()

    async def _take(self, msg: Message) -> None:
        try:
            etype, data, pid = parse_local_event(msg.payload)
        except RejectedEvent as exc:
            await self._refuse(msg, str(exc), 400)
            return
        try:
            seq = await self._record(etype, data, pid)
        except StorageError as exc:
            # Not acknowledged: the broker keeps it. Reconnect later so it is redelivered. The
            # producer hears why its event is not stored yet and goes on waiting.
            log.error("intake: cannot store event %s: %s; will retry", etype, exc)
            self._answer(msg, {"status": 503, "error": f"not stored yet: {exc}"})
            await self._redeliver(msg, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a poison message must not stall the intake
            # Redelivering an event that crashes the recorder would block the whole window of
            # unacknowledged events for ever: it is rejected instead, and the rejection is recorded.
            log.error("intake: recording event %s failed; rejecting it", etype, exc_info=exc)
            await self._refuse(msg, f"could not be recorded: {type(exc).__name__}", 500)
            return
        if seq is None:
            self.duplicates += 1
            self._answer(msg, {"status": 200, "duplicate": True})
        else:
            self.accepted += 1
            self._answer(msg, {"status": 200, "seq": seq})
        msg.ack()

    async def _refuse(self, msg: Message, reason: str, status: int) -> None:
        """Record the refusal (``bus.event_rejected``), tell the producer, acknowledge the message."""
        self.rejected += 1
        log.warning("intake: rejected a local event (%d bytes): %s", len(msg.payload), reason)
        try:
            await self._reject(reason, len(msg.payload))
        except StorageError:
            self._answer(msg, {"status": 503, "error": "not stored yet: cannot record the rejection"})
            await self._redeliver(msg, "cannot record the rejection")
            return
        self._answer(msg, {"status": status, "error": reason[:300]})
        msg.ack()

    def _answer(self, msg: Message, reply: dict[str, object]) -> None:
        """Send the stored reply, if the producer asked for one on a local reply topic."""
        topic = msg.response_topic
        if not topic or not topic.startswith(REPLY_PREFIX + "/") or "+" in topic or "#" in topic:
            return
        try:
            self.link.publish(
                topic,
                dumps(reply),
                qos=1,
                properties=publish_properties(correlation_data=msg.correlation_data),
            ).add_done_callback(ignore_outcome)
        except LinkError:
            pass  # the connection is gone; the event is redelivered and answered then

    async def _redeliver(self, msg: Message, why: str) -> None:
        """Leave ``msg`` unacknowledged and, after a pause, reconnect (once per connection) so the
        broker redelivers everything unacknowledged."""
        await asyncio.sleep(1.0)
        self.link.drop(f"to get unacknowledged events redelivered ({why})", session=msg.session)
