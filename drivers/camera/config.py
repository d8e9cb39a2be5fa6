"""``[drivers.camera.<name>]`` and ``[drivers.doccam]``: which camera, which backend, which mode.

Every field has a default, so ``[drivers.camera.room_main]`` alone means a UVC camera at /dev/video0 (720p30 MJPEG) and
a config without any camera section still validates. ``drivers/config.py`` imports these models.

Name a USB camera by its ``/dev/v4l/by-id/`` link (``ls -l /dev/v4l/by-id/``; ``discovery.py`` lists
them first): ``/dev/videoN`` numbers follow the order the kernel found the devices in and change across
reboots and re-plugs, so the room camera and the backup could swap.

```toml
[drivers.camera.room_main]
backend = "v4l2"              # v4l2 | picamera2 | synthetic
device = "/dev/v4l/by-id/usb-046d_HD_Pro_Webcam_C920_8A1B2C3D-video-index0"
input_format = "mjpeg"        # what the camera sends: mjpeg | yuyv422 | h264 ...
video_size = "1280x720"
framerate = 30

[drivers.doccam]
backend = "v4l2"
device = "/dev/v4l/by-id/usb-Document_Camera_0001-video-index0"
preview_size = "640x480"
still_size = "3264x2448"
```
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from drivers.camera.errors import CameraOptionError
from kiosk_core.config import Strict

SIZE = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")
MAX_SIDE = 8192


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x720"`` -> ``(1280, 720)``; ``ValueError`` naming what is allowed otherwise."""
    m = SIZE.match(text)
    if not m:
        raise ValueError(f"size {text!r} must look like 1280x720")
    w, h = int(m.group(1)), int(m.group(2))
    if w > MAX_SIDE or h > MAX_SIDE or w % 2 or h % 2:
        raise ValueError(f"size {text!r}: width and height must be even and at most {MAX_SIDE}")
    return w, h


def _check_size(v: str) -> str:
    parse_size(v)
    return v


# A device path is handed to FFmpeg as a file name: keep it to plain paths, never an FFmpeg URL or
# an option string smuggled through the config. udev's persistent names need ':' (by-path,
# "usb-0:1.2:1.0") and '+', '@', '=' (serial numbers in by-id names, escaped by udev to this set).
DEVICE = re.compile(r"^/dev(/[A-Za-z0-9_.:+@=-]{1,120}){1,6}$")
OPTION_KEY = re.compile(r"^[a-z0-9_]{1,40}$")


def check_device(v: str, example: str) -> str:
    if len(v) > 200 or not DEVICE.match(v) or any(part in (".", "..") for part in v.split("/")):
        raise ValueError(
            f"must be a device path under /dev, e.g. {example} or /dev/v4l/by-id/usb-...-video-index0"
        )
    return v


# libavdevice/v4l2.c's own options a config may set. The rest are the camera's own keys
# (input_format, video_size, framerate), pinned by the driver (ts: it needs the kernel's timestamps)
# or would stop the capture (list_formats: use `kiosk media probe`).
V4L2_OPTIONS = {
    "standard": "analogue TV standard of a frame grabber (PAL, NTSC ...)",
    "channel": "input of a multi-input grabber (an integer)",
    "use_libv4l2": "0 | 1: libv4l2's format conversions",
}
V4L2_ELSEWHERE = {
    "input_format": "set input_format = ... on the camera itself",
    "pixel_format": "set input_format = ... on the camera itself",
    "video_size": "set video_size = ... on the camera itself",
    "framerate": "set framerate = ... on the camera itself",
    "ts": "the driver opens the device with ts=default (kernel timestamps) and converts them itself",
    "timestamps": "the driver opens the device with ts=default (kernel timestamps) and converts them itself",
    "list_formats": "use `kiosk media probe DEVICE`",
    "list_standards": "use `kiosk media probe DEVICE`",
}


def _scalars_to_text(v: object) -> object:
    """TOML writes ``exposure_time = 10000`` and ``hflip = true``: keep them, as option text."""
    if not isinstance(v, dict):
        return v
    out: dict[object, object] = {}
    for key, value in v.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = repr(value)
        out[key] = value
    return out


def _check_options(v: dict[str, str]) -> dict[str, str]:
    if len(v) > 32:
        raise ValueError("at most 32 options")
    for key, value in v.items():
        if not OPTION_KEY.match(key):
            raise ValueError(f"option name {key!r} must be lower-case letters, digits and _")
        if len(value) > 200 or any(ord(c) < 32 for c in value):
            raise ValueError(f"option {key!r}: value must be one line of at most 200 characters")
    return v


