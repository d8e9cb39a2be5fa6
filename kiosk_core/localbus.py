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
import json
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kiosk_core.backoff import full_jitter
from kiosk_core.errors import CommandError, KioskError, LinkError
from kiosk_core.mqtt import Message, MqttConnection, Will, publish_properties

log = logging.getLogger("kiosk.localbus")

PREFIX = "kiosk/local"
EVENT_TOPIC = f"{PREFIX}/event"
FEED_PREFIX = f"{PREFIX}/feed"
STATE_PREFIX = f"{PREFIX}/state"
INTENT_PREFIX = f"{PREFIX}/intent"
RPC_PREFIX = f"{PREFIX}/rpc"
REPLY_PREFIX = f"{PREFIX}/reply"

MAX_PAYLOAD = 256 * 1024

Handler = Callable[[Message], Awaitable[None] | None]
RpcHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str).encode()


def decode_json_object(payload: bytes, what: str = "payload") -> dict[str, Any]:
    """Parse a JSON object or raise ``ValueError`` saying exactly what is wrong."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"{what} is {len(payload)} bytes; at most {MAX_PAYLOAD} are accepted")
    try:
        obj = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} is not UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(obj).__name__}")
    return obj


def topic_matches(filter_: str, topic: str) -> bool:
    f, t = filter_.split("/"), topic.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


class LocalBus:
    """A reconnecting local-bus client: subscriptions, retained state and RPC survive broker restarts.

    ``publish()`` while disconnected keeps only the latest retained value per topic (re-sent on
    reconnect) and drops other messages with a warning; use ``publish_event()`` for anything that
    must arrive (it waits for the broker's PUBACK, retrying across reconnects).
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
        self._conn: MqttConnection | None = None
        self._subs: list[tuple[str, int, Handler]] = []
        self._retained: dict[str, bytes] = {}
        self._rpc: dict[str, Mapping[str, RpcHandler]] = {}
        self._calls: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._ids = itertools.count(1)
        self._handler_tasks: set[asyncio.Task[Any]] = set()
        self.reply_topic = f"{REPLY_PREFIX}/{self.client_id}"

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self, wait_s: float | None = 5.0) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self.name}-run")
        if wait_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connected.wait(), wait_s)

    async def stop(self, final: tuple[str, dict[str, Any]] | None = None) -> None:
        """Disconnect cleanly; ``final`` (topic, JSON) is published retained first (e.g. "stopped")."""
        if final is not None and self._conn is not None and self._conn.connected:
            topic, obj = final
            with contextlib.suppress(KioskError, TimeoutError):
                await asyncio.wait_for(self._conn.publish(topic, dumps(obj), qos=1, retain=True), 1.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        for t in list(self._handler_tasks):
            t.cancel()

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.connected

    async def wait_connected(self, timeout_s: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    async def _run(self) -> None:
        attempt = 0
        while True:
            conn = MqttConnection(
                host=self.host,
                port=self.port,
                client_id=self.client_id,
                keepalive_s=15,
                name=self.name,
                will=self._will,
            )
            try:
                await conn.connect(timeout_s=5)
                self._conn = conn
                filters = [(f, q) for f, q, _ in self._subs] + [(self.reply_topic, 1)]
                filters += [(f"{RPC_PREFIX}/{s}/+", 1) for s in self._rpc]
                await conn.subscribe(*dict(filters).items())
                for topic, payload in self._retained.items():
                    conn.publish(topic, payload, qos=1, retain=True)
                attempt = 0
                self._connected.set()
                log.info("%s: connected to local bus %s:%d", self.name, self.host, self.port)
                async for msg in conn.messages():
                    self._dispatch(msg)
                log.warning(
                    "%s: local bus connection lost (%s)",
                    self.name,
                    conn.closed.result() if conn.closed and conn.closed.done() else "?",
                )
            except LinkError as exc:
                if attempt in (0, 5) or attempt % 20 == 0:
                    log.warning("%s: local bus %s:%d unavailable: %s", self.name, self.host, self.port, exc)
            finally:
                self._connected.clear()
                self._conn = None
                with contextlib.suppress(Exception):
                    await conn.close(timeout_s=0.5)
            attempt += 1
            # Loopback broker: short capped backoff with jitter.
            await asyncio.sleep(full_jitter(attempt, 0.05, 2.0))

    # --- pub/sub -----------------------------------------------------------------------------------

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        self._subs.append((topic_filter, qos, handler))
        if self.connected:
            assert self._conn is not None
            self._spawn(self._conn.subscribe((topic_filter, qos)))

    def publish(self, topic: str, obj: Any, *, qos: int = 1, retain: bool = False) -> None:
        payload = obj if isinstance(obj, bytes) else dumps(obj)
        if retain:
            self._retained[topic] = payload
        if self.connected:
            assert self._conn is not None
            with contextlib.suppress(KioskError):
                fut = self._conn.publish(topic, payload, qos=qos, retain=retain)
                fut.add_done_callback(lambda f: f.exception())
        elif not retain:
            log.debug("%s: local bus down, dropped message to %s", self.name, topic)

    async def publish_event(
        self, type: str, data: dict[str, Any], *, id: str | None = None, timeout_s: float | None = None
    ) -> str:
        """Hand an event to the appliance; returns its id once the local broker has it (PUBACK).

        Retries across reconnects with the same id, so the appliance stores it exactly once.
        """
        event_id = id or f"{self.client_id}-{next(self._ids)}"
        payload = dumps({"type": type, "data": data, "id": event_id})

        async def attempt() -> None:
            while True:
                await self._connected.wait()
                conn = self._conn
                if conn is None:
                    continue
                try:
                    await conn.publish(EVENT_TOPIC, payload, qos=1)
                    return
                except LinkError:
                    await asyncio.sleep(0.1)

        await asyncio.wait_for(attempt(), timeout_s)
        return event_id

    # --- RPC ---------------------------------------------------------------------------------------

    def serve(self, service: str, handlers: Mapping[str, RpcHandler]) -> None:
        self._rpc[service] = handlers
        if self.connected:
            assert self._conn is not None
            self._spawn(self._conn.subscribe((f"{RPC_PREFIX}/{service}/+", 1)))

    async def call(
        self, service: str, method: str, params: dict[str, Any] | None = None, timeout_s: float = 5.0
    ) -> dict[str, Any]:
        """Call ``service.method``; returns the reply body (status 200/202) or raises ``CommandError``."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            raise CommandError(503, f"local bus unavailable: cannot call {service}.{method}") from None
        assert self._conn is not None
        corr = uuid.uuid4().bytes
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._calls[corr] = fut
        try:
            self._conn.publish(
                f"{RPC_PREFIX}/{service}/{method}",
                dumps(params or {}),
                qos=1,
                properties=publish_properties(
                    response_topic=self.reply_topic, correlation_data=corr, expiry_s=int(timeout_s) + 1
                ),
            )
            reply = await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise CommandError(
                504, f"{service}.{method}: no reply within {timeout_s}s (is the {service} process running?)"
            ) from None
        finally:
            self._calls.pop(corr, None)
        status = int(reply.get("status", 500))
        if status >= 300:
            detail = {k: v for k, v in reply.items() if k not in ("status", "error")}
            raise CommandError(status, str(reply.get("error", f"{service}.{method} failed")), **detail)
        return reply

    # --- dispatch ----------------------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[Any]) -> None:
        self._handler_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: handler failed: %r", self.name, task.exception(), exc_info=task.exception())

    def _dispatch(self, msg: Message) -> None:
        if msg.topic == self.reply_topic:
            fut = self._calls.get(msg.correlation_data or b"")
            if fut is not None and not fut.done():
                try:
                    fut.set_result(decode_json_object(msg.payload, "reply"))
                except ValueError as exc:
                    fut.set_result({"status": 502, "error": f"unreadable reply: {exc}"})
            return
        if msg.topic.startswith(RPC_PREFIX + "/"):
            parts = msg.topic.split("/")
            if len(parts) == 5 and parts[3] in self._rpc:
                self._spawn(self._serve_one(parts[3], parts[4], msg))
                return
        for filter_, _, handler in self._subs:
            if topic_matches(filter_, msg.topic):
                result = handler(msg)
                if asyncio.iscoroutine(result):
                    self._spawn(result)

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
            except CommandError as exc:
                reply = {"status": exc.status, "error": str(exc), **exc.detail}
            except ValueError as exc:
                reply = {"status": 400, "error": str(exc)}
            except KioskError as exc:
                reply = {"status": 500, "error": str(exc), "code": exc.code}
            except Exception as exc:  # noqa: BLE001 - a handler bug must not kill the bus client
                log.exception("%s: %s.%s crashed", self.name, service, method)
                reply = {"status": 500, "error": f"internal error: {exc!r}"}
        if msg.response_topic and self._conn is not None and self._conn.connected:
            with contextlib.suppress(KioskError):
                self._conn.publish(
                    msg.response_topic,
                    dumps(reply),
                    qos=1,
                    properties=publish_properties(correlation_data=msg.correlation_data),
                )
