"""V4L2 capture times keep the sensor-to-driver latency (they used to be re-anchored at arrival).

Written from FFmpeg's libavdevice/v4l2.c (FFmpeg/FFmpeg): ``mmap_read_frame`` sets ``pkt->pts`` to the
kernel buffer timestamp in microseconds (time base 1/1000000); ``convert_timestamp`` changes it only
when the ``ts`` option is ``abs`` or ``mono2abs`` (``init_convert_timestamp`` detects a clock by a
window of 10 s behind to 1 s ahead of now and then maps monotonic stamps to the wall clock). The
kernel stamps V4L2 buffers on CLOCK_MONOTONIC (V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC).

No V4L2 device (and no v4l2loopback module) exists on this machine, so the "device" here is a
PyAV-produced MJPEG stream, written in real time into a pipe, whose packets carry the stamps the v4l2
demuxer would give: monotonic microseconds (``ts=default``), wall-clock microseconds (``ts=abs``), or
a device counter from zero. The driver's own decode loop (``V4l2Camera._frames``) reads it. Untested
here: the ioctl path itself (real DQBUF stamps, a real UVC camera's clock).
"""

from __future__ import annotations

import os
import threading
import time
from fractions import Fraction

import av
import pytest

from drivers.camera.source import KernelClock
from drivers.camera.v4l2 import TIMESTAMPS, V4l2Camera, demuxer_options

US = Fraction(1, 1_000_000)
SENSOR_TO_DQBUF_S = 0.040  # what the stamps say happened before the buffer reached FFmpeg


class PipeCamera(V4l2Camera):
    """A V4L2 camera whose demuxer is a PyAV NUT stream in a pipe, stamped like the v4l2 demuxer."""

    def __init__(self, clock: str, frames: int = 24) -> None:
        super().__init__("room_main", "/dev/video0", size=(160, 120), framerate=30, reopen_base_s=5)
        self.stamp_clock, self.n = clock, frames
        self.truth: dict[int, float] = {}  # pts (us) -> monotonic time of the "exposure"
        self.producer: threading.Thread | None = None

    def open_container(self):
        r, w = os.pipe()
        self.producer = threading.Thread(target=self._produce, args=(w,), daemon=True)
        self.producer.start()
        # A device has nothing to probe: keep FFmpeg from buffering frames to analyse the stream.
        return av.open(
            os.fdopen(r, "rb", buffering=0),
            format="nut",
            options={"probesize": "32", "analyzeduration": "0", "fpsprobesize": "0"},
        )

    def _produce(self, fd: int) -> None:
        try:
            self._write(fd)
        except (BrokenPipeError, av.FFmpegError):
            pass  # the camera was closed before the stream ended

    def _write(self, fd: int) -> None:
        with os.fdopen(fd, "wb", buffering=0) as f:
            out = av.open(f, "w", format="nut", options={"write_index": "0"})
            st = out.add_stream("mjpeg", rate=30)
            st.width, st.height, st.pix_fmt = 160, 120, "yuvj420p"
            st.time_base = US
            src = av.open("testsrc2=size=160x120:rate=30", format="lavfi")
            counter_origin = None
            for i, frame in enumerate(src.decode(video=0)):
                if i == self.n:
                    break
                time.sleep(1 / 30)
                exposed = time.monotonic() - SENSOR_TO_DQBUF_S
                if self.stamp_clock == "monotonic":
                    stamp = exposed
                elif self.stamp_clock == "wall":
                    stamp = exposed + (time.time() - time.monotonic())
                else:  # a device counter starting near zero
                    counter_origin = exposed if counter_origin is None else counter_origin
                    stamp = 1.0 + exposed - counter_origin
                pts = round(stamp * 1e6)
                self.truth[pts] = exposed
                img = frame.reformat(format="yuvj420p")
                img.pts, img.time_base = pts, US
                for packet in st.encode(img):
                    packet.pts = packet.dts = pts
                    packet.time_base = US
                    out.mux(packet)
            out.close()
            src.close()


