"""V4L2/UVC cameras through PyAV's ``video4linux2,v4l2`` demuxer (the name in PyAV's bundled FFmpeg).

Options are the demuxer's: ``input_format`` (mjpeg, yuyv422, h264 ...), ``video_size``, ``framerate``,
plus any extra from ``options``. FFmpeg stamps frames with the kernel's buffer timestamps (converted to
the wall clock, in microseconds); they are mapped onto ``time.monotonic()`` here.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from drivers.camera.config import CameraConfig, parse_size
from drivers.camera.errors import CameraError, translate
from drivers.camera.source import DeviceClock, FrameSource

if TYPE_CHECKING:
    import av

FORMAT = "v4l2"  # matches the demuxer "video4linux2,v4l2" (av_find_input_format accepts either name)
READ_TIMEOUT_S = 2.0


def demuxer_options(
    input_format: str, video_size: str, framerate: float, extra: dict[str, str]
) -> dict[str, str]:
    return {"input_format": input_format, "video_size": video_size, "framerate": f"{framerate:g}", **extra}


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

    @classmethod
    def from_config(cls, name: str, cfg: CameraConfig, **kwargs: object) -> V4l2Camera:
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
        clock = DeviceClock()
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            wall_minus_mono = time.time() - time.monotonic()
            try:
                for frame in container.decode(stream):
                    if self._stop.is_set():
                        return
                    now = time.monotonic()
                    if frame.time is not None:
                        # Kernel timestamps arrive on the wall clock: back onto the monotonic clock,
                        # trusting them while they are plausible (DeviceClock re-anchors otherwise).
                        t = frame.time - wall_minus_mono
                        t = t if now - 1.0 < t <= now + 0.005 else clock.to_monotonic(frame.time, now)
                    else:
                        t = now
                    yield frame, t
            except CameraError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise translate(exc, device=self.device, what=f"camera {self.name}") from None
        finally:
            container.close()


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
