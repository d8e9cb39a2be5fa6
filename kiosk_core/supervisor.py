"""The one device supervisor: open a device, serve it until it fails, say why, back off, open it again.

``DeviceSupervisor`` is the policy, and holds no I/O: it counts the failures in a row, draws the
delay before the next attempt from ``backoff.equal_jitter`` (local devices: never an immediate
retry), forgets the count once a session has stayed good for ``good_session_s``, keeps the device's
``Health`` (``ok`` / ``degraded`` / ``missing`` with a reason a technician can act on) and rate-limits
the log: the first failure of a run, then every ``log_every``-th. An exception the device is not
known to raise (``is_device_error`` says no) is a bug: it is logged with its traceback, shows in
health (degraded, unless the driver's ``classify`` words it otherwise), and is retried with backoff
like any failure. Nothing ends the supervision but a stop.

Two thin runners drive one such policy, for the two ways a driver can be written:

* ``supervise(policy, session)``: a coroutine for an asyncio task; it ends only by cancellation.
* ``SupervisorThread(policy, session, stop=...)``: a thread for blocking SDKs (PyAV, picamera2),
  stopped by a ``threading.Event`` that the session also watches between blocking steps.
  ``capture_session`` makes its session for a device read as a generator (frames, sample blocks).

A *session* is one opening of the device: it opens it, calls ``policy.ok()`` once the device has
proven itself (identified, first frame), serves it, and raises when the device is lost. A session
that returns while no stop is asked counts as a loss too. ``close`` (optional) runs after every
session, however it ended, and before the backoff wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import NoReturn, TypeVar

from kiosk_core.backoff import equal_jitter
from kiosk_core.errors import DeviceMissing, DeviceTimeout, KioskError
from kiosk_core.health import Health, HealthStatus

T = TypeVar("T")

# classify(exc, serving) -> the health a failure leaves the device in; serving is True when the
# session had called ok() (the device was lost while in use) and False when it failed to open.
Classify = Callable[[Exception, bool], Health]


def default_is_device_error(exc: Exception) -> bool:
    """A failure the firmware raises on purpose (its error tree), as opposed to a bug."""
    return isinstance(exc, KioskError)


class DeviceSupervisor:
    """The policy one supervised device follows; see the module docstring.

    ``device`` names it in log lines and in the reason of a bug (``"card reader"``, ``"camera
    room"``). ``classify`` maps an exception to the health it leaves (default: a ``DeviceMissing`` or
    ``DeviceTimeout`` is missing, another firmware error degraded, both with the error's message).
    Its answer for a bug is used as is, so a driver may keep its own wording; the default says
    "internal error in the <device> driver". Not locked: one runner writes, anyone may read
    ``health``.
    """

    def __init__(
        self,
        device: str,
        *,
        base_s: float,
        cap_s: float,
        classify: Classify | None = None,
        is_device_error: Callable[[Exception], bool] = default_is_device_error,
        good_session_s: float = 10.0,
        log_every: int = 10,
        logger: logging.Logger | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        health: Health | None = None,
    ) -> None:
        if log_every < 1:
            raise ValueError("log_every must be at least 1")
        self.device = device
        self.base_s, self.cap_s = base_s, cap_s
        self.good_session_s = good_session_s
        self.log_every = log_every
        self.log = logger or logging.getLogger("kiosk.supervisor")
        self._classify = classify
        self._is_device_error = is_device_error
        self._rng = rng or random.Random()
        self._clock = clock
        self.health = health or Health(HealthStatus.MISSING, "not started")
        #: failures in a row, without a good session between: the backoff exponent of the next wait
        self.failures = 0
        #: every failure since this policy was made (a device's "reconnects"/"reopens" figure)
        self.total_failures = 0
        #: how many of those were bugs
        self.bugs = 0
        self._ok_since: float | None = None  # when the current session proved itself; None: not yet

    # --- what a session reports --------------------------------------------------------------------

    def ok(self, reason: str = "") -> None:
        """The device works (identified, a frame arrived, a poll answered). Cheap when nothing changes,
        so a capture loop may call it per frame."""
        if self._ok_since is None:
            self._ok_since = self._clock()
        previous = self.health
        if previous.status is HealthStatus.OK and previous.reason == reason:
            return
        self.health = Health(HealthStatus.OK, reason)
        if previous.status is not HealthStatus.OK:
            after = f" again after {self.failures} failure(s)" if self.failures else ""
            self.log.info("%s ok%s%s", self.device, f": {reason}" if reason else "", after)

    def set_health(self, status: HealthStatus, reason: str) -> None:
        """A change seen while the session goes on (noisy polls, a refused command): not a failure, so
        no backoff and no count. Logged when the status changes."""
        if status is HealthStatus.OK:
            self.ok(reason)
            return
        previous = self.health
        if (previous.status, previous.reason) == (status, reason):
            return
        self.health = Health(status, reason)
        if status is not previous.status:
            self.log.warning("%s %s: %s", self.device, status, reason)

    def failed(self, exc: Exception) -> float:
        """The session ended with ``exc``. Updates health and counts, logs (rate-limited), and returns
        the seconds to wait before the next attempt."""
        ok_since, self._ok_since = self._ok_since, None
        serving = ok_since is not None
        if ok_since is not None and self._clock() - ok_since >= self.good_session_s:
            self.failures = 0  # a good session: the next wait starts from the base again
        try:
            bug = not self._is_device_error(exc)
        except Exception:  # noqa: BLE001 - a broken predicate: treat it as a bug, and say so
            self.log.exception("%s: could not tell whether %r is a device error", self.device, exc)
            bug = True
        health = self._health_of(exc, serving)
        delay = equal_jitter(self.failures, self.base_s, self.cap_s, self._rng)
        self.failures += 1
        self.total_failures += 1
        if bug:
            self.bugs += 1
        if (health.status, health.reason) != (self.health.status, self.health.reason):
            self.health = health
        args = (self.device, self.health.status, self.health.reason, self.failures, delay)
        if self.failures == 1 or self.failures % self.log_every == 0:
            if bug:
                self.log.error(
                    "%s %s after an unexpected error: %s (failure %d in a row; next attempt in %.2f s)",
                    *args,
                    exc_info=exc,
                )
            else:
                self.log.warning("%s %s: %s (failure %d in a row; next attempt in %.2f s)", *args)
        else:
            self.log.debug("%s %s: %s (failure %d in a row; next attempt in %.2f s)", *args)
        return delay

    def reset(self, reason: str) -> None:
        """Forget the failures in a row and report ``missing`` with ``reason``, quietly: for starting
        and stopping on purpose, which are not worth a warning."""
        self.failures = 0
        self._ok_since = None
        if self.health.status is not HealthStatus.MISSING or self.health.reason != reason:
            self.health = Health(HealthStatus.MISSING, reason)

    # --- for the runners ---------------------------------------------------------------------------

    def ended(self) -> DeviceMissing:
        """The failure a session that returned on its own stands for."""
        return DeviceMissing(f"{self.device}: the device stopped without an error (session ended)")

    def close_failed(self, exc: BaseException) -> None:
        self.log.warning("%s: could not close the device: %s", self.device, exc, exc_info=exc)

    def _health_of(self, exc: Exception, serving: bool) -> Health:
        if self._classify is not None:
            try:
                return self._classify(exc, serving)
            except Exception:  # noqa: BLE001 - a bug in the driver's classify must not end the supervision
                self.log.exception("%s: could not classify %r", self.device, exc)
        return self._default_health(exc)

    def _default_health(self, exc: Exception) -> Health:
        if isinstance(exc, DeviceMissing | DeviceTimeout):
            return Health(HealthStatus.MISSING, str(exc))
        if isinstance(exc, KioskError):
            return Health(HealthStatus.DEGRADED, str(exc))
        return Health(
            HealthStatus.DEGRADED,
            f"internal error in the {self.device} driver: {type(exc).__name__}: {exc} (see the log)",
        )


# --- the asyncio runner ------------------------------------------------------------------------------


async def wait_or_wake(seconds: float, wake: asyncio.Event | None = None) -> bool:
    """Sleep ``seconds``, or less if ``wake`` is set: True if it was. The caller clears ``wake``. Unlike
    ``wait_for`` on Python 3.11, never swallows a cancellation."""
    if wake is None:
        await asyncio.sleep(seconds)
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()
    return wake.is_set()


async def supervise(
    policy: DeviceSupervisor,
    session: Callable[[], Awaitable[None]],
    *,
    close: Callable[[], Awaitable[None]] | None = None,
    wake: asyncio.Event | None = None,
) -> NoReturn:
    """Run ``session`` again and again under ``policy``, until the task is cancelled. ``close`` also
    runs when the cancellation lands inside a session. Setting ``wake`` cuts a backoff wait short (a
    command found the device gone and wants it back now); it is cleared before each wait."""
    while True:
        try:
            await session()
        except Exception as exc:  # noqa: BLE001 - the policy judges it; nothing ends the supervision
            failure: Exception = exc
        else:
            failure = policy.ended()
        finally:
            if close is not None:
                try:
                    await close()
                except Exception as exc:  # noqa: BLE001
                    policy.close_failed(exc)
        delay = policy.failed(failure)
        if wake is not None:
            wake.clear()
        await wait_or_wake(delay, wake)


# --- the thread runner -------------------------------------------------------------------------------


class SupervisorThread:
    """Runs ``session`` again and again under ``policy`` in a daemon thread, until ``stop()``.

    ``stop`` is the event that asks the session to end; pass the one the session already watches.
    A session that fails after the stop was asked is not counted (the stop is its likely cause).
    """

    def __init__(
        self,
        policy: DeviceSupervisor,
        session: Callable[[], None],
        *,
        name: str,
        stop: threading.Event | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.policy = policy
        self.name = name
        self.stopping = stop if stop is not None else threading.Event()
        self._session = session
        self._close = close
        self._thread: threading.Thread | None = None

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread; does nothing while it runs."""
        if self.is_alive():
            return
        self.stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 3.0) -> bool:
        """Ask the thread to end and wait at most ``timeout_s``. Idempotent. False if it is still running
        (a session stuck in a blocking call); called from the thread itself, it cannot wait and says True."""
        self.stopping.set()
        thread, self._thread = self._thread, None
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout_s)
        if thread.is_alive():
            self.policy.log.warning(
                "%s: %s did not stop within %.1f s", self.policy.device, self.name, timeout_s
            )
            return False
        return True

    def _run(self) -> None:
        while not self.stopping.is_set():
            failure = self._one_session()
            if self.stopping.is_set():
                return
            self.stopping.wait(self.policy.failed(failure))

    def _one_session(self) -> Exception:
        try:
            self._session()
        except Exception as exc:  # noqa: BLE001 - the policy judges it; nothing ends the supervision
            return exc
        else:
            return self.policy.ended()
        finally:
            if self._close is not None:
                try:
                    self._close()
                except Exception as exc:  # noqa: BLE001
                    self.policy.close_failed(exc)