def capture(clock: str) -> tuple[PipeCamera, list]:
    cam = PipeCamera(clock)
    cam.open()
    try:
        frames = []
        while len(frames) < 20:
            got = cam.get(timeout=3)
            assert got is not None, cam.health().reason
            frames.append(got)
    finally:
        cam.close()
    return cam, frames[4:]  # past the decoder's start-up


def test_the_demuxer_is_opened_with_kernel_timestamps_and_options_cannot_change_that() -> None:
    opts = demuxer_options("mjpeg", "1280x720", 30, {"ts": "abs", "channel": "0"})
    assert opts["ts"] == "default" == TIMESTAMPS["ts"] and opts["channel"] == "0"


def test_monotonic_kernel_stamps_keep_the_latency_before_the_driver() -> None:
    cam, frames = capture("monotonic")
    assert cam.clock is not None and cam.clock.kind == "monotonic" and cam.clock.fallbacks == 0
    for f in frames:
        exposed = cam.truth[f.frame.pts]
        assert f.t_capture == pytest.approx(exposed, abs=2e-6)  # the stamp itself, not the arrival
        assert f.t_arrival - f.t_capture >= SENSOR_TO_DQBUF_S


def test_wall_clock_stamps_as_ts_abs_gives_them_are_moved_onto_the_monotonic_clock() -> None:
    cam, frames = capture("wall")
    assert cam.clock is not None and cam.clock.kind == "wall"
    for f in frames:
        assert f.t_capture == pytest.approx(cam.truth[f.frame.pts], abs=0.003)
        assert f.t_arrival - f.t_capture >= SENSOR_TO_DQBUF_S - 0.003


def test_stamps_on_an_unknown_clock_keep_their_cadence_anchored_at_arrival() -> None:
    cam, frames = capture("counter")
    assert cam.clock is not None and cam.clock.kind == "unknown"
    steps = [b.t_capture - a.t_capture for a, b in zip(frames, frames[1:], strict=False)]
    truth = [
        cam.truth[b.frame.pts] - cam.truth[a.frame.pts] for a, b in zip(frames, frames[1:], strict=False)
    ]
    # Anchored at the first arrival (whose own delay is unknown), re-anchored when a stamp would run
    # ahead of its arrival: the cadence holds to within that arrival jitter.
    assert steps == pytest.approx(truth, abs=0.01)
    assert all(0 <= f.t_arrival - f.t_capture < 0.5 for f in frames)


def test_kernel_clock_detection_follows_ffmpegs_window() -> None:
    mono, wall = 1000.0, 1_700_000_000.0
    assert KernelClock.classify(mono - 9.9, mono, wall) == "monotonic"
    assert KernelClock.classify(mono + 0.9, mono, wall) == "monotonic"
    assert KernelClock.classify(wall - 0.2, mono, wall) == "wall"
    assert KernelClock.classify(mono - 11, mono, wall) == "unknown"
    assert KernelClock.classify(0.0, mono, wall) == "unknown"


def test_a_stamp_that_jumps_is_not_trusted_and_times_never_run_ahead() -> None:
    clock = KernelClock(max_lag_s=1.0)
    assert clock.to_monotonic(99.96, now_mono=100.0, now_wall=5000.0) == pytest.approx(99.96)
    assert clock.to_monotonic(100.003, now_mono=100.0, now_wall=5000.0) == 100.0  # clamped to now
    # A stamp 5 s behind (a driver hiccup, a replug): anchored at arrival, counted.
    assert clock.to_monotonic(96.0, now_mono=101.0, now_wall=5001.0) == 101.0
    assert clock.fallbacks == 1
    wall = KernelClock()
    assert wall.to_monotonic(4999.95, now_mono=100.0, now_wall=5000.0) == pytest.approx(99.95)
    # The wall clock stepped by an hour (NTP at boot): the offset is taken afresh, no frame in the future.
    assert wall.to_monotonic(4999.98, now_mono=100.03, now_wall=8600.03) <= 100.03
    assert wall.fallbacks == 1
