"""The fleet link: the appliance's one MQTT 5 connection to the central platform.

Per connection: the epoch is incremented and fsynced, the Will (``lost`` + epoch) is set, and after
CONNACK the link subscribes to ``cmd/+`` and ``config/desired``, publishes retained ``state`` =
``online`` and ``birth``, and drains the outbox in seq order with at most ``max_inflight`` unacknowledged
events. An event leaves the outbox only after the broker's PUBACK. After any outage every
unacknowledged event is re-sent from the oldest, so the platform sees each seq at least once and in
order; de-duplicating by (device, seq) gives exactly once.

Reconnects use exponential backoff with full jitter (``reconnect_base_s`` doubling up to
``reconnect_cap_s``) after a random initial delay, so a county's kiosks do not reconnect in lock-step
after a central outage. The backlog of an outage drains at ``drain_rate_per_s`` at most; command
replies, ``state``, ``birth`` and live telemetry never wait behind it (they bypass the outbox).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from appliance.config import KioskConfig
from appliance.messages import State, conform
from appliance.outbox import Outbox
from kiosk_core.errors import LinkError
from kiosk_core.link import Backoff, SupervisedLink
from kiosk_core.mqtt import Message, MqttConnection, Tls, Will, publish_properties
from kiosk_core.payload import dumps
from kiosk_core.tasks import TaskSet, wait_for

log = logging.getLogger("kiosk.fleet")

SESSION_EXPIRY_S = 86400  # the broker keeps our subscriptions and queued commands for a day offline
# Commands and desired configs run on this many workers (a command may take up to 30 s); when all are
# busy and the queue is full, reading stops and the broker holds the rest.
WORKERS = 16
QUEUE = 64


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst or max(1.0, rate / 10)
        self._tokens = self.burst
        self._last = time.monotonic()

    async def take(self, n: float = 1.0) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= n:
                self._tokens -= n
                return
            await asyncio.sleep((n - self._tokens) / self.rate)


class FleetLink:
    def __init__(
        self,
        cfg: KioskConfig,
        outbox: Outbox,
        *,
        boot_id: str,
        birth: Callable[[], dict[str, Any]],
        on_command: Callable[[str, Message], Awaitable[None]],
        on_desired: Callable[[Message], Awaitable[None]],
    ) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.boot_id = boot_id
        self._birth = birth
        self._on_command = on_command
        self._on_desired = on_desired
        root = cfg.topic_root
        self.root = root
        self.t_state, self.t_birth = f"{root}/state", f"{root}/birth"
        self.t_telemetry, self.t_event = f"{root}/telemetry", f"{root}/event"
        self.t_cmd, self.t_desired, self.t_reported = (
            f"{root}/cmd/",
            f"{root}/config/desired",
            f"{root}/config/reported",
        )
        self.connected_since: float | None = None
        self.sent_events = 0
        self._bucket = TokenBucket(cfg.fleet.drain_rate_per_s)
        self.first_online = asyncio.Event()
        f = cfg.fleet
        self.link = SupervisedLink(
            "fleet",
            self._new_connection,
            handler=self._dispatch,
            # Subscribed before `online` is announced: a platform that sends a command the moment it
            # sees `online` must find the subscription in place.
            subscriptions=lambda: [(self.t_cmd + "+", 1), (self.t_desired, 1)],
            setup=self._online,
            backoff=Backoff(f.reconnect_base_s, f.reconnect_cap_s, f.initial_delay_max_s),
            connect_timeout_s=max(10.0, f.tls.handshake_timeout_s if f.tls else 10.0),
            workers=WORKERS,
            queue_size=QUEUE,
            log=log,
        )

    # --- public ------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def connects(self) -> int:
        return self.link.connects

    @property
    def last_error(self) -> str:
        return self.link.last_error

    def start(self) -> asyncio.Task[None]:
        return self.link.start()

    @property
    def alive(self) -> bool:
        return self.link.alive

    def set_drain_rate(self, rate: float) -> None:
        self._bucket = TokenBucket(rate)

    async def stop(self, timeout_s: float = 3.0) -> None:
        """Publish ``offline`` (retained) and disconnect cleanly, so the broker sends no Will."""
        await self.link.stop(final=(self.t_state, self._state("offline"), True), timeout_s=timeout_s)

    def _state(self, state: str) -> bytes:
        return dumps(
            conform(
                State,
                {
                    "state": state,
                    "epoch": self.outbox.epoch,
                    "ts": round(time.time(), 3),
                    "boot_id": self.boot_id,
                },
            )
        )

    async def send_reply(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        """Send a command reply (QoS 1). Not queued in the outbox: a lost reply is recovered by the
        platform repeating the command id, which gets the stored reply again."""
        if not self.link.connected:
            log.warning("reply to %s not sent: fleet link down (the platform may repeat the command)", topic)
            return
        if not await self.link.publish_acked(
            topic, payload, properties=publish_properties(correlation_data=correlation)
        ):
            log.warning("reply to %s not acknowledged", topic)

    async def publish_retained(self, topic: str, payload: bytes) -> bool:
        return await self.link.publish_acked(topic, payload, retain=True)

    async def rebirth(self) -> bool:
        return await self.publish_retained(self.t_birth, dumps(self._birth()))

    async def publish_telemetry(self, payload: bytes) -> str:
        """Live telemetry goes straight out; if the link is down it waits in the outbox (droppable)."""
        if self.link.connected and await self.link.publish_acked(self.t_telemetry, payload):
            return "sent"
        await self.outbox.store_telemetry(payload)
        return "stored"

    # --- connection --------------------------------------------------------------------------------

    async def _new_connection(self) -> MqttConnection:
        """A new connection with a new epoch, fsynced before CONNECT so the Will names it."""
        epoch = await self.outbox.next_epoch()
        f = self.cfg.fleet
        tls = None
        if f.tls is not None:
            tls = Tls(
                ca=str(f.tls.ca),
                cert=str(f.tls.cert) if f.tls.cert else None,
                key=str(f.tls.key) if f.tls.key else None,
                handshake_timeout_s=f.tls.handshake_timeout_s,
            )
        log.debug("fleet: connecting with epoch %d", epoch)
        return MqttConnection(
            host=f.host,
            port=f.port,
            client_id=self.cfg.device.id,
            keepalive_s=f.keepalive_s,
            clean_start=False,
            session_expiry_s=SESSION_EXPIRY_S,
            max_inflight=f.max_inflight,
            will=Will(self.t_state, self._state("lost"), qos=1, retain=True),
            tls=tls,
            username=f.username,
            password=f.password.get_secret_value() if f.password else None,
            name="fleet",
        )

    async def _online(self, conn: MqttConnection, tasks: TaskSet) -> None:
        """Per connection, after the subscriptions: announce ``online`` and ``birth``, start draining."""
        connected_at = time.time()
        await conn.publish(self.t_state, self._state("online"), qos=1, retain=True)
        await conn.publish(self.t_birth, dumps(self._birth()), qos=1, retain=True)
        self.connected_since = time.monotonic()
        self.first_online.set()
        log.info(
            "fleet: online at %s:%d as %s, epoch %d, outbox depth %d",
            self.cfg.fleet.host,
            self.cfg.fleet.port,
            self.root,
            self.outbox.epoch,
            self.outbox.depth,
        )
        # A failure in the drain is logged and ends this connection: the link reconnects and drains
        # afresh from the oldest unacknowledged event.
        tasks.spawn(self._drain(conn, connected_at), name="fleet-drain")

    async def _dispatch(self, msg: Message) -> None:
        if msg.topic.startswith(self.t_cmd):
            await self._on_command(msg.topic[len(self.t_cmd) :], msg)
        elif msg.topic == self.t_desired:
            await self._on_desired(msg)

    # --- outbox drain ------------------------------------------------------------------------------

    async def _drain(self, conn: MqttConnection, connected_at: float) -> None:
        window = self.cfg.fleet.max_inflight
        inflight: dict[int, asyncio.Future[None]] = {}
        acked: list[int] = []
        cursor = 0
        changed = self.outbox.changed

        def on_done(seq: int, fut: asyncio.Future[None]) -> None:
            inflight.pop(seq, None)
            if not fut.cancelled() and fut.exception() is None:
                acked.append(seq)
            changed.set()

        while conn.connected:
            progressed = False
            room = window - len(inflight)
            if room > 0:
                batch = await self.outbox.batch_after(cursor, min(room, 500))
                for ev in batch:
                    if ev.wall < connected_at:
                        await self._bucket.take()  # backlog from before this connection: capped
                    try:
                        fut = conn.publish(self.t_event, ev.message(self.boot_id), qos=1)
                    except LinkError:
                        if not conn.connected:
                            return  # the connection dropped; the next one re-sends from the oldest
                        raise  # a live connection that refuses events: the link reconnects
                    inflight[ev.seq] = fut
                    fut.add_done_callback(lambda f, s=ev.seq: on_done(s, f))
                    cursor = ev.seq
                    progressed = True
            if acked:
                done, acked[:] = list(acked), []
                await self.outbox.delete(done)
                self.sent_events += len(done)
                progressed = True
            if not progressed and not inflight and self.outbox.telemetry_depth:
                progressed = await self._drain_telemetry(conn)
            if not progressed:
                await self.outbox.wait_new(0.25)

    async def _drain_telemetry(self, conn: MqttConnection) -> bool:
        """Stored telemetry goes after every stored event (it matters less), also rate-capped."""
        rows = await self.outbox.telemetry_batch(50)
        sent: list[int] = []
        for tid, payload in rows:
            await self._bucket.take()
            try:
                await wait_for(conn.publish(self.t_telemetry, payload, qos=1), 10)
            except (LinkError, TimeoutError):
                break
            sent.append(tid)
        await self.outbox.delete_telemetry(sent)
        return bool(sent)
