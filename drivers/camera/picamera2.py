"""Raspberry Pi cameras through picamera2 (only on a Pi; imported lazily, kept thin).

The adapter asks for a YUV420 ``main`` stream with ``create_video_configuration``, with the
configuration-level ``options`` (buffer count, flips) in it, ``configure``s it, sets the control
``options`` (exposure, white balance, focus ...) with ``set_controls`` and starts. ``options`` are
parsed by ``picamera2_options.py`` (a config error for a typo) and checked here against the controls
this camera advertises (``camera_controls``: name -> (min, max, default)).

Each request's ``make_array("main")`` is a ``(height * 3 // 2, stride)`` array: libcamera pads every
row to the stream's ``stride`` (a multiple of 64 bytes on a Pi 4, 128 for the chroma of a Pi 5 ...), so
a width not aligned to it (1000 -> stride 1024) carries padding on the right of each plane.
``yuv420_frame`` cuts the planes to the real width, so no stripe reaches the encoder.
``SensorTimestamp`` (nanoseconds, a kernel clock: CLOCK_BOOTTIME per libcamera, equal to
CLOCK_MONOTONIC on a Pi that never suspends) gives the capture time through ``KernelClock``.

Off a Pi ``load_picamera2`` raises ``CameraMissing``, so the source reports ``missing`` with that
reason. Written from raspberrypi/picamera2: ``picamera2/picamera2.py`` (``create_video_configuration``,
``configure``, ``stream_configuration``, ``set_controls``, ``camera_controls``, ``capture_request``)
and ``picamera2/request.py`` (``make_array``, ``_make_array_shared``: YUV420 as ``(h*3//2, stride)``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drivers.camera.config import CameraConfig, parse_size
from drivers.camera.errors import CameraError, CameraMissing, CameraModeError, CameraOptionError, translate
from drivers.camera.picamera2_options import Picamera2Settings, parse_options
from drivers.camera.source import FrameSource, KernelClock

if TYPE_CHECKING:
    import av


@dataclass(frozen=True)
class Picamera2Api:
    """What the adapter uses of picamera2 and libcamera (a test passes a fake with the same shape)."""

    Picamera2: Callable[[], Any]  # picamera2.Picamera2
    Transform: Callable[..., Any]  # libcamera.Transform(hflip=..., vflip=...)


def load_picamera2() -> Picamera2Api:
    try:
        from libcamera import Transform  # type: ignore[import-not-found]
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except ImportError:
        raise CameraMissing(
            "picamera2 is not installed: it exists only on a Raspberry Pi "
            '(apt install python3-picamera2), use backend = "v4l2" elsewhere'
        ) from None
    return Picamera2Api(Picamera2=Picamera2, Transform=Transform)


def yuv420_frame(array: Any, width: int, height: int, stride: int) -> av.VideoFrame:
    """A ``yuv420p`` frame of ``width`` x ``height`` from a stride-padded I420 buffer.

    ``array`` is anything with the buffer protocol (picamera2's numpy array, bytes): the Y plane is
    ``height`` rows of ``stride`` bytes, then U and V, each ``height // 2`` rows of ``stride // 2``.
    Only the first ``width`` (``width // 2``) bytes of each row are picture. ``CameraModeError`` if
    the buffer does not have that shape.
    """
    from av.video.frame import VideoFrame

    if width <= 0 or height <= 0 or width % 2 or height % 2 or stride < width or stride % 2:
        raise CameraModeError(
            f"picamera2 stream {width}x{height} with stride {stride}: not a YUV420 layout", device="picamera2"
        )
    view = memoryview(array)
    if view.ndim == 2 and view.shape[1] != stride:
        raise CameraModeError(
            f"picamera2 gave rows of {view.shape[1]} bytes, the stream's stride is {stride}",
            device="picamera2",
        )
    flat = view.cast("B") if view.c_contiguous else memoryview(view.tobytes())
    y_size, c_stride, c_rows = stride * height, stride // 2, height // 2
    if flat.nbytes < y_size + 2 * c_stride * c_rows:
        raise CameraModeError(
            f"picamera2 gave {flat.nbytes} bytes for a {width}x{height} YUV420 frame with stride {stride} "
            f"(needs {y_size + 2 * c_stride * c_rows})",
            device="picamera2",
        )
    frame = VideoFrame(width, height, "yuv420p")
    planes = (
        (0, stride, height, width),
        (y_size, c_stride, c_rows, width // 2),
        (y_size + c_stride * c_rows, c_stride, c_rows, width // 2),
    )
    for plane, (offset, src_stride, rows, row_bytes) in zip(frame.planes, planes, strict=True):
        dst_stride = plane.line_size
        if dst_stride == src_stride:
            # Same row pitch: one copy. The bytes past row_bytes are outside the picture either way.
            plane.update(flat[offset : offset + src_stride * rows])
            continue
        pad = bytes(dst_stride - row_bytes)
        plane.update(
            b"".join(
                bytes(flat[offset + r * src_stride : offset + r * src_stride + row_bytes]) + pad
                for r in range(rows)
            )
        )
    return frame


class Picamera2Camera(FrameSource):
    def __init__(
        self,
        name: str,
        *,
        size: tuple[int, int] = (1280, 720),
        framerate: float = 30.0,
        options: dict[str, str] | None = None,
        model: str = "",
        api: Callable[[], Picamera2Api] = load_picamera2,
        **kwargs: object,
    ) -> None:
        super().__init__(
            name,
            backend="picamera2",
            model=model or "Raspberry Pi camera",
            framerate=framerate,
            size=size,
            **kwargs,
        )  # type: ignore[arg-type]
        self.options = dict(options or {})
        self.settings: Picamera2Settings = parse_options(self.options)
        self.api = api
        self.stream: dict[str, Any] = {}  # the configured main stream (size, stride, format)
        self.clock: KernelClock | None = None

    @classmethod
    def from_config(cls, name: str, cfg: CameraConfig, **kwargs: object) -> Picamera2Camera:
        return cls(
            name,
            size=parse_size(cfg.video_size),
            framerate=cfg.framerate,
            options=cfg.options,
            model=cfg.model,
            **kwargs,
        )

    def _check_controls(self, advertised: dict[str, Any]) -> None:
        """Every control option must be one this camera has, within the range it gives."""
        for control, value in self.settings.controls.items():
            key = self.settings.option_for(control)
            if control not in advertised:
                raise CameraOptionError(
                    f"camera {self.name}: option {key} ({control}) is not a control of this camera "
                    f"(it has: {', '.join(sorted(advertised)) or 'none'})",
                    device=self.name,
                )
            lo, hi = (advertised[control] or (None, None))[:2]
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and isinstance(lo, int | float) and isinstance(hi, int | float) and lo < hi:
                if not lo <= value <= hi:
                    raise CameraOptionError(
                        f"camera {self.name}: option {key} = {value} is outside this camera's {lo} .. {hi}",
                        device=self.name,
                    )

    def _start(self, api: Picamera2Api) -> Any:
        try:
            cam = api.Picamera2()
        except IndexError:  # picamera2 indexes the list of cameras libcamera found
            raise CameraMissing(
                f"camera {self.name}: no Raspberry Pi camera found: check the ribbon cable "
                "(contacts, the latch) and `rpicam-hello --list-cameras`",
                device=self.name,
            ) from None
        try:
            self._check_controls(dict(cam.camera_controls))
            kwargs = dict(self.settings.configuration)
            if self.settings.transform:
                kwargs["transform"] = api.Transform(**self.settings.transform)
            config = cam.create_video_configuration(
                main={"size": self.size, "format": "YUV420"},
                controls={"FrameRate": self.framerate},
                **kwargs,
            )
            cam.configure(config)
            # configure() resets the controls to the configuration's; ours go on top of them.
            if self.settings.controls:
                cam.set_controls(dict(self.settings.controls))
            self.stream = dict(cam.stream_configuration("main"))
            cam.start()
        except BaseException:
            cam.close()
            raise
        return cam

    def _capture(self) -> Iterator[tuple[av.VideoFrame, float]]:
        api = self.api()
        try:
            cam = self._start(api)
        except CameraError:
            raise
        except Exception as exc:  # noqa: BLE001 - picamera2 raises RuntimeError for most things
            raise translate(exc, device=self.name, what=f"camera {self.name}") from None
        width, height = self.stream.get("size", self.size)
        stride = int(self.stream.get("stride") or width)
        clock = KernelClock()
        self.clock = clock
        try:
            while not self._stop.is_set():
                request = cam.capture_request()
                try:
                    array = request.make_array("main")
                    sensor_ns = request.get_metadata().get("SensorTimestamp")
                finally:
                    request.release()
                now = time.monotonic()
                t = clock.to_monotonic(sensor_ns / 1e9, now, time.time()) if sensor_ns else now
                yield yuv420_frame(array, width, height, stride), t
        finally:
            cam.stop()
            cam.close()
