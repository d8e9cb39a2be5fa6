"""``options`` of a ``picamera2`` camera: which go into the configuration, which are controls (pure).

picamera2 separates the two: what shapes the streams (buffers, the image transform) goes into
``Picamera2.create_video_configuration(...)`` and takes effect at ``configure()``; libcamera controls
(exposure, white balance, focus, ...) go to ``Picamera2.set_controls({...})`` and apply to the next
request. ``configure()`` resets the controls to the configuration's own, so controls are set after
it. Names here are the config's (``[a-z0-9_]``); values arrive as strings (TOML numbers and booleans
are turned into strings by the config) and are parsed and range-checked here, so a typo is a config
error, not a camera that silently ignores it. The camera's advertised ranges (``camera_controls``)
are checked again when it is opened (``picamera2.py``).

Written from raspberrypi/picamera2 (``picamera2/picamera2.py``: ``create_video_configuration``,
``configure``, ``set_controls``; ``picamera2/controls.py``) and libcamera's ``control_ids`` enums.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drivers.camera.errors import CameraOptionError


@dataclass(frozen=True, slots=True)
class Option:
    key: str  # in the config
    target: str  # "configuration" | "transform" | "control"
    name: str  # create_video_configuration keyword, Transform keyword or libcamera control
    parse: Callable[[str], Any]
    allowed: str  # said in the error


def _bool(text: str) -> bool:
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
    if value is None:
        raise ValueError
    return value


def _number(kind: type, lo: float, hi: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)  # ValueError for "fast", "1e400" is inf below
        if not lo <= value <= hi:
            raise ValueError
        return value

    return parse


def _enum(values: Mapping[str, int]) -> Callable[[str], int]:
    def parse(text: str) -> int:
        return values[text.lower()]  # KeyError -> reported with the allowed names

    return parse


def _table(*options: Option) -> dict[str, Option]:
    return {o.key: o for o in options}


# libcamera control_ids enums (the integers libcamera's Python bindings accept).
AWB_MODES = {
    "auto": 0,
    "incandescent": 1,
    "tungsten": 2,
    "fluorescent": 3,
    "indoor": 4,
    "daylight": 5,
    "cloudy": 6,
    "custom": 7,
}
AE_METERING = {"centre_weighted": 0, "spot": 1, "matrix": 2, "custom": 3}
AE_EXPOSURE = {"normal": 0, "short": 1, "long": 2, "custom": 3}
AF_MODES = {"manual": 0, "auto": 1, "continuous": 2}


def _names(values: Mapping[str, int]) -> str:
    return " | ".join(values)


OPTIONS = _table(
    Option("buffer_count", "configuration", "buffer_count", _number(int, 2, 12), "an integer 2-12"),
    Option("queue", "configuration", "queue", _bool, "true | false"),
    Option("hflip", "transform", "hflip", _bool, "true | false"),
    Option("vflip", "transform", "vflip", _bool, "true | false"),
    Option("ae_enable", "control", "AeEnable", _bool, "true | false"),
    Option("awb_enable", "control", "AwbEnable", _bool, "true | false"),
    Option("awb_mode", "control", "AwbMode", _enum(AWB_MODES), _names(AWB_MODES)),
    Option("ae_metering_mode", "control", "AeMeteringMode", _enum(AE_METERING), _names(AE_METERING)),
    Option("ae_exposure_mode", "control", "AeExposureMode", _enum(AE_EXPOSURE), _names(AE_EXPOSURE)),
    Option(
        "exposure_time", "control", "ExposureTime", _number(int, 1, 10_000_000), "microseconds, 1-10000000"
    ),
    Option("analogue_gain", "control", "AnalogueGain", _number(float, 1.0, 64.0), "a number 1.0-64.0"),
    Option("exposure_value", "control", "ExposureValue", _number(float, -8.0, 8.0), "EV stops, -8.0-8.0"),
    Option("brightness", "control", "Brightness", _number(float, -1.0, 1.0), "a number -1.0-1.0"),
    Option("contrast", "control", "Contrast", _number(float, 0.0, 32.0), "a number 0.0-32.0"),
    Option("saturation", "control", "Saturation", _number(float, 0.0, 32.0), "a number 0.0-32.0"),
    Option("sharpness", "control", "Sharpness", _number(float, 0.0, 16.0), "a number 0.0-16.0"),
    Option("af_mode", "control", "AfMode", _enum(AF_MODES), _names(AF_MODES)),
    Option("lens_position", "control", "LensPosition", _number(float, 0.0, 32.0), "dioptres, 0.0-32.0"),
)

# Keys someone will try, with what to do instead.
ELSEWHERE = {
    "framerate": "set framerate = ... on the camera itself",
    "frame_rate": "set framerate = ... on the camera itself",
    "size": "set video_size = ... on the camera itself",
    "format": "the driver always asks for YUV420",
}


@dataclass(frozen=True)
class Picamera2Settings:
    """``options`` sorted the way picamera2 takes them."""

    configuration: dict[str, Any] = field(default_factory=dict)  # create_video_configuration(**...)
    transform: dict[str, bool] = field(default_factory=dict)  # libcamera.Transform(**...)
    controls: dict[str, Any] = field(default_factory=dict)  # set_controls({...}) after configure()

    def option_for(self, control: str) -> str:
        return next((o.key for o in OPTIONS.values() if o.name == control), control)


def parse_options(options: Mapping[str, str]) -> Picamera2Settings:
    """Sort and parse ``options``; ``CameraOptionError`` (a ``ValueError``) names the first bad one."""
    settings = Picamera2Settings()
    for key, text in options.items():
        option = OPTIONS.get(key)
        if option is None:
            hint = ELSEWHERE.get(key) or f"known options: {', '.join(sorted(OPTIONS))}"
            raise CameraOptionError(f"unknown picamera2 option {key!r}: {hint}", device="picamera2")
        try:
            value = option.parse(text)
        except (ValueError, KeyError, OverflowError):
            raise CameraOptionError(
                f"picamera2 option {key} = {text!r}: must be {option.allowed}", device="picamera2"
            ) from None
        {
            "configuration": settings.configuration,
            "transform": settings.transform,
            "control": settings.controls,
        }[option.target][option.name] = value
    return settings