def capture_session(
    policy: DeviceSupervisor,
    stop: threading.Event,
    capture: Callable[[], Iterator[T]],
    deliver: Callable[[T], None],
    ended: Callable[[], Exception],
) -> Callable[[], None]:
    """A thread session for a device read through a generator that opens it, yields what it captures
    and releases it in a ``finally``: each item proves the device works (``policy.ok()``) and goes to
    ``deliver``; the generator is closed however the session ends; a stream that ends while no stop
    was asked raises ``ended()``."""

    def session() -> None:
        items = capture()
        try:
            for item in items:
                if stop.is_set():
                    return
                policy.ok()
                deliver(item)
        finally:
            close = getattr(
                items, "close", None
            )  # a generator's: runs its finally, which releases the device
            if close is not None:
                with contextlib.suppress(Exception):  # releasing a failed device must not mask why it failed
                    close()
        if not stop.is_set():
            raise ended()

    return session


def capture_thread(
    device: str,
    *,
    thread: str,
    stop: threading.Event,
    capture: Callable[[], Iterator[T]],
    deliver: Callable[[T], None],
    ended: Callable[[], Exception],
    base_s: float,
    cap_s: float,
    classify: Classify | None = None,
    is_device_error: Callable[[Exception], bool] = default_is_device_error,
    logger: logging.Logger | None = None,
) -> SupervisorThread:
    """The supervised capture thread of a device read through a generator (camera, microphone):
    its policy (``.policy``) starts ``missing`` ("not opened"), its session is ``capture_session``."""
    policy = DeviceSupervisor(
        device,
        base_s=base_s,
        cap_s=cap_s,
        classify=classify,
        is_device_error=is_device_error,
        logger=logger,
        health=Health(HealthStatus.MISSING, "not opened"),
    )
    session = capture_session(policy, stop, capture, deliver, ended)
    return SupervisorThread(policy, session, name=thread, stop=stop)
