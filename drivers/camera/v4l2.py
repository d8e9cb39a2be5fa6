"""V4L2/UVC cameras through PyAV's ``video4linux2,v4l2`` demuxer (the name in PyAV's bundled FFmpeg).

Options are the demuxer's: ``input_format`` (mjpeg, yuyv422, h264 ...), ``video_size``, ``framerate``,
plus any extra from ``options`` (see ``V4L2_OPTIONS`` in config.py). The demuxer is opened with
``ts=default``: FFmpeg then hands over the kernel's buffer timestamps untouched (microseconds, on
CLOCK_MONOTONIC for every current driver), which ``KernelClock`` puts on ``time.monotonic()``: the time
a frame spent between the sensor and us stays in its capture time. (``ts=abs``/``mono2abs`` would
convert them to the wall clock through FFmpeg's time filter, which an NTP step then moves.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from drivers.camera.config import CameraConfig, parse_size
from drivers.camera.discovery import stable_path
from drivers.camera.errors import CameraError, translate
from drivers.camera.source import FrameSource, KernelClock

if TYPE_CHECKING:
    import av

FORMAT = "v4l2"  # matches the demuxer "video4linux2,v4l2" (av_find_input_format accepts either name)
READ_TIMEOUT_S = 2.0
log = logging.getLogger("kiosk.camera")


# libavdevice/v4l2.c, option "ts": default (kernel stamps as they are) | abs | mono2abs. Pinned: the
# conversion in KernelClock expects kernel stamps, and config.py refuses ``ts`` in ``options``.
TIMESTAMPS = {"ts": "default"}


def demuxer_options(
    input_format: str, video_size: str, framerate: float, extra: dict[str, str]
) -> dict[str, str]:
    return {
        **extra,
        "input_format": input_format,
        "video_size": video_size,
        "framerate": f"{framerate:g}",
        **TIMESTAMPS,
    }


class V4l2Camera(FrameSource):
    def __init__(
        self,
        name: str,
        device: str,
        *,
        input_format: str = "mjpeg",
        size: tuple[int, int] = (1280, 720),
        framerate: float = 30.0,
        options: dict[str, str] | None = None,
        model: str = "",
        open_timeout_s: float = 5.0,
        **kwargs: object,
    ) -> None:
        super().__init__(
            name, backend="v4l2", model=model or f"UVC {device}", framerate=framerate, size=size, **kwargs
        )  # type: ignore[arg-type]
        self.device = device
        self.input_format = input_format
        self.options = dict(options or {})
        self.open_timeout_s = open_timeout_s
        self.clock: KernelClock | None = None  # the last open's, for tests and diagnostics

    @classmethod
    def from_config(cls, name: str, cfg: CameraConfig, **kwargs: object) -> V4l2Camera:
        better = stable_path(cfg.device)
        if better is not None:
            log.warning(
                "camera %s: %s can change at the next reboot or re-plug; configure device = %r",
                name,
                cfg.device,
                better,
            )
        return cls(
            name,
            cfg.device,
            input_format=cfg.input_format,
            size=parse_size(cfg.video_size),
            framerate=cfg.framerate,
            options=cfg.options,
            model=cfg.model,
            open_timeout_s=cfg.open_timeout_s,
            **kwargs,
        )

    def open_container(self) -> av.container.InputContainer:
        """Open the device in the configured mode; raises a ``CameraError`` a technician can act on."""
        import av

        w, h = self.size
        opts = demuxer_options(self.input_format, f"{w}x{h}", self.framerate, self.options)
        try:
            return av.open(
                self.device, format=FORMAT, options=opts, timeout=(self.open_timeout_s, READ_TIMEOUT_S)
            )
        except Exception as exc:  # noqa: BLE001 - translated once, here
            raise translate(exc, device=self.device, what=f"camera {self.name}") from None

    def _capture(self) -> Iterator[tuple[av.VideoFrame, float]]:
        container = self.open_container()
        try:
            yield from self._frames(container)
        finally:
            container.close()

    def _frames(self, container: av.container.InputContainer) -> Iterator[tuple[av.VideoFrame, float]]:
        """Decode ``container``'s video and stamp each frame from its kernel timestamp."""
        clock = KernelClock()
        self.clock = clock
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                if self._stop.is_set():
                    return
                now = time.monotonic()
                t = now if frame.time is None else clock.to_monotonic(frame.time, now, time.time())
                yield frame, t
        except CameraError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, device=self.device, what=f"camera {self.name}") from None


def probe(device: str, timeout_s: float = 5.0) -> list[str]:
    """The modes a V4L2 device offers, one line each (FFmpeg's ``list_formats=all``)."""
    import av
    import av.logging

    lines: list[str] = []
    with av.logging.Capture(local=False) as logs:
        try:
            av.open(device, format=FORMAT, options={"list_formats": "all"}, timeout=timeout_s).close()
        except av.ExitError:
            pass  # list_formats ends the demuxer on purpose after printing
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, device=device, what="probe") from None
    for _level, _name, message in logs:
        text = message.strip()
        if text and ":" in text:
            lines.append(text)
    if not lines:
        raise CameraError(
            f"probe: {device} listed no modes (is it a capture device? try the next /dev/video*)",
            device=device,
        )
    return lines
