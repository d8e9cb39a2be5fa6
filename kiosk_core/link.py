"""``SupervisedLink``: the one reconnecting MQTT link every part of the firmware is built on.

The fleet link, the appliance's event intake, every local-bus client (appliance, media, UI, tools)
and the platform-side simulators are each one ``SupervisedLink`` configured differently. It owns:

- **Reconnect**: connect, subscribe, run the owner's ``setup``, relay messages; when the connection
  ends for any reason, wait ``Backoff.delay(attempt)`` (full jitter, doubling to a cap, reset after a
  connection that got through setup) and connect again. An optional random initial delay spreads a
  fleet's first connections. Only cancellation (``stop()``) ends it: a ``LinkError``, a timeout, an
  exception in ``setup`` or in the connection factory is logged and retried.
- **Bounded dispatch**: messages go to ``workers`` long-lived tasks through a queue of
  ``queue_size``. No task per message. Overflow policy: when the queue is full the reader waits, so
  ``MqttConnection`` stops reading the socket and TCP pushes back on the broker; nothing is dropped
  here (manual-ack messages stay unacknowledged and the broker redelivers them).
- **Handler isolation**: a handler that raises is logged (with its traceback, rate-limited) and
  counted in ``failed``; the worker goes on with the next message.
- **Per-connection tasks**: ``setup`` may start tasks in the ``TaskSet`` it is given (the fleet's
  outbox drain). They are cancelled when the connection ends; if one fails, the failure is logged
  and the connection is closed, so the link reconnects and ``setup`` starts them afresh. A failed
  background task never leaves a link that looks healthy but does nothing.
- **Replies**: with a ``Requester``, messages on its reply topic resolve their request in the
  reader, ahead of the queue, so handlers may themselves wait for replies.
- **Liveness**: ``alive`` is what the watchdog reads: the supervisor and every worker are running.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kiosk_core.backoff import full_jitter
from kiosk_core.errors import LinkError, NotConnected
from kiosk_core.mqtt import Message, MqttConnection
from kiosk_core.requester import Requester
from kiosk_core.tasks import TaskSet, wait_for

Handler = Callable[[Message], Awaitable[None] | None]
Setup = Callable[[MqttConnection, TaskSet], Awaitable[None]]
ConnectionFactory = Callable[[], MqttConnection | Awaitable[MqttConnection]]

# Handler failures are logged in full the first few times, then every Nth, so a hostile producer
# cannot flood the journal.
_LOG_FIRST, _LOG_EVERY = 5, 100


@dataclass(frozen=True)
class Backoff:
    """Reconnect delays: full jitter between 0 and ``min(cap_s, base_s * 2**attempt)``."""

    base_s: float = 0.05
    cap_s: float = 2.0
    initial_delay_max_s: float = 0.0

    def delay(self, attempt: int) -> float:
        return full_jitter(attempt, self.base_s, self.cap_s)


class SupervisedLink:
    def __init__(
        self,
        name: str,
        connect: ConnectionFactory,
        *,
        handler: Handler | None = None,
        subscriptions: Callable[[], Iterable[tuple[str, int]]] = tuple,
        setup: Setup | None = None,
        requester: Requester | None = None,
        backoff: Backoff = Backoff(),
        connect_timeout_s: float = 5.0,
        workers: int = 8,
        queue_size: int = 64,
        log: logging.Logger | None = None,
    ) -> None:
        """``connect`` makes a new, unconnected ``MqttConnection`` for every attempt (it may be async,
        e.g. to fsync a new epoch first). ``subscriptions`` is read at every connect."""
        if workers < 1 or queue_size < 1:
            raise ValueError("a link needs at least one worker and a queue of at least one message")
        self.name = name
        self._connect = connect
        self._handler = handler
        self._subscriptions = subscriptions
        self._setup = setup
        self.requester = requester
        self.backoff = backoff
        self._connect_timeout_s = connect_timeout_s
        self._n_workers = workers
        self._queue: asyncio.Queue[Message] = asyncio.Queue(queue_size)
        self.log = log or logging.getLogger(f"kiosk.{name}")
        self._conn: MqttConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._connected = asyncio.Event()
        self._stopping = False
        self._closes = TaskSet(f"{name}-closes", self.log)  # connections being closed on purpose
        # counters (telemetry and tests)
        self.connects = 0
        self.handled = 0
        self.failed = 0
        self.waits = 0  # times the reader waited for a full queue (back-pressure engaged)
        self.last_error = ""

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._stopping = False
            self._workers = [
                asyncio.create_task(self._work(), name=f"{self.name}-worker-{i}")
                for i in range(self._n_workers)
            ]
            self._task = asyncio.create_task(self._run(), name=f"{self.name}-link")
        return self._task

    async def stop(self, *, final: tuple[str, bytes, bool] | None = None, timeout_s: float = 2.0) -> None:
        """Disconnect cleanly (no Will). ``final`` is (topic, payload, retain) published first, QoS 1,
        when connected. Idempotent."""
        self._stopping = True
        conn = self._conn
        if conn is not None and conn.connected:
            await conn.close(publish_first=final, timeout_s=timeout_s)
        tasks = [t for t in (self._task, *self._workers) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._closes.close()
        self._task, self._workers = None, []
        if self._conn is not None:
            await self._conn.close(timeout_s=0.5)
            self._conn = None

    @property
    def alive(self) -> bool:
        """The supervisor and all workers are running (what a watchdog should read)."""
        return (
            self._task is not None
            and not self._task.done()
            and bool(self._workers)
            and not any(w.done() for w in self._workers)
        )

    @property
    def connected(self) -> bool:
        """Connected and through setup (subscribed, announced): ready for use."""
        return self._connected.is_set() and self._conn is not None and self._conn.connected

    @property
    def connection(self) -> MqttConnection | None:
        """The current connection while connected, else None."""
        return self._conn if self.connected else None

    async def wait_connected(self, timeout_s: float | None = None) -> bool:
        """True once connected (at once if already), False after ``timeout_s``."""
        if self.connected:
            return True
        try:
            await wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            return False
        return self.connected

    def drop(self, why: str, *, session: int | None = None) -> None:
        """Close the current connection so the link reconnects (e.g. to have unacknowledged messages
        redelivered). With ``session`` (a ``Message.session``), only if that connection is current."""
        conn = self._conn
        if conn is None or not conn.connected or (session is not None and session != self.connects):
            return
        self.log.warning("%s: reconnecting: %s", self.name, why)
        self._closes.spawn(conn.close(timeout_s=0.5), name=f"{self.name}-drop")

    # --- operations --------------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        properties: Any = None,
    ) -> asyncio.Future[None]:
        """Publish on the current connection; the future completes on PUBACK. Raises ``NotConnected``
        (a ``LinkError``) while down; the future fails with ``NotConnected`` if the link drops first."""
        conn = self._conn
        if conn is None or not self.connected:
            raise NotConnected(f"{self.name}: not connected")
        return conn.publish(topic, payload, qos=qos, retain=retain, properties=properties)

    async def publish_acked(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        properties: Any = None,
        timeout_s: float = 10.0,
    ) -> bool:
        """Publish QoS 1 and wait for the PUBACK; False (logged at debug) if down or not acknowledged."""
        try:
            await wait_for(
                self.publish(topic, payload, qos=1, retain=retain, properties=properties), timeout_s
            )
            return True
        except (LinkError, TimeoutError) as exc:
            self.log.debug("%s: publish to %s not acknowledged: %s", self.name, topic, exc)
            return False

    async def subscribe_now(self, *filters: tuple[str, int]) -> None:
        """Subscribe on the current connection, if any (later connections read ``subscriptions``).
        A failure closes the connection, so the reconnect subscribes again."""
        conn = self.connection
        if conn is None:
            return
        try:
            await conn.subscribe(*filters)
        except LinkError as exc:
            self.drop(f"subscribe {[f for f, _ in filters]} failed: {exc}")

    # --- supervision -------------------------------------------------------------------------------

    async def _run(self) -> None:
        if self.backoff.initial_delay_max_s > 0:
            delay = random.uniform(0, self.backoff.initial_delay_max_s)
            self.log.info("%s: first connection in %.1fs (spreads the fleet's reconnects)", self.name, delay)
            await asyncio.sleep(delay)
        attempt = 0
        while not self._stopping:
            reason = await self._one_connection()
            if self._stopping:
                return
            if reason is None:
                attempt = 0  # the connection got through setup: start the backoff afresh
            delay = self.backoff.delay(attempt)
            if reason is None or attempt < 3 or attempt % 10 == 0:
                self.log.warning(
                    "%s: %s; reconnecting in %.1fs (attempt %d)",
                    self.name,
                    self.last_error,
                    delay,
                    attempt + 1,
                )
            attempt += 1
            await asyncio.sleep(delay)

    async def _one_connection(self) -> str | None:
        """Connect and serve one connection. Returns None after a connection that got through setup
        (and then ended), else the reason it failed before that."""
        conn: MqttConnection | None = None
        session_tasks = TaskSet(f"{self.name}-session", self.log, on_error=self._session_task_failed)
        ready = False
        try:
            made = self._connect()
            conn = await made if inspect.isawaitable(made) else made
            await conn.connect(timeout_s=self._connect_timeout_s)
            self._conn = conn
            self.connects += 1
            filters = dict(self._subscriptions())
            if self.requester is not None:
                filters[self.requester.reply_topic] = 1
            if filters:
                await conn.subscribe(*filters.items(), timeout_s=self._connect_timeout_s)
            if self._setup is not None:
                await self._setup(conn, session_tasks)
            ready = True
            self._connected.set()
            await self._read(conn, self.connects)
            self.last_error = f"connection lost ({conn.closed.result() if conn.closed else '?'})"
        except asyncio.CancelledError:
            raise
        except LinkError as exc:
            self.last_error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug in setup or the factory must not end the link
            self.last_error = f"setup failed: {exc!r}"
            self.log.error("%s: connection setup failed", self.name, exc_info=exc)
        finally:
            self._connected.clear()
            self._conn = None
            await session_tasks.close()
            if self.requester is not None:
                self.requester.fail_all(f"{self.name}: connection lost")
            if conn is not None and not self._stopping:
                try:
                    await conn.close(timeout_s=0.5)
                except Exception as exc:  # noqa: BLE001 - closing a broken connection may fail any way
                    self.log.debug("%s: close failed: %r", self.name, exc)
        return None if ready else self.last_error

    def _session_task_failed(self, exc: BaseException) -> None:
        self.last_error = f"a connection task failed: {exc!r}"
        conn = self._conn
        if conn is not None:
            self._closes.spawn(conn.close(timeout_s=0.5), name=f"{self.name}-close")

    async def _read(self, conn: MqttConnection, session: int) -> None:
        async for msg in conn.messages():
            if self.requester is not None and self.requester.take_reply(msg):
                continue
            if self._handler is None:
                continue
            msg.session = session
            if self._queue.full():
                self.waits += 1
            await self._queue.put(msg)

    async def _work(self) -> None:
        while True:
            msg = await self._queue.get()
            try:
                result = self._handler(msg) if self._handler is not None else None
                if inspect.isawaitable(result):
                    await result
                self.handled += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad message never ends the loop
                self.failed += 1
                if self.failed <= _LOG_FIRST or self.failed % _LOG_EVERY == 0:
                    self.log.error(
                        "%s: handler for %s failed (%d so far): %r",
                        self.name,
                        msg.topic[:120],
                        self.failed,
                        exc,
                        exc_info=exc,
                    )
