"""``[drivers.camera.<name>]`` and ``[drivers.doccam]``: which camera, which backend, which mode.

Every field has a default, so ``[drivers.camera.room_main]`` alone means a UVC camera at /dev/video0 (720p30 MJPEG) and
a config without any camera section still validates. ``drivers/config.py`` imports these models.

```toml
[drivers.camera.room_main]
backend = "v4l2"              # v4l2 | picamera2 | synthetic
device = "/dev/video0"
input_format = "mjpeg"        # what the camera sends: mjpeg | yuyv422 | h264 ...
video_size = "1280x720"
framerate = 30

[drivers.doccam]
backend = "v4l2"
device = "/dev/video2"
preview_size = "640x480"
still_size = "3264x2448"
```
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

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
# an option string smuggled through the config.
DEVICE = re.compile(r"^/dev/[A-Za-z0-9_./-]{1,120}$")
OPTION_KEY = re.compile(r"^[a-z0-9_]{1,40}$")


def _check_options(v: dict[str, str]) -> dict[str, str]:
    if len(v) > 32:
        raise ValueError("at most 32 options")
    for key, value in v.items():
        if not OPTION_KEY.match(key):
            raise ValueError(f"option name {key!r} must be lower-case letters, digits and _")
        if len(value) > 200 or any(ord(c) < 32 for c in value):
            raise ValueError(f"option {key!r}: value must be one line of at most 200 characters")
    return v


class CameraConfig(Strict):
    """One room camera (main or backup)."""

    backend: Literal["v4l2", "picamera2", "synthetic"] = "v4l2"
    device: str = Field("/dev/video0", description="V4L2 device path (v4l2 backend)")
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
        description="synthetic backend: the lavfi video source (testsrc2, smptebars, ...) "
        "or 'page' (a tilted document on a desk)",
    )
    model: str = Field("", max_length=80, description="shown in inventory; empty means 'generic <backend>'")
    options: dict[str, str] = Field(
        default_factory=dict, description="extra demuxer options passed to FFmpeg / picamera2 controls"
    )
    open_timeout_s: float = Field(5.0, gt=0, le=60)

    @field_validator("video_size")
    @classmethod
    def _size(cls, v: str) -> str:
        return _check_size(v)

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not DEVICE.match(v):
            raise ValueError("must be a device path under /dev, e.g. /dev/video0")
        return v

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_options(v)


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
        if not DEVICE.match(v):
            raise ValueError("must be a device path under /dev, e.g. /dev/video2")
        return v

    @field_validator("options")
    @classmethod
    def _options(cls, v: dict[str, str]) -> dict[str, str]:
        return _check_options(v)
