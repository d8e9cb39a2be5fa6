"""The device's local bus (its own mosquitto on loopback): topics and a reconnecting client.

Topics (documented in docs/local-bus.md):

- ``kiosk/local/event``                 producers -> appliance, QoS 1, ``{"type", "data", "id"?}``
- ``kiosk/local/feed/{type}``           appliance -> anyone, every recorded event (QoS 1, not retained)
- ``kiosk/local/state/{name}``          retained state for the UI and tools (JSON)
- ``kiosk/local/intent/{name}``         UI -> appliance, QoS 1 JSON
- ``kiosk/local/rpc/{service}/{method}`` request/response between processes (MQTT 5 Response Topic and
  Correlation Data; the reply is ``{"status": 200|4xx|5xx, ...}`` like fleet commands)

Every process on the device uses ``LocalBus``; the appliance additionally consumes
``kiosk/local/event`` with manual acknowledgements (``appliance.intake``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kiosk_core.errors import CommandError, LinkError
from kiosk_core.link import Backoff, SupervisedLink
from kiosk_core.mqtt import Message, MqttConnection, Will, ignore_outcome, publish_properties
from kiosk_core.payload import MAX_PAYLOAD, decode_json_object, dumps
from kiosk_core.requester import Requester
from kiosk_core.status import check_reply, error_reply
from kiosk_core.tasks import TaskSet

__all__ = ["MAX_PAYLOAD", "LocalBus", "StoredEvent", "decode_json_object", "dumps", "topic_matches"]

log = logging.getLogger("kiosk.localbus")

PREFIX = "kiosk/local"
EVENT_TOPIC = f"{PREFIX}/event"
FEED_PREFIX = f"{PREFIX}/feed"
STATE_PREFIX = f"{PREFIX}/state"
INTENT_PREFIX = f"{PREFIX}/intent"
RPC_PREFIX = f"{PREFIX}/rpc"
REPLY_PREFIX = f"{PREFIX}/reply"

# publish_event: how long to wait for the appliance's stored answer before re-publishing (doubling).
STORED_WAIT_FIRST_S = 5.0
STORED_WAIT_MAX_S = 60.0

# Loopback broker: reconnect quickly, capped at 2 s.
BACKOFF = Backoff(base_s=0.05, cap_s=2.0)
# Messages are handled by this many workers; when they are all busy and the queue is full, reading
# stops (back-pressure to the local broker).
WORKERS = 16
QUEUE = 64

Handler = Callable[[Message], Awaitable[None] | None]
RpcHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class StoredEvent:
    """What ``publish_event`` returns: the event's id, and its outbox seq (``None`` when the appliance
    had stored this ``(producer, id)`` before, ``duplicate``)."""

    id: str
    seq: int | None
    duplicate: bool = False


def topic_matches(filter_: str, topic: str) -> bool:
    f, t = filter_.split("/"), topic.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


class LocalBus:
    """A reconnecting local-bus client (a ``SupervisedLink``): subscriptions, retained state and RPC
    survive broker restarts.

    ``publish()`` while disconnected keeps only the latest retained value per topic (re-sent on
    reconnect) and drops other messages; use ``publish_event()`` for an event that must arrive (it
    returns once the appliance has stored it, re-publishing until then). Handlers run on the link's bounded
    workers; one that raises is logged and counted (``link.failed``), never ends the client.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        name: str = "localbus",
        will: tuple[str, dict[str, Any]] | None = None,
    ) -> None:
        """``will``: (topic, JSON) retained by the broker if this process dies without a clean stop."""
        self.host, self.port = host, port
        self._will = Will(will[0], dumps(will[1]), qos=1, retain=True) if will else None
        self.client_id = client_id or f"{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.name = name
        self._subs: list[tuple[str, int, Handler]] = []
        self._retained: dict[str, bytes] = {}
        self._rpc: dict[str, Mapping[str, RpcHandler]] = {}
        self._ids = itertools.count(1)
        self.reply_topic = f"{REPLY_PREFIX}/{self.client_id}"
        self.link = SupervisedLink(
            name,
            self._new_connection,
            handler=self._dispatch,
            subscriptions=self._filters,
            setup=self._republish,
            requester=Requester(self.reply_topic),
            backoff=BACKOFF,
            workers=WORKERS,
            queue_size=QUEUE,
            log=log,
        )
        self._tasks = TaskSet(name, log)

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self, wait_s: float | None = 5.0) -> None:
        self.link.start()
        if wait_s:
            await self.link.wait_connected(wait_s)

    async def stop(self, final: tuple[str, dict[str, Any]] | None = None) -> None:
        """Disconnect cleanly; ``final`` (topic, JSON) is published retained first (e.g. "stopped")."""
        await self._tasks.close()
        await self.link.stop(final=(final[0], dumps(final[1]), True) if final else None, timeout_s=1.0)

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def alive(self) -> bool:
        return self.link.alive

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        if not await self.link.wait_connected(timeout_s):
            raise TimeoutError(f"{self.name}: local bus {self.host}:{self.port} not reachable")

    def _new_connection(self) -> MqttConnection:
        return MqttConnection(
            host=self.host,
            port=self.port,
            client_id=self.client_id,
            keepalive_s=15,
            name=self.name,
            will=self._will,
        )

    def _filters(self) -> list[tuple[str, int]]:
        filters = [(f, q) for f, q, _ in self._subs]
        return filters + [(f"{RPC_PREFIX}/{s}/+", 1) for s in self._rpc]

    async def _republish(self, conn: MqttConnection, _tasks: TaskSet) -> None:
        for topic, payload in self._retained.items():
            conn.publish(topic, payload, qos=1, retain=True).add_done_callback(ignore_outcome)
        log.info("%s: connected to local bus %s:%d", self.name, self.host, self.port)

    # --- pub/sub -----------------------------------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        self._subs.append((topic_filter, qos, handler))
        if self.connected:
            self._tasks.spawn(self.link.subscribe_now((topic_filter, qos)))

    def publish(self, topic: str, obj: Any, *, qos: int = 1, retain: bool = False) -> None:
        payload = obj if isinstance(obj, bytes) else dumps(obj)
        if retain:
            self._retained[topic] = payload
        try:
            self.link.publish(topic, payload, qos=qos, retain=retain).add_done_callback(ignore_outcome)
        except LinkError:
            if not retain:
                log.debug("%s: local bus down, dropped message to %s", self.name, topic)

    async def publish_event(
        self,
        type: str,
        data: dict[str, Any],
        *,
        id: str | None = None,
        producer: str | None = None,
        timeout_s: float | None = None,
    ) -> StoredEvent:
        """Hand an event to the appliance; returns once the appliance has **stored** it.

        The event is published with a Response Topic and answered by the appliance after its outbox
        commit (the local broker's PUBACK alone would not survive a power cut). Without an answer it is
        re-published with the same ``(producer, id)`` — at once after a reconnect, otherwise after
        5 s doubling to 60 s — so the appliance stores it exactly once. Raises ``CommandError`` with
        the appliance's status when it refuses the event (400) and ``TimeoutError`` when it is not
        stored within ``timeout_s`` (``None``: keep trying); an event not confirmed in time may still
        be stored later, never twice.
        """
        event_id = id or f"{self.client_id}-{next(self._ids)}"
        payload = dumps({"type": type, "data": data, "id": event_id, "producer": producer or self.name})
        assert self.link.requester is not None
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        wait_s, why = STORED_WAIT_FIRST_S, "no answer from the appliance"
        while True:
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError(f"event {type} ({event_id}) not confirmed stored: {why}")
            try:
                reply = await self.link.requester.request(
                    self.link,
                    EVENT_TOPIC,
                    payload,
                    timeout_s=wait_s if left is None else min(wait_s, left),
                    what="the appliance (is kiosk-appliance running?)",
                    expires=False,
                )
            except CommandError as exc:  # 503: the local bus dropped (re-publish at once); 504: silence
                why = str(exc)
                if exc.status == 504:
                    wait_s = min(wait_s * 2, STORED_WAIT_MAX_S)
                else:
                    await asyncio.sleep(0.05)
                continue
            status = reply.get("status")
            if status == 200:
                seq = reply.get("seq")
                return StoredEvent(
                    event_id, seq if isinstance(seq, int) else None, reply.get("duplicate") is True
                )
            if status == 503:  # the appliance has it but cannot store it yet; it retries by itself
                why = str(reply.get("error", "storage unavailable"))
                await asyncio.sleep(wait_s if left is None else min(wait_s, max(left, 0)))
                continue
            raise CommandError(
                status if isinstance(status, int) else 502, str(reply.get("error", "event refused"))
            )

    # --- RPC ---------------------------------------------------------------------------------------

    def serve(self, service: str, handlers: Mapping[str, RpcHandler]) -> None:
        self._rpc[service] = handlers
        if self.connected:
            self._tasks.spawn(self.link.subscribe_now((f"{RPC_PREFIX}/{service}/+", 1)))

    async def call(
        self, service: str, method: str, params: dict[str, Any] | None = None, timeout_s: float = 5.0
    ) -> dict[str, Any]:
        """Call ``service.method``; returns the reply body (status 2xx) or raises ``CommandError``."""
        what = f"{service}.{method}"
        assert self.link.requester is not None
        reply = await self.link.requester.request(
            self.link,
            f"{RPC_PREFIX}/{service}/{method}",
            dumps(params or {}),
            timeout_s=timeout_s,
            what=f"{what} (is the {service} process running?)",
        )
        return check_reply(reply, what)

    # --- dispatch (on the link's workers) -----------------------------------------------------------

    async def _dispatch(self, msg: Message) -> None:
        if msg.topic.startswith(RPC_PREFIX + "/"):
            parts = msg.topic.split("/")
            if len(parts) == 5 and parts[3] in self._rpc:
                await self._serve_one(parts[3], parts[4], msg)
                return
        for filter_, _, handler in self._subs:
            if topic_matches(filter_, msg.topic):
                result = handler(msg)
                if asyncio.iscoroutine(result):
                    await result

    async def _serve_one(self, service: str, method: str, msg: Message) -> None:
        reply: dict[str, Any]
        handler = self._rpc[service].get(method)
        if handler is None:
            reply = {
                "status": 404,
                "error": f"unknown method {service}.{method}",
                "methods": sorted(self._rpc[service]),
            }
        else:
            try:
                params = decode_json_object(msg.payload, "request") if msg.payload else {}
                body = await handler(params)
                reply = {"status": 200, **(body or {})}
            except Exception as exc:  # noqa: BLE001 - every failure becomes a reply
                reply = error_reply(exc, what=f"{self.name}: {service}.{method}", log=log)
        if msg.response_topic:
            with contextlib.suppress(LinkError):
                self.link.publish(
                    msg.response_topic,
                    dumps(reply),
                    qos=1,
                    properties=publish_properties(correlation_data=msg.correlation_data),
                ).add_done_callback(ignore_outcome)
