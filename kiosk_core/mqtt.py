"""One MQTT 5 connection driven by the asyncio loop (paho-mqtt 2.x underneath).

paho is a callback library with its own threads; like aiomqtt we drive its socket from the event loop
instead (``add_reader``/``add_writer`` + a ``loop_misc`` tick), so every callback runs on the loop
thread and no locking is needed. paho's own reconnect and in-memory resend are deliberately not used:
a connection object lives for exactly one network connection, and whoever owns it (the fleet link,
the local bus consumer) decides about backoff, epochs and what to resend from durable storage.

Foreign errors (paho return codes, ``OSError``, ``ssl.SSLError``) become ``LinkError`` here and only here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from kiosk_core.errors import LinkError, NotConnected, PublishFailed
from kiosk_core.tasks import wait_for

log = logging.getLogger("kiosk.mqtt")

# Incoming messages wait here for the consumer. Flow control is ours, not the broker's: above
# INCOMING_HIGH queued (or, with manual acks, unacknowledged) messages we stop reading the socket (TCP
# pushes back on the broker) and resume at a quarter of it, so a burst costs bounded memory. The hard bound only matters if a consumer stops
# consuming altogether; then the newest message is dropped and counted (never for manual-ack messages,
# which the broker redelivers because they were not acknowledged).
INCOMING_HIGH = 500
INCOMING_QUEUE = 20_000


@dataclass(frozen=True)
class Tls:
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    handshake_timeout_s: float = 10.0


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass
class Message:
    """A received PUBLISH. ``ack()`` must be called for manual-ack connections with qos > 0."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    properties: Properties | None = None
    #: which connection of a ``SupervisedLink`` delivered it (its ``connects`` count then); 0 otherwise
    session: int = 0
    _ack: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def response_topic(self) -> str | None:
        return getattr(self.properties, "ResponseTopic", None) if self.properties else None

    @property
    def correlation_data(self) -> bytes | None:
        return getattr(self.properties, "CorrelationData", None) if self.properties else None

    @property
    def message_expiry(self) -> int | None:
        return getattr(self.properties, "MessageExpiryInterval", None) if self.properties else None

    def ack(self) -> None:
        if self._ack is not None:
            ack, self._ack = self._ack, None
            ack()


def publish_properties(
    *,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
    expiry_s: int | None = None,
    content_type: str | None = "application/json",
) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    if content_type:
        props.ContentType = content_type
    if response_topic:
        props.ResponseTopic = response_topic
    if correlation_data is not None:
        props.CorrelationData = correlation_data
    if expiry_s is not None:
        props.MessageExpiryInterval = int(expiry_s)
    return props


def ignore_outcome(fut: asyncio.Future[Any]) -> None:
    """Done-callback for a fire-and-forget publish: retrieve its outcome so asyncio does not warn."""
    if not fut.cancelled():
        fut.exception()


