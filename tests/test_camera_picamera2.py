"""picamera2: options reach the camera the way picamera2 takes them, and padded rows are cut away.

picamera2 cannot be installed here (it needs libcamera), so ``FakePicamera2`` stands in for it. It
follows the real interface, from raspberrypi/picamera2:

- ``picamera2/picamera2.py``: ``Picamera2()`` raises ``IndexError`` when libcamera lists no camera;
  ``create_video_configuration(main=, lores=, raw=, transform=, colour_space=, buffer_count=6,
  controls=, display=, encode=, queue=, sensor=, use_case=)`` returns a dict and rejects stream keys
  other than ``format``/``size``/``stride``/``preserve_ar`` (``_make_initial_stream_config``);
  ``configure()`` must come before ``start()``, fills each stream's ``stride`` from libcamera
  (``_update_stream_config``) and resets the controls to the configuration's; ``stream_configuration
  (name)``; ``camera_controls`` maps a control name to ``(min, max, default)``;
- ``picamera2/controls.py``: ``set_controls`` refuses a control the camera does not advertise
  (``RuntimeError: Control X is not advertised by libcamera``), ``FrameRate`` is a virtual control;
- ``picamera2/request.py``: ``make_array("main")`` of a YUV420 stream is ``(h * 3 // 2, stride)``
  (``_make_array_shared``); ``get_metadata()["SensorTimestamp"]`` in nanoseconds; ``release()``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from drivers.camera.config import CameraConfig
from drivers.camera.errors import CameraModeError, CameraOptionError
from drivers.camera.factory import open_camera
from drivers.camera.picamera2 import Picamera2Api, Picamera2Camera, yuv420_frame
from drivers.camera.picamera2_options import parse_options
from kiosk_core.health import HealthStatus

PI_CONTROLS = {  # what a Camera Module 2 (imx219) advertises, abridged; no autofocus
    "AeEnable": (False, True, None),
    "AwbEnable": (False, True, None),
    "AwbMode": (0, 7, 0),
    "ExposureTime": (75, 11766829, None),
    "AnalogueGain": (1.0, 10.666667, None),
    "Brightness": (-1.0, 1.0, 0.0),
    "Contrast": (0.0, 32.0, 1.0),
    "FrameDurationLimits": (75, 11767556, None),
    "NoiseReductionMode": (0, 4, 0),
}
LATENCY_S = 0.030  # sensor exposure -> request completed


class Transform:
    def __init__(self, hflip: int = 0, vflip: int = 0, transpose: int = 0) -> None:
        self.hflip, self.vflip, self.transpose = bool(hflip), bool(vflip), bool(transpose)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Transform) and vars(self) == vars(other)


class FakeRequest:
    def __init__(self, cam: FakePicamera2) -> None:
        self.cam = cam
        self.released = False

    def make_array(self, name: str):
        cfg = self.cam.camera_config[name]
        (w, h), stride = cfg["size"], cfg["stride"]
        # I420 with every row padded to the stride: picture grey (128), padding zeros, which would
        # show as a dark green stripe on the right if it reached the encoder.
        y_row = bytes([128]) * w + bytes(stride - w)
        c_row = bytes([128]) * (w // 2) + bytes((stride - w) // 2)
        data = bytearray(y_row * h + c_row * (h // 2) * 2)
        return memoryview(data).cast("B", (h * 3 // 2, stride))  # an ndarray's shape and buffer

    def get_metadata(self) -> dict:
        return {"SensorTimestamp": time.monotonic_ns() - int(LATENCY_S * 1e9), "ExposureTime": 10000}

    def release(self) -> None:
        self.released = True


class FakePicamera2:
    instances: list[FakePicamera2] = []

    def __init__(self, controls: dict | None = None, align: int = 64) -> None:
        self.calls: list[tuple] = [("__init__",)]
        self.camera_controls = dict(PI_CONTROLS if controls is None else controls)
        self.align = align
        self.camera_config: dict | None = None
        self.controls: dict = {}
        self.started = False
        FakePicamera2.instances.append(self)

    def create_video_configuration(
        self,
        main=None,  # picamera2's defaults are {} (shared dicts); None here, same meaning
        lores=None,
        raw=None,
        transform=None,
        colour_space=None,
        buffer_count=6,
        controls=None,
        display="main",
        encode="main",
        queue=True,
        sensor=None,
        use_case="video",
    ) -> dict:
        main, controls = main or {}, controls or {}
        self.calls.append(
            (
                "create_video_configuration",
                {"main": main, "controls": controls, "buffer_count": buffer_count}
                | ({"transform": transform} if transform is not None else {})
                | ({} if queue else {"queue": queue}),
            )
        )
        for key in main:
            if key not in ("format", "size", "stride", "preserve_ar"):
                raise ValueError(f"Bad key {key!r}")
        stream = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True, **main}
        return {
            "use_case": use_case,
            "main": stream,
            "controls": dict(controls),
            "buffer_count": buffer_count,
        }

    def configure(self, config: dict) -> None:
        self.calls.append(("configure", config))
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        w, h = config["main"]["size"]
        stride = -(-w // self.align) * self.align  # libcamera pads rows to the ISP's alignment
        self.camera_config = {
            **config,
            "main": {**config["main"], "stride": stride, "framesize": stride * h * 3 // 2},
        }
        self.controls = dict(config["controls"])

    def stream_configuration(self, name: str = "main") -> dict:
        assert self.camera_config is not None
        return self.camera_config[name]

    def set_controls(self, controls: dict) -> None:
        self.calls.append(("set_controls", dict(controls)))
        for name in controls:
            real = "FrameDurationLimits" if name == "FrameRate" else name
            if real not in self.camera_controls:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
        self.controls.update(controls)

    def start(self) -> None:
        self.calls.append(("start",))
        if self.camera_config is None:
            raise RuntimeError("Camera has not been configured")
        self.started = True

    def capture_request(self) -> FakeRequest:
        time.sleep(1 / 30)
        return FakeRequest(self)

    def stop(self) -> None:
        self.calls.append(("stop",))
        self.started = False

    def close(self) -> None:
        self.calls.append(("close",))


def fake_api(**kwargs) -> Picamera2Api:
    return Picamera2Api(Picamera2=lambda: FakePicamera2(**kwargs), Transform=Transform)


def names(cam: FakePicamera2) -> list[str]:
    return [c[0] for c in cam.calls]


def run(camera: Picamera2Camera, frames: int = 3) -> list:
    camera.open()
    try:
        got = [camera.get(timeout=3) for _ in range(frames)]
        assert all(g is not None for g in got), camera.health().reason
    finally:
        camera.close()
    return got


@pytest.fixture(autouse=True)
def _fresh() -> None:
    FakePicamera2.instances.clear()


def test_configuration_options_go_into_the_configuration_and_controls_to_set_controls() -> None:
    cfg = CameraConfig(
        backend="picamera2",
        video_size="1280x720",
        framerate=25,
        options={
            "hflip": True,
            "vflip": "true",
            "buffer_count": 4,
            "awb_mode": "daylight",
            "exposure_time": 10000,
            "analogue_gain": 2.0,
        },
    )
    camera = open_camera("room_main", cfg, api=lambda: fake_api())
    run(camera)
    (cam,) = FakePicamera2.instances
    assert names(cam)[:5] == ["__init__", "create_video_configuration", "configure", "set_controls", "start"]
    assert names(cam)[-2:] == ["stop", "close"]
    create = cam.calls[1][1]
    assert create["main"] == {"size": (1280, 720), "format": "YUV420"}
    assert create["controls"] == {"FrameRate": 25.0} and create["buffer_count"] == 4
    assert create["transform"] == Transform(hflip=1, vflip=1)
    # Controls after configure() (which resets them to the configuration's), as libcamera types.
    assert cam.calls[3][1] == {"AwbMode": 5, "ExposureTime": 10000, "AnalogueGain": 2.0}
    assert cam.controls == {"FrameRate": 25.0, "AwbMode": 5, "ExposureTime": 10000, "AnalogueGain": 2.0}


def test_without_options_nothing_but_the_mode_is_asked() -> None:
    run(Picamera2Camera("room_main", api=lambda: fake_api()), frames=1)
    (cam,) = FakePicamera2.instances
    assert "set_controls" not in names(cam)
    assert "transform" not in cam.calls[1][1] and cam.calls[1][1]["buffer_count"] == 6


def test_a_width_not_aligned_to_the_stride_leaves_no_stripe() -> None:
    camera = Picamera2Camera("room_main", size=(1000, 750), api=lambda: fake_api())
    frames = run(camera, frames=2)
    assert camera.stream["stride"] == 1024  # the fake pads like libcamera: 1000 -> 1024
    frame = frames[-1].frame
    assert (frame.width, frame.height, frame.format.name) == (1000, 750, "yuv420p")
    rgb = frame.reformat(format="rgb24").planes[0]
    for row in (0, 374, 749):
        line = bytes(rgb)[row * rgb.line_size : row * rgb.line_size + 1000 * 3]
        # Grey to the last column: the zero padding would be (0, 135, 0)-ish green here.
        assert min(line) >= 110 and max(line) <= 150, (row, line[-12:])


@pytest.mark.parametrize("width, height, stride", [(1000, 750, 1024), (1280, 720, 1280), (642, 480, 704)])
def test_yuv420_planes_are_cut_to_the_width_whatever_the_frame_pitch(width, height, stride) -> None:
    y = b"".join(bytes([r % 200 + 20]) * width + b"\xff" * (stride - width) for r in range(height))
    u = (bytes([90]) * (width // 2) + b"\xff" * ((stride - width) // 2)) * (height // 2)
    v = (bytes([160]) * (width // 2) + b"\xff" * ((stride - width) // 2)) * (height // 2)
    frame = yuv420_frame(memoryview(y + u + v).cast("B", (height * 3 // 2, stride)), width, height, stride)
    yp, up, vp = frame.planes
    for r in (0, height // 2, height - 1):
        row = bytes(yp)[r * yp.line_size : r * yp.line_size + width]
        assert row == bytes([r % 200 + 20]) * width
    assert bytes(up)[: width // 2] == bytes([90]) * (width // 2)
    assert bytes(vp)[(height // 2 - 1) * vp.line_size :][: width // 2] == bytes([160]) * (width // 2)


@pytest.mark.parametrize(
    "buffer, width, height, stride, words",
    [
        (bytes(1024 * 750), 1000, 750, 1024, "needs"),  # the chroma is missing
        (memoryview(bytes(1000 * 1125)).cast("B", (1125, 1000)), 1000, 750, 1024, "stride is 1024"),
        (bytes(4096), 1001, 2, 1024, "not a YUV420 layout"),
        (bytes(4096), 1000, 2, 512, "not a YUV420 layout"),
    ],
)
def test_a_buffer_of_the_wrong_shape_is_a_typed_mode_error(buffer, width, height, stride, words) -> None:
    with pytest.raises(CameraModeError, match=words):
        yuv420_frame(buffer, width, height, stride)


def test_sensor_timestamps_keep_the_capture_latency() -> None:
    frames = run(Picamera2Camera("room_main", api=lambda: fake_api()), frames=4)
    for f in frames[1:]:
        assert LATENCY_S <= f.t_arrival - f.t_capture < LATENCY_S + 0.05


@pytest.mark.parametrize(
    "options, words",
    [
        ({"exposure": "10000"}, "unknown picamera2 option 'exposure': known options: "),
        ({"framerate": "30"}, "set framerate = ... on the camera itself"),
        ({"awb_mode": "sunny"}, "awb_mode = 'sunny': must be auto | incandescent"),
        ({"exposure_time": "-5"}, "exposure_time = '-5': must be microseconds"),
        ({"exposure_time": "1.5"}, "exposure_time = '1.5'"),
        ({"analogue_gain": "nan"}, "analogue_gain = 'nan'"),
        ({"analogue_gain": float("inf")}, "analogue_gain = 'inf'"),
        ({"hflip": "sometimes"}, "hflip = 'sometimes': must be true | false"),
        ({"buffer_count": "100"}, "buffer_count = '100'"),
    ],
)
def test_unknown_or_invalid_options_are_config_errors(options: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words) as info:
        CameraConfig(backend="picamera2", options=options)
    assert info.value.errors()[0]["loc"] == ("options",)
    with pytest.raises(CameraOptionError):
        parse_options({k: str(v) for k, v in options.items()})


def test_a_bad_option_in_the_config_file_names_the_file_and_the_key(tmp_path: Path) -> None:
    from appliance import config
    from kiosk_core.errors import ConfigError

    path = tmp_path / "kiosk.toml"
    path.write_text(
        '[device]\nid = "kiosk-0001"\nname = "x"\nregion = ["33", "3308", "330803", "330803100", "330803100201"]\n'
        '[drivers.camera.room_main]\nbackend = "picamera2"\noptions = { awb_mode = "sunny" }\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"drivers\.camera\.room_main\.options.*awb_mode = 'sunny'"):
        config.load(path)


def test_a_control_this_camera_does_not_have_is_refused_before_anything_is_set() -> None:
    camera = Picamera2Camera("room_main", options={"af_mode": "continuous"}, api=lambda: fake_api())
    camera.open()
    try:
        deadline = time.monotonic() + 3
        while "af_mode" not in camera.health().reason and time.monotonic() < deadline:
            time.sleep(0.02)
        assert camera.health().status == HealthStatus.MISSING
        assert "option af_mode (AfMode) is not a control of this camera" in camera.health().reason
    finally:
        camera.close()
    cam = FakePicamera2.instances[0]
    assert "set_controls" not in names(cam) and "start" not in names(cam) and names(cam)[-1] == "close"


def test_a_value_outside_the_cameras_own_range_is_refused() -> None:
    camera = Picamera2Camera("room_main", options={"analogue_gain": "16"}, api=lambda: fake_api())
    with pytest.raises(CameraOptionError, match="analogue_gain = 16.0 is outside this camera's 1.0 .. 10.66"):
        camera._start(fake_api())


def test_no_camera_on_the_ribbon_says_check_the_cable() -> None:
    def nothing() -> FakePicamera2:
        raise IndexError("list index out of range")  # what Picamera2() does with no camera listed

    camera = Picamera2Camera("room_main", api=lambda: Picamera2Api(Picamera2=nothing, Transform=Transform))
    camera.open()
    try:
        deadline = time.monotonic() + 3
        while "ribbon" not in camera.health().reason and time.monotonic() < deadline:
            time.sleep(0.02)
        assert "check the ribbon cable" in camera.health().reason
    finally:
        camera.close()