def check_backend_options(backend: str, options: dict[str, str]) -> None:
    """Options the backend would not understand are errors here, not silently ignored later."""
    if backend == "picamera2":
        from drivers.camera.picamera2_options import parse_options

        parse_options(options)  # CameraOptionError is a ValueError: pydantic locates it
    elif backend == "v4l2":
        for key in options:
            if key not in V4L2_OPTIONS:
                hint = V4L2_ELSEWHERE.get(key) or f"known options: {', '.join(sorted(V4L2_OPTIONS))}"
                raise CameraOptionError(f"unknown v4l2 option {key!r}: {hint}", device="v4l2")


class CameraConfig(Strict):
    """One room camera (main or backup)."""

    backend: Literal["v4l2", "picamera2", "synthetic"] = "v4l2"
    device: str = Field(
        "/dev/video0", description="V4L2 device path (v4l2 backend); best its /dev/v4l/by-id/ link"
    )
    input_format: str = Field(
        "mjpeg",
        pattern=r"^[a-z0-9_]{1,32}$",
        description="pixel/codec format asked of the camera (v4l2 input_format)",
    )
    video_size: str = "1280x720"
    framerate: float = Field(30.0, gt=0, le=240)
    pattern: str = Field(
        "testsrc2",
        pattern=r"^[a-z0-9_]{1,32}$",
        description="synthetic backend: the lavfi video source (testsrc2, smptebars, ...), "
        "'page' (a tilted document on a desk) or 'timecode' (testsrc2 with the capture time drawn in "
        "each frame, drivers/camera/timecode.py: for glass-to-glass latency)",
    )
    model: str = Field("", max_length=80, description="shown in inventory; empty means 'generic <backend>'")
    options: dict[str, str] = Field(
        default_factory=dict,
        description="v4l2: demuxer options (standard, channel, use_libv4l2); picamera2: configuration "
        "and controls (drivers/camera/picamera2_options.py)",
    )
    open_timeout_s: float = Field(5.0, gt=0, le=60)

    @field_validator("video_size")
    @classmethod
    def _size(cls, v: str) -> str:
        return _check_size(v)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v, "/dev/video0")

    @field_validator("options", mode="before")
    @classmethod
    def _option_text(cls, v: object) -> object:
        return _scalars_to_text(v)

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        # backend is declared before options, so it is validated already (absent if it was invalid).
        check_backend_options(info.data.get("backend", ""), _check_options(v))
        return v


class DoccamConfig(Strict):
    """The document camera (高拍仪): a low-resolution preview and full-resolution stills."""

    backend: Literal["v4l2", "picamera2", "synthetic"] = "v4l2"
    device: str = "/dev/video2"
    input_format: str = Field("mjpeg", pattern=r"^[a-z0-9_]{1,32}$")
    preview_size: str = "640x480"
    preview_framerate: float = Field(15.0, gt=0, le=120)
    still_size: str = "3264x2448"
    still_framerate: float = Field(5.0, gt=0, le=120, description="the mode the camera offers at full size")
    warmup_frames: int = Field(
        3, ge=0, le=60, description="frames discarded after reopening at full size (exposure settles)"
    )
    jpeg_quality: int = Field(90, ge=10, le=100)
    auto_crop: bool = Field(
        True,
        description="find the page, straighten it and cut the desk away "
        "(only when a page is clearly found; see drivers/camera/deskew.py)",
    )
    pattern: str = Field(
        "page",
        pattern=r"^[a-z0-9_]{1,32}$",
        description="synthetic backend: 'page' (a tilted document) or a lavfi source",
    )
    model: str = Field("", max_length=80)
    options: dict[str, str] = Field(default_factory=dict)
    open_timeout_s: float = Field(8.0, gt=0, le=60)

    @field_validator("preview_size", "still_size")
    @classmethod
    def _size(cls, v: str) -> str:
        return _check_size(v)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v, "/dev/video2")

    @field_validator("options", mode="before")
    @classmethod
    def _option_text(cls, v: object) -> object:
        return _scalars_to_text(v)

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        # backend is declared before options, so it is validated already (absent if it was invalid).
        check_backend_options(info.data.get("backend", ""), _check_options(v))
        return v
