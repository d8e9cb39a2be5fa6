"""Frame sources: the synthetic camera through real FFmpeg (lavfi), its faults, V4L2 errors, config."""

from __future__ import annotations

import time

import pytest
from pydantic import ValidationError

from drivers.camera.config import CameraConfig, DoccamConfig, parse_size
from drivers.camera.errors import CameraMissing, CameraModeError, translate
from drivers.camera.factory import open_camera
from drivers.camera.source import DeviceClock
from drivers.camera.synthetic import SyntheticCamera
from drivers.camera.timecode import read_timecode_frame
from drivers.camera.v4l2 import V4l2Camera, probe
from edge_media.selector import inspect_frame
from kiosk_core.health import HealthStatus

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = pytest.mark.xdist_group("heavy")

SMALL = "testsrc2=size=160x120:rate=30"


def wait_for(cond, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def camera():
    cam = SyntheticCamera("room_main", SMALL, framerate=30, size=(160, 120))
    cam.open()
    yield cam
    cam.close()


def test_synthetic_camera_delivers_frames_at_its_rate_with_capture_times(camera: SyntheticCamera) -> None:
    frames = [camera.get(timeout=2) for _ in range(12)]
    assert all(f is not None for f in frames)
    times = [f.t_capture for f in frames]
    steps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(abs(s - 1 / 30) < 0.002 for s in steps), steps  # device timestamps, not arrival jitter
    assert all(0 <= f.t_arrival - f.t_capture < 0.05 for f in frames)
    assert frames[0].frame.width == 160 and camera.health().status == HealthStatus.OK
    assert wait_for(lambda: camera.fps_in() > 20)


def test_freeze_repeats_the_picture_and_black_darkens_it(camera: SyntheticCamera) -> None:
    camera.get(timeout=2)
    camera.inject("freeze")
    camera.drain()
    a, b = camera.get(timeout=2), camera.get(timeout=2)
    assert inspect_frame(a.frame)[1] == inspect_frame(b.frame)[1]
    assert b.t_capture > a.t_capture  # time goes on while the picture is stuck
    camera.inject("black")
    camera.drain()
    luma, _ = inspect_frame(camera.get(timeout=2).frame)
    assert luma <= 17
    camera.inject("clear")
    camera.drain()
    x, y = camera.get(timeout=2), camera.get(timeout=2)
    assert inspect_frame(x.frame)[1] != inspect_frame(y.frame)[1]


def test_drop_halves_the_frame_rate(camera: SyntheticCamera) -> None:
    camera.inject("drop")
    camera.drain()
    frames = [camera.get(timeout=2) for _ in range(6)]
    steps = [b.t_capture - a.t_capture for a, b in zip(frames, frames[1:], strict=False)]
    assert all(abs(s - 2 / 30) < 0.003 for s in steps), steps


def test_the_timecode_pattern_stamps_each_frame_with_its_capture_time() -> None:
    cam = SyntheticCamera.from_config(
        "room_main", CameraConfig(backend="synthetic", pattern="timecode", video_size="320x240")
    )
    cam.open()
    try:
        frames = [cam.get(timeout=2) for _ in range(10)]
        received_ms = time.time() * 1000
        assert all(f is not None for f in frames)
        codes = [read_timecode_frame(f.frame) for f in frames]
    finally:
        cam.close()
    assert None not in codes, codes
    assert frames[0].frame.width == 320 and frames[0].frame.format.name == "yuv420p"
    # the clock drawn follows the capture times (30 fps apart), and it is wall-clock milliseconds
    for i in range(1, len(frames)):
        step_ms = (frames[i].t_capture - frames[i - 1].t_capture) * 1000
        assert abs((codes[i] - codes[i - 1]) - step_ms) <= 8, codes
    assert 0 <= received_ms - codes[-1] < 200


def test_unplug_is_missing_with_a_reason_and_replug_recovers(camera: SyntheticCamera) -> None:
    assert camera.get(timeout=2) is not None
    camera.inject("unplug")
    assert wait_for(lambda: camera.health().status == HealthStatus.MISSING)
    assert "unplugged" in camera.health().reason
    camera.drain()
    assert camera.get(timeout=0.3) is None
    camera.inject("replug")
    assert camera.get(timeout=3) is not None
    assert camera.health().status == HealthStatus.OK and camera.reopens >= 1


def test_close_is_idempotent_and_ends_iteration() -> None:
    cam = SyntheticCamera("c", SMALL, framerate=30, size=(160, 120))
    cam.close()
    cam.open()
    cam.open()
    assert cam.get(timeout=2) is not None
    cam.close()
    cam.close()
    assert cam.get(timeout=0.1) is None and cam.health().status == HealthStatus.MISSING


async def test_async_iteration_yields_frames() -> None:
    cam = SyntheticCamera("c", SMALL, framerate=30, size=(160, 120))
    cam.open()
    seen = []
    try:
        async for frame in cam:
            seen.append(frame.seq)
            if len(seen) == 3:
                break
    finally:
        cam.close()
    assert seen == sorted(seen) and len(seen) == 3


def test_a_bad_filtergraph_is_reported_not_raised() -> None:
    cam = SyntheticCamera("c", "nosuchsource=size=10x10", framerate=30, size=(10, 10))
    cam.open()
    try:
        assert wait_for(lambda: "filtergraph" in cam.health().reason)
        assert cam.health().status == HealthStatus.MISSING
    finally:
        cam.close()


def test_a_missing_v4l2_camera_says_check_the_cable(tmp_path) -> None:
    cam = V4l2Camera("room_main", "/dev/video-not-here", size=(640, 480))
    with pytest.raises(CameraMissing, match="check the USB cable"):
        cam.open_container()
    cam.open()
    try:
        assert wait_for(lambda: "check the USB cable" in cam.health().reason)
    finally:
        cam.close()


def test_a_non_camera_file_is_refused_as_a_mode_or_device_error(tmp_path) -> None:
    fake = tmp_path / "video0"
    fake.write_bytes(b"\0" * 64)
    cam = V4l2Camera("room_main", str(fake), size=(640, 480))
    with pytest.raises(Exception) as info:
        cam.open_container()
    assert info.value.__class__.__module__ == "drivers.camera.errors"


def test_probe_of_a_missing_device_is_a_typed_error() -> None:
    with pytest.raises(CameraMissing):
        probe("/dev/video-not-here")


def test_error_translation_names_what_to_do() -> None:
    assert "group 'video'" in str(
        translate(PermissionError(13, "Permission denied"), device="/dev/video0", what="x")
    )
    assert isinstance(
        translate(OSError(22, "Invalid argument"), device="/dev/video0", what="x"), CameraModeError
    )


def test_device_clock_follows_the_device_and_reanchors_after_a_jump() -> None:
    clock = DeviceClock(max_lag_s=1.0)
    assert clock.to_monotonic(100.0, now=5.0) == 5.0
    assert clock.to_monotonic(100.5, now=5.52) == pytest.approx(5.5)
    assert clock.to_monotonic(3.0, now=6.0) == 6.0  # the device counter reset: re-anchored


def test_factory_builds_each_backend() -> None:
    assert isinstance(
        open_camera("a", CameraConfig(backend="synthetic", video_size="320x240")), SyntheticCamera
    )
    assert isinstance(open_camera("b", CameraConfig(device="/dev/video3")), V4l2Camera)
    pi = open_camera("c", CameraConfig(backend="picamera2"))
    pi.open()
    try:
        assert wait_for(lambda: "picamera2 is not installed" in pi.health().reason)
    finally:
        pi.close()


@pytest.mark.parametrize(
    "bad",
    [
        {"video_size": "1280"},
        {"video_size": "99999x1"},
        {"video_size": "1281x720"},
        {"framerate": 0},
        {"device": "rtsp://evil/"},
        {"device": "/dev/video0;rm -rf"},
        {"input_format": "MJPEG PLEASE"},
        {"backend": "gstreamer"},
        {"options": {"Bad-Key": "x"}},
        {"options": {"k": "a\nb"}},
        {"typo": 1},
    ],
)
def test_camera_config_rejects_hostile_values(bad: dict) -> None:
    with pytest.raises(ValidationError):
        CameraConfig(**bad)


def test_every_camera_field_has_a_default() -> None:
    assert CameraConfig().backend == "v4l2" and parse_size(CameraConfig().video_size) == (1280, 720)
    assert parse_size(DoccamConfig().still_size) == (3264, 2448)
    with pytest.raises(ValidationError):
        DoccamConfig(still_size="3264x")
