"""The one frame-source interface ``edge_media`` reads cameras through.

A ``FrameSource`` runs its device in a capture thread (PyAV and picamera2 block) and hands frames over
a small bounded queue. Each frame comes with its capture time on the ``time.monotonic()`` clock, taken
from the device's own timestamps where it has them, and the time it reached the queue. The queue drops
the oldest frame when full (a live camera must never stall its driver; drops are counted), except in
``backpressure`` mode, used by benchmarks and file sources, where the capture thread waits instead.

Lost devices are reopened with exponential backoff and jitter; ``health()`` says ``missing`` with the
reason meanwhile. ``close()`` is idempotent and bounded in time.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drivers.camera.errors import CameraError, CameraMissing, translate
from kiosk_core.health import Health, HealthStatus
from kiosk_core.supervisor import capture_thread

if TYPE_CHECKING:
    import av

log = logging.getLogger("kiosk.camera")


@dataclass(frozen=True, slots=True)
class CapturedFrame:
    frame: av.VideoFrame
    t_capture: float  # monotonic seconds, from the device's timestamp
    t_arrival: float  # monotonic seconds when the frame reached the queue
    seq: int


class DeviceClock:
    """Maps a device's timestamps (seconds on its own clock) onto ``time.monotonic()``.

    The first frame anchors the offset; it is re-anchored if the device clock jumps (a timestamp in
    the future, or more than ``max_lag_s`` behind), so a camera that resets its counter after a
    replug cannot push capture times far from the truth.
    """

    def __init__(self, max_lag_s: float = 1.0) -> None:
        self.max_lag_s = max_lag_s
        self.offset: float | None = None

    def to_monotonic(self, device_s: float, now: float) -> float:
        t = device_s + self.offset if self.offset is not None else None
        if t is None or t > now + 0.005 or t < now - self.max_lag_s:
            self.offset = now - device_s
            t = now
        return t


class KernelClock:
    """Maps kernel frame timestamps (seconds) onto ``time.monotonic()``, keeping the capture latency.

    V4L2 buffers are stamped by the kernel, nearly always on ``CLOCK_MONOTONIC``
    (``V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC``; the clock ``time.monotonic()`` reads on Linux). FFmpeg's
    v4l2 demuxer passes them on untouched with its default ``ts`` mode; ``ts=abs``/``mono2abs`` turn
    them into wall-clock time through a smoothing filter. picamera2's ``SensorTimestamp`` is the same
    kind of kernel stamp. The first frame decides which clock the stamps are on, the way FFmpeg's
    ``init_convert_timestamp`` does (libavdevice/v4l2.c: within 10 s behind to 1 s ahead of "now"):

    - ``monotonic``: used as they are;
    - ``wall``: moved onto the monotonic clock by the current wall-minus-monotonic offset;
    - ``unknown`` (a device counter, a clock from another boot): ``DeviceClock`` anchors them at the
      first frame's arrival, so the stream keeps its cadence but the latency before it is not known.

    A stamp that later falls outside ``[now - max_lag_s, now]`` (a stepped wall clock, a replugged
    device) is handed to the ``DeviceClock`` for that frame instead. Times never exceed ``now``.
    """

    WINDOW_BEHIND_S = 10.0
    WINDOW_AHEAD_S = 1.0

    def __init__(self, max_lag_s: float = 1.0) -> None:
        self.max_lag_s = max_lag_s
        self.kind: str | None = None  # "monotonic" | "wall" | "unknown", decided by the first frame
        self.fallback = DeviceClock(max_lag_s)
        self.fallbacks = 0  # frames whose stamp was implausible

    @classmethod
    def classify(cls, stamp_s: float, now_mono: float, now_wall: float) -> str:
        def near(now: float) -> bool:
            return now - cls.WINDOW_BEHIND_S <= stamp_s <= now + cls.WINDOW_AHEAD_S

        if near(now_mono):
            return "monotonic"
        if near(now_wall):
            return "wall"
        return "unknown"

    def to_monotonic(self, stamp_s: float, now_mono: float, now_wall: float) -> float:
        if self.kind is None:
            self.kind = self.classify(stamp_s, now_mono, now_wall)
        if self.kind == "unknown":
            return min(self.fallback.to_monotonic(stamp_s, now_mono), now_mono)
        t = stamp_s if self.kind == "monotonic" else stamp_s - (now_wall - now_mono)
        if now_mono - self.max_lag_s <= t <= now_mono + 0.005:
            return min(t, now_mono)
        self.fallbacks += 1
        return min(self.fallback.to_monotonic(stamp_s, now_mono), now_mono)


class FrameSource(ABC):
    """A camera, seen as a stream of ``CapturedFrame``. Subclasses implement ``_capture()``."""

    kind = "camera"

    def __init__(
        self,
        name: str,
        *,
        backend: str,
        model: str,
        framerate: float,
        size: tuple[int, int],
        queue_frames: int = 4,
        backpressure: bool = False,
        reopen_base_s: float = 0.25,
        reopen_cap_s: float = 5.0,
    ) -> None:
        self.name = name
        self.backend = backend
        self.model = model or f"generic {backend}"
        self.framerate = framerate
        self.size = size
        self.backpressure = backpressure
        self.reopen_base_s, self.reopen_cap_s = reopen_base_s, reopen_cap_s
        self._queue: collections.deque[CapturedFrame] = collections.deque(maxlen=max(1, queue_frames))
        self._cond = threading.Condition()
        self._stop = threading.Event()  # subclasses' _capture() watches it between frames
        self._runner = capture_thread(
            f"camera {name}",
            thread=f"camera-{name}",
            stop=self._stop,
            capture=self._capture,
            deliver=lambda item: self._deliver(*item),
            ended=lambda: CameraMissing(f"camera {self.name}: the stream ended", device=self.name),
            base_s=reopen_base_s,
            cap_s=reopen_cap_s,
            classify=self._classify,
            is_device_error=_is_device_error,
            logger=log,
        )
        self._supervisor = self._runner.policy
        self._listeners: list[Callable[[], None]] = []
        self._latest: CapturedFrame | None = None
        self._seq = 0
        self.frames_in = 0
        self.dropped = 0
        self._fps_window: collections.deque[float] = collections.deque(maxlen=64)

    @property
    def frame_interval(self) -> float:
        return 1.0 / self.framerate

    # --- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        """Start capturing in the background. Returns at once; a missing device shows in ``health()``."""
        if self._runner.is_alive():
            return
        self._supervisor.reset("opening")
        self._runner.start()

    def close(self, timeout_s: float = 3.0) -> None:
        """Stop capturing and release the device. Idempotent; waits at most ``timeout_s``."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._runner.stop(timeout_s)
        self._supervisor.reset("closed")

    @property
    def is_open(self) -> bool:
        return self._runner.is_alive() and not self._stop.is_set()

    def __enter__(self) -> FrameSource:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- consumption -----------------------------------------------------------------------------

    def add_listener(self, wake: Callable[[], None]) -> None:
        """``wake()`` is called from the capture thread after each frame; it must not block."""
        self._listeners.append(wake)

    def remove_listener(self, wake: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(wake)

    def get(self, timeout: float | None = None) -> CapturedFrame | None:
        """The oldest queued frame, waiting up to ``timeout`` seconds; None if none came."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue:
                if self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame = self._queue.popleft()
            self._cond.notify_all()
            return frame

    def drain(self) -> list[CapturedFrame]:
        """Every queued frame, oldest first, without waiting."""
        with self._cond:
            frames = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        return frames

    def latest(self) -> CapturedFrame | None:
        """The newest frame captured (queued or not), for snapshots."""
        return self._latest

    async def frames(self, timeout_s: float = 1.0) -> AsyncIterator[CapturedFrame]:
        """Async iterator over frames until the source is closed (waits in a worker thread)."""
        while self.is_open:
            frame = await asyncio.to_thread(self.get, timeout_s)
            if frame is not None:
                yield frame

    def __aiter__(self) -> AsyncIterator[CapturedFrame]:
        return self.frames()

    # --- health and telemetry --------------------------------------------------------------------

    def health(self) -> Health:
        return self._supervisor.health

    @property
    def reopens(self) -> int:
        return self._supervisor.total_failures

    def fps_in(self) -> float:
        times = list(self._fps_window)
        if len(times) < 2 or time.monotonic() - times[-1] > 1.0:
            return 0.0
        return round((len(times) - 1) / (times[-1] - times[0]), 2)

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "model": self.model,
            "health": self.health().as_dict(),
            "fps_in": self.fps_in(),
            "frames": self.frames_in,
            "dropped": self.dropped,
            "reopens": self.reopens,
            "size": f"{self.size[0]}x{self.size[1]}",
            "framerate": self.framerate,
        }

    # --- the capture thread ----------------------------------------------------------------------

    @abstractmethod
    def _capture(self) -> Iterator[tuple[av.VideoFrame, float]]:
        """Open the device and yield ``(frame, capture time on the monotonic clock)`` until it fails.

        Raise a ``CameraError`` (or let av/OS errors out: they are translated) when the device is
        lost; release the device in a ``finally``. Check ``self._stop`` between frames.
        """

    def _deliver(self, frame: av.VideoFrame, t_capture: float) -> None:
        now = time.monotonic()
        self._seq += 1
        captured = CapturedFrame(frame, t_capture, now, self._seq)
        with self._cond:
            if self.backpressure:
                while len(self._queue) >= (self._queue.maxlen or 1) and not self._stop.is_set():
                    self._cond.wait(0.1)
            elif len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(captured)
            self._cond.notify_all()
        self._latest = captured
        self.frames_in += 1
        self._fps_window.append(now)
        for wake in self._listeners:
            wake()

    def _classify(self, exc: Exception, serving: bool) -> Health:
        return Health(HealthStatus.MISSING, str(translate(exc, device=self.name, what=f"camera {self.name}")))


def _is_device_error(exc: Exception) -> bool:
    """What ``_capture()`` may let out when the device fails (``translate`` words it); anything else is
    a bug."""
    import av  # loaded already: every source decodes through PyAV

    return isinstance(exc, CameraError | OSError | av.FFmpegError)
