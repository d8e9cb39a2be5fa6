"""The two wires of a terminal to the arbiter, behind gpiozero devices (any pin factory: lgpio on a
Pi, ``MockFactory`` in tests, the lab's shared-memory ``wire`` factory).

- ``Heartbeat``: a ``DigitalOutputDevice`` toggled from the asyncio event loop every ``heartbeat_ms``
  while ``should_beat()`` says so. Because the loop itself toggles it, a stalled loop, a ``kill -9``
  or a crash stops it: that is the point.
- ``LeaseInput``: a ``DigitalInputDevice`` sampled by a thread every ~``sample_ms`` that stamps each
  change of level with ``time.monotonic()``. The loop reads the last edges (``edges()``); an edge is
  also handed to the loop (``on_edge``) so a grant is noticed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from appliance.failover.lease import holds_lease

log = logging.getLogger("kiosk.failover.lines")


class LinesUnavailable(RuntimeError):
    """A pin could not be claimed (not a Pi, the pin in use, no such backend)."""


def pin_factory(gpio_config: Any) -> Any:
    """The pin factory of ``[drivers.gpio]``'s backend, made the way the GPIO driver makes it."""
    from drivers.gpio import driver

    if gpio_config is None:
        return driver.make_pin_factory("pi")
    return driver.make_pin_factory(gpio_config.backend, gpio_config)


class Heartbeat:
    def __init__(
        self, pin: int, interval_s: float, should_beat: Callable[[], bool], *, factory: Any = None
    ) -> None:
        from gpiozero import DigitalOutputDevice
        from gpiozero.exc import GPIOZeroError

        try:
            self.device = DigitalOutputDevice(pin, pin_factory=factory)
        except (GPIOZeroError, OSError, RuntimeError, ValueError) as exc:
            raise LinesUnavailable(f"heartbeat line on GPIO{pin}: {exc}") from exc
        self.interval_s = interval_s
        self.should_beat = should_beat
        self.toggles = 0
        self.beating = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="failover-heartbeat")

    async def _run(self) -> None:
        next_at = time.monotonic()
        while True:
            beat = self.should_beat()
            if beat:
                self.device.toggle()
                self.toggles += 1
            elif self.beating:
                log.warning("heartbeat stopped")
            if beat and not self.beating:
                log.info("heartbeat running (every %.0f ms)", self.interval_s * 1000)
            self.beating = beat
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:  # the loop was held up: no burst of catch-up toggles
                next_at, delay = time.monotonic(), 0
            await asyncio.sleep(delay)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            self.device.close()


class LeaseInput:
    def __init__(
        self,
        pin: int,
        sample_s: float,
        *,
        factory: Any = None,
        on_edge: Callable[[float], None] | None = None,
    ) -> None:
        from gpiozero import DigitalInputDevice
        from gpiozero.exc import GPIOZeroError

        try:
            self.device = DigitalInputDevice(pin, pull_up=None, active_state=True, pin_factory=factory)
        except (GPIOZeroError, OSError, RuntimeError, ValueError) as exc:
            raise LinesUnavailable(f"lease line on GPIO{pin}: {exc}") from exc
        self.sample_s = sample_s
        self._on_edge = on_edge
        self._edges: deque[float] = deque(maxlen=4)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._sample, name="failover-lease", daemon=True)
        self.edge_count = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread.start()

    def _sample(self) -> None:
        try:
            level = self.device.value
        except Exception:  # noqa: BLE001 - closed under us
            return
        while not self._stop.wait(self.sample_s):
            try:
                now_level = self.device.value
            except Exception:  # noqa: BLE001 - the device closed while stopping
                return
            if now_level == level:
                continue
            t = time.monotonic()
            level = now_level
            with self._lock:
                self._edges.append(t)
                self.edge_count += 1
            if self._on_edge is not None and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed
                    self._loop.call_soon_threadsafe(self._on_edge, t)

    def edges(self) -> tuple[float, ...]:
        with self._lock:
            return tuple(self._edges)

    def holds(self, lease_s: float, now: float | None = None) -> bool:
        """The lease rule (``lease.holds_lease``) on the edges seen so far, at ``now`` (default: this
        instant, read after the edges)."""
        edges = self.edges()
        return holds_lease(edges, time.monotonic() if now is None else now, lease_s)

    def last_edge(self) -> float | None:
        with self._lock:
            return self._edges[-1] if self._edges else None

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(1)
        with contextlib.suppress(Exception):
            self.device.close()