class MqttConnection:
    """A single MQTT 5 network connection. Create, ``await connect()``, use, ``await close()``.

    After the connection drops, ``closed`` is done (its result is the reason) and every pending
    publish future fails with ``NotConnected``; make a new object to connect again.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        keepalive_s: int = 30,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        manual_ack: bool = False,
        receive_maximum: int = 1000,
        max_inflight: int = 1000,
        will: Will | None = None,
        tls: Tls | None = None,
        username: str | None = None,
        password: str | None = None,
        name: str = "mqtt",
    ) -> None:
        self.host, self.port, self.name = host, port, name
        self._keepalive = keepalive_s
        self._clean_start = clean_start
        self._session_expiry = session_expiry_s
        self._receive_maximum = receive_maximum
        self._tls = tls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5, manual_ack=manual_ack
        )
        self._client.max_inflight_messages_set(max_inflight)
        self._client.max_queued_messages_set(0)
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls is not None:
            self._client.tls_set(
                ca_certs=tls.ca, certfile=tls.cert, keyfile=tls.key, tls_version=ssl.PROTOCOL_TLS_CLIENT
            )
        if will is not None:
            self._client.will_set(
                will.topic, will.payload, qos=will.qos, retain=will.retain, properties=publish_properties()
            )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._connack: asyncio.Future[bool] | None = None
        self.closed: asyncio.Future[str] | None = None
        self.incoming: asyncio.Queue[Message] = asyncio.Queue(INCOMING_QUEUE)
        self.dropped_incoming = 0
        self._misc_task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self._writer_on = False
        self._paused = False
        # Manual-ack messages received and not yet acknowledged. Counted by us because brokers do not
        # all keep to our Receive Maximum (mosquitto 2.0.11 sends more once the first acks arrive).
        self._outstanding = 0
        self._manual_ack = manual_ack
        self._high = min(INCOMING_HIGH, receive_maximum) if manual_ack else INCOMING_HIGH
        self._low = max(1, self._high // 4)

    # --- lifecycle ---------------------------------------------------------------------------------

    async def connect(self, timeout_s: float = 10.0) -> bool:
        """Open the connection; returns the broker's ``session_present`` flag.

        Raises ``LinkError`` with the reason (refused, unreachable, TLS, timeout).
        """
        self._loop = asyncio.get_running_loop()
        self._connack = self._loop.create_future()
        self.closed = self._loop.create_future()
        props = Properties(PacketTypes.CONNECT)
        if self._session_expiry:
            props.SessionExpiryInterval = self._session_expiry
        props.ReceiveMaximum = self._receive_maximum
        self._client.connect_timeout = self._tls.handshake_timeout_s if self._tls else timeout_s
        try:
            # connect() does the TCP (and TLS) handshake synchronously: keep it off the loop.
            await wait_for(
                self._loop.run_in_executor(
                    None,
                    lambda: self._client.connect(
                        self.host,
                        self.port,
                        keepalive=self._keepalive,
                        clean_start=self._clean_start,
                        properties=props,
                    ),
                ),
                timeout_s,
            )
        except (OSError, ssl.SSLError, ValueError, TimeoutError) as exc:
            self._teardown(f"connect failed: {exc!r}")
            raise LinkError(f"{self.name}: cannot connect to {self.host}:{self.port}: {exc}") from exc
        self._attach_socket()
        self._misc_task = self._loop.create_task(self._misc(), name=f"{self.name}-misc")
        try:
            return await wait_for(asyncio.shield(self._connack), timeout_s)
        except TimeoutError as exc:
            self._teardown("no CONNACK")
            raise LinkError(
                f"{self.name}: no CONNACK from {self.host}:{self.port} within {timeout_s}s"
            ) from exc
        except LinkError:
            self._teardown("refused")
            raise

    async def close(
        self, *, publish_first: tuple[str, bytes, bool] | None = None, timeout_s: float = 2.0
    ) -> None:
        """Disconnect cleanly (DISCONNECT reason 0, so the broker does not send the Will).

        ``publish_first`` is an optional (topic, payload, retain) sent with QoS 1 and awaited before.
        """
        if self.connected and publish_first is not None:
            topic, payload, retain = publish_first
            try:
                await wait_for(self.publish(topic, payload, qos=1, retain=retain), timeout_s)
            except (LinkError, TimeoutError) as exc:
                log.warning("%s: could not publish %s before disconnect: %s", self.name, topic, exc)
        if self.connected:
            self._client.disconnect()
            self._service_write()
            try:
                assert self.closed is not None
                await wait_for(asyncio.shield(self.closed), timeout_s)
            except TimeoutError:
                pass
        self._teardown("closed")

    @property
    def connected(self) -> bool:
        return (
            self.closed is not None
            and not self.closed.done()
            and self._connack is not None
            and self._connack.done()
            and not self._connack.exception()
        )

    # --- operations --------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> asyncio.Future[None]:
        """Send a PUBLISH. The future completes on PUBACK (QoS 1) or once written (QoS 0)."""
        if not self.connected:
            raise NotConnected(f"{self.name}: not connected")
        assert self._loop is not None
        fut: asyncio.Future[None] = self._loop.create_future()
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        except (ValueError, TypeError) as exc:  # paho: wildcard or empty topic, payload too large
            raise PublishFailed(f"{self.name}: cannot publish to {topic[:120]!r}: {exc}") from None
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise PublishFailed(f"{self.name}: publish to {topic} failed: {paho.error_string(info.rc)}")
        if qos == 0 or info.is_published():
            fut.set_result(None)
        else:
            self._pending[info.mid] = fut
        self._service_write()
        return fut

    async def subscribe(self, *topics: tuple[str, int], timeout_s: float = 10.0) -> list[int]:
        if not self.connected:
            raise NotConnected(f"{self.name}: not connected")
        assert self._loop is not None
        rc, mid = self._client.subscribe(list(topics))
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise LinkError(f"{self.name}: subscribe failed: {paho.error_string(rc)}")
        fut: asyncio.Future[list[int]] = self._loop.create_future()
        self._subacks[mid] = fut
        self._service_write()
        try:
            codes = await wait_for(fut, timeout_s)
        except TimeoutError:
            self._subacks.pop(mid, None)
            raise LinkError(
                f"{self.name}: no SUBACK from {self.host}:{self.port} within {timeout_s}s"
            ) from None
        bad = [c for c in codes if c >= 0x80]
        if bad:
            raise LinkError(f"{self.name}: broker refused subscription {topics}: reason codes {bad}")
        return codes

    async def messages(self) -> AsyncIterator[Message]:
        """Yield received messages until the connection closes (then what arrived before the close)."""
        assert self.closed is not None
        while True:
            if not self.incoming.empty():
                msg = self.incoming.get_nowait()
                self._maybe_resume()
                yield msg
                continue
            if self.closed.done():
                return
            getter = asyncio.ensure_future(self.incoming.get())
            try:
                await asyncio.wait({getter, self.closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                got = getter.done() and not getter.cancelled()
                if not getter.done():
                    getter.cancel()  # the consumer went away (or the connection closed)
            if got:
                yield getter.result()

    # --- paho callbacks (all on the loop thread) ---------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if self._connack is None or self._connack.done():
            return
        if reason_code.is_failure:
            self._connack.set_exception(LinkError(f"{self.name}: broker refused connection: {reason_code}"))
        else:
            self._connack.set_result(bool(flags.session_present))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        self._teardown(f"disconnected: {reason_code}")

    def _on_message(self, client, userdata, msg: paho.MQTTMessage) -> None:  # noqa: ANN001
        message = Message(
            topic=msg.topic,
            payload=msg.payload,
            qos=msg.qos,
            retain=bool(msg.retain),
            mid=msg.mid,
            properties=getattr(msg, "properties", None),
        )
        if msg.qos > 0 and self._manual_ack:
            mid, qos = msg.mid, msg.qos
            self._outstanding += 1

            def _ack() -> None:
                self._outstanding -= 1
                if self.connected:
                    self._client.ack(mid, qos)
                    self._service_write()
                self._maybe_resume()

            message._ack = _ack  # noqa: SLF001
        try:
            self.incoming.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped_incoming += 1
            if self.dropped_incoming in (1, 10, 100) or self.dropped_incoming % 1000 == 0:
                log.warning(
                    "%s: incoming queue full, dropped %d message(s)", self.name, self.dropped_incoming
                )

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:  # noqa: ANN001
        fut = self._pending.pop(mid, None)
        if fut is None or fut.done():
            return
        if reason_code is not None and getattr(reason_code, "is_failure", False):
            fut.set_exception(PublishFailed(f"{self.name}: broker rejected publish: {reason_code}"))
        else:
            fut.set_result(None)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:  # noqa: ANN001
        fut = self._subacks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result([int(getattr(rc, "value", rc)) for rc in reason_codes])

    # --- socket plumbing ---------------------------------------------------------------------------

    def _attach_socket(self) -> None:
        assert self._loop is not None
        sock = self._client.socket()
        if sock is None:
            raise LinkError(f"{self.name}: connection to {self.host}:{self.port} has no socket")
        self._sock = sock
        # MQTT traffic here is small request/response packets (intents, states, PUBACKs): with Nagle on,
        # each hop waits for the peer's delayed ACK (~40 ms), measured 88 ms per intent -> state round trip.
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.add_reader(sock, self._readable)
        self._client.on_socket_register_write = lambda c, u, s: self._set_writer(True)
        self._client.on_socket_unregister_write = lambda c, u, s: self._set_writer(False)
        self._service_write()

    def _set_writer(self, on: bool) -> None:
        if self._loop is None or self._sock is None or on == self._writer_on:
            return
        self._writer_on = on
        if on:
            self._loop.add_writer(self._sock, self._writable)
        else:
            self._loop.remove_writer(self._sock)

    def _service_write(self) -> None:
        if self._sock is not None and self._client.want_write():
            self._set_writer(True)

    def _readable(self) -> None:
        rc = self._client.loop_read(max_packets=64)
        if rc != paho.MQTT_ERR_SUCCESS and rc != paho.MQTT_ERR_AGAIN:
            self._teardown(f"read error: {paho.error_string(rc)}")
            return
        self._service_write()
        # Never pause while a SUBACK is awaited: a resumed session floods queued messages before it,
        # and the caller only starts consuming once subscribe() returns.
        if (
            not self._paused
            and self._load() >= self._high
            and not self._subacks
            and self._loop is not None
            and self._sock is not None
        ):
            self._loop.remove_reader(self._sock)
            self._paused = True

    def _load(self) -> int:
        # Queued manual-ack messages are also outstanding: count each message once.
        return max(self.incoming.qsize(), self._outstanding)

    def _maybe_resume(self) -> None:
        if self._paused and self._load() <= self._low:
            self._paused = False
            if self._loop is not None and self._sock is not None:
                self._loop.add_reader(self._sock, self._readable)

    def _writable(self) -> None:
        rc = self._client.loop_write()
        if rc != paho.MQTT_ERR_SUCCESS and rc != paho.MQTT_ERR_AGAIN:
            self._teardown(f"write error: {paho.error_string(rc)}")
        elif not self._client.want_write():
            self._set_writer(False)

    async def _misc(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._client.loop_misc() != paho.MQTT_ERR_SUCCESS:
                self._teardown("keepalive timeout")
                return
            self._service_write()

    def _teardown(self, reason: str) -> None:
        if self._loop is not None and self._sock is not None:
            try:
                self._loop.remove_reader(self._sock)
                if self._writer_on:
                    self._loop.remove_writer(self._sock)
            except (ValueError, OSError):
                pass
            self._writer_on = False
            self._sock = None
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(reason)
            log.debug("%s: %s", self.name, reason)
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(LinkError(f"{self.name}: {reason}"))
            self._connack.exception()  # connect() reports it; keep asyncio from warning about it
        err = NotConnected(f"{self.name}: connection lost before acknowledgement ({reason})")
        for fut in list(self._pending.values()) + list(self._subacks.values()):
            if not fut.done():
                fut.set_exception(err)
                fut.exception()  # awaiters still get it; nobody awaiting is not worth a warning
        self._pending.clear()
        self._subacks.clear()
        if self._misc_task is not None and self._misc_task is not asyncio.current_task():
            self._misc_task.cancel()
        try:
            # Close the socket without sending DISCONNECT (paho would send nothing more anyway).
            sock = self._client.socket()
            if sock is not None:
                sock.close()
        except OSError:
            pass
