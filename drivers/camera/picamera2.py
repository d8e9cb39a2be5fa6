"""Raspberry Pi cameras through picamera2 (only on a Pi; imported lazily, kept thin).

picamera2 hands numpy arrays and per-request metadata; ``SensorTimestamp`` (nanoseconds on
CLOCK_MONOTONIC/BOOTTIME) gives the capture time. Nothing here can run off a Pi: ``_capture`` raises
``CameraMissing`` when picamera2 is not installed, so the source reports ``missing`` with that reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from drivers.camera.config import CameraConfig, parse_size
from drivers.camera.errors import CameraMissing, translate
from drivers.camera.source import DeviceClock, FrameSource

if TYPE_CHECKING:
    import av


def load_picamera2() -> Any:
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except ImportError:
        raise CameraMissing(
            "picamera2 is not installed: it exists only on a Raspberry Pi "
            '(apt install python3-picamera2), use backend = "v4l2" elsewhere'
        ) from None
    return Picamera2


class Picamera2Camera(FrameSource):
    def __init__(
        self,
        name: str,
        *,
        size: tuple[int, int] = (1280, 720),
        framerate: float = 30.0,
        controls: dict[str, str] | None = None,
        model: str = "",
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
        self.controls = dict(controls or {})

    @classmethod
    def from_config(cls, name: str, cfg: CameraConfig, **kwargs: object) -> Picamera2Camera:
        return cls(
            name,
            size=parse_size(cfg.video_size),
            framerate=cfg.framerate,
            controls=cfg.options,
            model=cfg.model,
            **kwargs,
        )

    def _capture(self) -> Iterator[tuple[av.VideoFrame, float]]:
        from av.video.frame import VideoFrame

        picamera2 = load_picamera2()
        try:
            cam = picamera2()
            config = cam.create_video_configuration(
                main={"size": self.size, "format": "YUV420"}, controls={"FrameRate": self.framerate}
            )
            cam.configure(config)
            cam.start()
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, device=self.name, what=f"camera {self.name}") from None
        clock = DeviceClock()
        try:
            while not self._stop.is_set():
                request = cam.capture_request()
                try:
                    array = request.make_array("main")
                    sensor_ns = request.get_metadata().get("SensorTimestamp")
                finally:
                    request.release()
                now = time.monotonic()
                t = clock.to_monotonic(sensor_ns / 1e9, now) if sensor_ns else now
                yield VideoFrame.from_ndarray(array, format="yuv420p"), t
        finally:
            cam.stop()
            cam.close()
