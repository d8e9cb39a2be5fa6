"""The one device supervisor: its policy (backoff, reset after a good session, health, rate-limited log)
and its two runners (asyncio and thread), driven by small fake devices with a seeded random."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time

import pytest

from kiosk_core.backoff import equal_jitter
from kiosk_core.errors import DeviceMissing, DriverError, KioskError
from kiosk_core.health import Health, HealthStatus
from kiosk_core.supervisor import DeviceSupervisor, SupervisorThread, capture_session, supervise

pytestmark = pytest.mark.timeout(10)

LOGGER = "test.supervisor"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def policy(**kwargs: object) -> DeviceSupervisor:
    kwargs.setdefault("base_s", 0.5)
    kwargs.setdefault("cap_s", 8.0)
    kwargs.setdefault("rng", random.Random(7))
    kwargs.setdefault("logger", logging.getLogger(LOGGER))
    return DeviceSupervisor("test device", **kwargs)  # type: ignore[arg-type]


def unplugged() -> DeviceMissing:
    return DeviceMissing("test device: not found on /dev/ttyTEST0: check it is plugged in")


async def until(predicate, within: float = 3.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def wait_until(predicate, within: float = 3.0, what: str = "condition") -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


# --- the policy ------------------------------------------------------------------------------------


def test_delays_grow_from_the_base_double_and_stop_at_the_cap():
    sup = policy(base_s=0.5, cap_s=8.0, rng=random.Random(3))
    delays = [sup.failed(unplugged()) for _ in range(9)]
    twin = random.Random(3)  # the same draws equal_jitter makes: the policy adds nothing of its own
    assert delays == [equal_jitter(n, 0.5, 8.0, twin) for n in range(9)]
    for n, d in enumerate(delays):
        ceiling = min(8.0, 0.5 * 2**n)
        assert ceiling / 2 <= d <= ceiling, (n, d)
    assert delays[0] <= 0.5 and min(delays[4:]) >= 4.0  # capped from the fifth on, never an instant retry
    assert sup.failures == 9 and sup.total_failures == 9


def test_the_count_starts_again_after_a_good_session_but_not_after_a_flap():
    clock = Clock()
    sup = policy(base_s=0.5, cap_s=8.0, good_session_s=10.0, clock=clock)
    for _ in range(4):
        sup.failed(unplugged())
    sup.ok()  # opened, but lost again within a second: a flapping cable keeps backing off
    clock.now += 1.0
    assert sup.failed(unplugged()) >= 4.0 and sup.failures == 5
    sup.ok()
    clock.now += 10.0  # served for the whole good_session_s
    assert sup.failed(unplugged()) <= 0.5 and sup.failures == 1
    assert sup.total_failures == 6


def test_health_follows_what_happened_with_the_reason():
    sup = policy()
    assert (sup.health.status, sup.health.reason) == (HealthStatus.MISSING, "not started")
    sup.failed(unplugged())
    assert sup.health.status is HealthStatus.MISSING and "check it is plugged in" in sup.health.reason
    sup.failed(DriverError("test device answers, but not in its protocol: check the baud rate"))
    assert sup.health.status is HealthStatus.DEGRADED and "baud rate" in sup.health.reason
    sup.ok("SAM 05.01-20230101")
    assert (sup.health.status, sup.health.reason) == (HealthStatus.OK, "SAM 05.01-20230101")
    since = sup.health.since
    sup.ok("SAM 05.01-20230101")
    assert sup.health.since == since  # no news: the same Health, so "since" stays
    sup.set_health(HealthStatus.DEGRADED, "3 failed polls in a row")
    assert sup.health.status is HealthStatus.DEGRADED and sup.failures == 2  # noted, not counted
    sup.reset("stopped")
    assert sup.health.status is HealthStatus.MISSING and sup.health.reason == "stopped"


def test_classify_is_told_whether_the_device_had_opened():
    seen: list[bool] = []

    def classify(exc: Exception, serving: bool) -> Health:
        seen.append(serving)
        return Health(HealthStatus.DEGRADED, f"{'in use' if serving else 'opening'}: {exc}")

    sup = policy(classify=classify)
    sup.failed(unplugged())
    sup.ok()
    sup.failed(unplugged())
    assert seen == [False, True] and sup.health.reason.startswith("in use: ")


def test_a_classify_that_fails_falls_back_to_the_default_health(caplog):
    def classify(exc: Exception, serving: bool) -> Health:
        raise AttributeError("classify bug")

    sup = policy(classify=classify)
    caplog.set_level(logging.ERROR, logger=LOGGER)
    assert 0.25 <= sup.failed(unplugged()) <= 0.5
    assert sup.health.status is HealthStatus.MISSING and "check it is plugged in" in sup.health.reason
    assert "could not classify" in caplog.records[0].getMessage()


def test_the_log_says_the_first_failure_then_every_nth(caplog):
    clock = Clock()
    sup = policy(log_every=3, clock=clock)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    for _ in range(7):
        sup.failed(unplugged())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.args[3] for r in warnings] == [1, 3, 6]  # the failure count each line reports
    assert "check it is plugged in" in warnings[0].getMessage()
    assert "failure 1 in a row; next attempt in" in warnings[0].getMessage()
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 4  # the rest, for a bench
    caplog.clear()
    sup.ok()
    clock.now += 60
    sup.failed(unplugged())  # a new run of failures after a good session is news again
    assert [r.levelname for r in caplog.records] == ["INFO", "WARNING"]
    assert "ok again after 7 failure(s)" in caplog.records[0].getMessage()


def test_a_bug_is_logged_with_its_traceback_and_reported_degraded(caplog):
    sup = policy()
    caplog.set_level(logging.WARNING, logger=LOGGER)
    try:
        {}["sam_id"]
    except KeyError as exc:
        delay = sup.failed(exc)
    assert 0.25 <= delay <= 0.5  # retried with backoff like any failure
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info and record.exc_info[0] is KeyError
    assert "unexpected error" in record.getMessage()
    assert sup.health.status is HealthStatus.DEGRADED
    assert sup.health.reason == "internal error in the test device driver: KeyError: 'sam_id' (see the log)"
    assert sup.bugs == 1
    # a firmware error is a device failure, not a bug: a warning line, no traceback
    caplog.clear()
    sup.failed(KioskError("test device: refused"))
    sup_custom = policy(is_device_error=lambda exc: isinstance(exc, DeviceMissing))
    sup_custom.failed(KioskError("test device: not mine"))
    assert [r.levelno for r in caplog.records] == [logging.ERROR]  # only the one is_device_error refused
    assert sup.bugs == 1 and sup_custom.bugs == 1


# --- the asyncio runner ----------------------------------------------------------------------------


async def test_async_a_crashing_serve_step_is_retried_and_the_supervisor_goes_on(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    sup = policy(base_s=0.01, cap_s=0.02)
    sessions = 0
    closed = 0
    serving = asyncio.Event()

    async def session() -> None:
        nonlocal sessions
        sessions += 1
        sup.ok()
        if sessions <= 2:
            raise ZeroDivisionError("a bug in the serve step")
        serving.set()
        await asyncio.Event().wait()  # serves until cancelled

    async def close() -> None:
        nonlocal closed
        closed += 1

    task = asyncio.create_task(supervise(sup, session, close=close))
    await asyncio.wait_for(serving.wait(), 3)
    assert sessions == 3 and closed == 2 and not task.done()
    assert sup.health.status is HealthStatus.OK and sup.bugs == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info[0] is ZeroDivisionError
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert closed == 3  # the session the cancellation ended is closed too


@pytest.mark.parametrize("where", ["in the session", "in the backoff"])
async def test_async_stop_is_prompt(where):
    sup = policy(base_s=30.0, cap_s=60.0)  # a backoff far longer than the test may take
    started = asyncio.Event()
    closed = asyncio.Event()

    async def session() -> None:
        started.set()
        if where == "in the backoff":
            raise unplugged()
        await asyncio.sleep(30)

    async def close() -> None:
        closed.set()

    task = asyncio.create_task(supervise(sup, session, close=close))
    await asyncio.wait_for(started.wait(), 1)
    await asyncio.sleep(0)  # let a failing session reach its backoff
    t0 = time.monotonic()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled() and closed.is_set()
    assert time.monotonic() - t0 < 0.2


async def test_async_wake_cuts_the_backoff_short_and_a_returning_session_counts_as_lost():
    sup = policy(base_s=30.0, cap_s=60.0)
    wake = asyncio.Event()
    sessions = 0

    async def session() -> None:
        nonlocal sessions
        sessions += 1  # returns at once: the device went away without saying why

    task = asyncio.create_task(supervise(sup, session, wake=wake))
    try:
        await until(lambda: sessions == 1, what="first session")
        await asyncio.sleep(0.02)
        assert sessions == 1  # waiting out a 15-30 s backoff
        assert sup.health.status is HealthStatus.MISSING and "session ended" in sup.health.reason
        wake.set()
        await until(lambda: sessions == 2, within=0.5, what="a session right after the wake")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_async_a_failing_close_is_logged_and_does_not_end_the_supervision(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    sup = policy(base_s=0.01, cap_s=0.02)
    sessions = 0

    async def session() -> None:
        nonlocal sessions
        sessions += 1
        raise unplugged()

    async def close() -> None:
        raise OSError("close failed")

    task = asyncio.create_task(supervise(sup, session, close=close))
    try:
        await until(lambda: sessions >= 3, what="sessions go on")
        assert any("could not close" in r.getMessage() for r in caplog.records)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --- the thread runner -----------------------------------------------------------------------------


class FakeCapture:
    """A thread-side device: fails ``crashes`` times with a bug, then delivers frames until stopped."""

    def __init__(self, crashes: int, *, base_s: float = 0.01) -> None:
        self.stop = threading.Event()
        self.supervisor = policy(base_s=base_s, cap_s=base_s * 2)
        self.runner = SupervisorThread(
            self.supervisor, self.session, name="fake-capture", stop=self.stop, close=self.close
        )
        self.crashes = crashes
        self.sessions = 0
        self.closes = 0
        self.frames = 0

    def session(self) -> None:
        self.sessions += 1
        if self.sessions <= self.crashes:
            raise TypeError("a bug in the capture loop")
        while not self.stop.is_set():
            self.supervisor.ok()
            self.frames += 1
            self.stop.wait(0.005)

    def close(self) -> None:
        self.closes += 1


def test_thread_a_crashing_serve_step_is_retried_then_stop_ends_the_thread(caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    cap = FakeCapture(crashes=2)
    cap.runner.start()
    cap.runner.start()  # already running: no second thread
    try:
        wait_until(lambda: cap.frames >= 3, what="frames after two crashes")
        assert cap.sessions == 3 and cap.supervisor.health.status is HealthStatus.OK
        assert cap.supervisor.bugs == 2
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert errors and errors[0].exc_info[0] is TypeError
        assert [t.name for t in threading.enumerate()].count("fake-capture") == 1
    finally:
        assert cap.runner.stop(1.0)
    assert not cap.runner.is_alive() and cap.closes == 3
    assert cap.runner.stop(1.0)  # idempotent
    assert cap.supervisor.total_failures == 2  # ending on a stop is not a failure


@pytest.mark.parametrize("where", ["in the session", "in the backoff"])
def test_thread_stop_is_prompt(where):
    cap = FakeCapture(crashes=1 if where == "in the backoff" else 0, base_s=30.0)
    cap.runner.start()
    if where == "in the backoff":
        wait_until(lambda: cap.supervisor.total_failures == 1, what="the first failure")
    else:
        wait_until(lambda: cap.frames >= 1, what="a frame")
    t0 = time.monotonic()
    assert cap.runner.stop(2.0)
    assert time.monotonic() - t0 < 0.2 and not cap.runner.is_alive()
    assert "fake-capture" not in [t.name for t in threading.enumerate()]


def test_thread_can_be_started_again_after_a_stop():
    cap = FakeCapture(crashes=0)
    cap.runner.start()
    wait_until(lambda: cap.frames >= 1, what="a frame")
    cap.runner.stop(1.0)
    frames = cap.frames
    cap.runner.start()
    wait_until(lambda: cap.frames > frames, what="frames after the restart")
    cap.runner.stop(1.0)
    assert cap.sessions == 2 and not cap.runner.is_alive()


def test_a_capture_session_delivers_releases_the_device_and_reports_a_stream_that_ends():
    stop = threading.Event()
    sup = policy(base_s=0.01, cap_s=0.02)
    opened = released = 0
    delivered: list[int] = []

    def capture():
        nonlocal opened, released
        opened += 1
        try:
            yield from range(3)
        finally:
            released += 1

    session = capture_session(
        sup, stop, capture, delivered.append, lambda: DeviceMissing("test device: the stream ended")
    )
    with pytest.raises(DeviceMissing, match="stream ended"):
        session()
    assert delivered == [0, 1, 2] and (opened, released) == (1, 1)
    assert sup.health.status is HealthStatus.OK  # each item proved the device; the policy hears the end

    def capture_until_stopped():
        nonlocal released
        try:
            while True:
                yield 1
                stop.set()  # closing the source while the device still delivers
        finally:
            released += 1

    capture_session(sup, stop, capture_until_stopped, delivered.append, lambda: AssertionError("no"))()
    assert released == 2  # returned without a failure, and released the device


# --- the drivers under the supervisor ----------------------------------------------------------------


async def test_a_bug_in_the_card_readers_poll_is_logged_reported_and_retried(caplog):
    from drivers.card_reader.config import CardReaderConfig
    from drivers.card_reader.driver import CardReader
    from drivers.card_reader.simulator import SamEmulator

    caplog.set_level(logging.WARNING, logger="drivers.card_reader")
    with SamEmulator(seed=1) as emulator:
        reader = CardReader(
            CardReaderConfig(
                port=emulator.port, poll_interval_s=0.01, reconnect_base_s=0.3, reconnect_cap_s=0.3
            )
        )
        real_poll = reader._poll_once
        bugs = 0

        async def buggy_poll() -> None:
            nonlocal bugs
            if bugs < 2:
                bugs += 1
                raise AttributeError("'NoneType' object has no attribute 'photo'")
            await real_poll()

        reader._poll_once = buggy_poll  # type: ignore[method-assign]
        await reader.start(lambda type, data: asyncio.sleep(0))
        try:
            # reported for the backoff (0.15-0.3 s), then reconnected
            await until(lambda: reader.health().status is HealthStatus.DEGRADED, what="degraded")
            assert "internal error in the card reader driver" in reader.health().reason
            await until(
                lambda: reader.stats["connects"] == 3 and reader.health().status is HealthStatus.OK,
                what="ok again after the second bug",
            )
            assert reader.stats["internal_error"] == 2 and bugs == 2
            assert not reader._task.done()
            [error, *_] = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert error.exc_info[0] is AttributeError
        finally:
            await reader.stop()


def test_a_bug_in_a_cameras_capture_thread_is_logged_reported_and_retried(caplog):
    from drivers.camera.synthetic import SyntheticCamera

    caplog.set_level(logging.WARNING, logger="kiosk.camera")
    cam = SyntheticCamera("room_main", "testsrc2=size=160x120:rate=30", framerate=30, size=(160, 120))
    bugs = 0

    def buggy_listener() -> None:
        nonlocal bugs
        if bugs < 1:
            bugs += 1
            raise RuntimeError("listener bug")

    cam.add_listener(buggy_listener)
    cam.open()
    try:
        wait_until(lambda: bugs == 1 and cam.frames_in >= 5, what="frames after the bug")
        assert cam.health().status is HealthStatus.OK and cam.reopens == 1
        [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert error.exc_info[0] is RuntimeError and "camera room_main" in error.getMessage()
    finally:
        cam.close()
    assert not cam.is_open and cam.health().reason == "closed"
    assert not any(t.name == "camera-room_main" for t in threading.enumerate())
