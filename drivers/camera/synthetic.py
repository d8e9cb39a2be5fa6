"""A simulated camera: an FFmpeg ``lavfi`` source (``testsrc2`` by default) paced in real time.

It behaves like a camera for ``edge_media`` and can be told to misbehave the ways real cameras do:

- ``freeze``: keeps delivering the last picture (a hung ISP or a stuck UVC buffer);
- ``black``: delivers black frames (lens cap, lights off, a dead sensor);
- ``drop``: loses every other frame (USB bandwidth trouble);
- ``unplug``: vanishes (the open fails and keeps failing) until ``replug``;
- ``stall``: stops delivering without an error (a driver that blocks);
- ``clear`` (or ``replug``): back to normal.

``paced=False`` produces frames as fast as FFmpeg can (benchmarks); capture times are then the moment
each frame is produced.

``timecode=True`` (config ``pattern = "timecode"``) draws the wall clock (``time.time()`` in ms) into
each new frame at its capture instant, with ``drivers/camera/timecode.py``: the picture then carries
its own capture time through encoders, the network and the far end's decoder (glass-to-glass latency
of the call, ``bench/call.py``). A frozen camera keeps its old timecode, as a frozen picture would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from drivers.camera.config import CameraConfig, parse_size
from drivers.camera.errors import CameraMissing, CameraModeError
from drivers.camera.source import FrameSource
from drivers.camera.timecode import draw_timecode_frame

if TYPE_CHECKING:
    import av

FAULTS = ("freeze", "black", "drop", "unplug", "stall", "clear", "replug")


PAGE_TILT_RAD = 0.105  # 6 degrees clockwise: what a villager's hurried hand does


def page_graph(width: int, height: int, rate: float, tilt_rad: float = PAGE_TILT_RAD) -> str:
    """A lavfi graph of a tilted A4-ish page with two lines of "text" on a dark desk mat: the
    simulator's document for the document camera (and the crop/deskew tests)."""
    pw, ph = width // 2 // 2 * 2, int(height * 0.8) // 2 * 2
    lx, lw, lh = pw // 10, pw * 8 // 10, max(2, ph // 80)
    return (
        f"color=c=0x383838:s={width}x{height}:r={rate:g}[desk];"
        f"color=c=0xf0f0f0:s={pw}x{ph}:r={rate:g},"
        f"drawbox=x={lx}:y={ph // 10}:w={lw}:h={lh}:c=0x202020:t=fill,"
        f"drawbox=x={lx}:y={ph // 10 + 5 * lh}:w={lw * 7 // 8}:h={lh}:c=0x202020:t=fill,"
        f"format=yuva420p,rotate=a={tilt_rad}:c=none:ow=rotw({tilt_rad}):oh=roth({tilt_rad})[page];"
        "[desk][page]overlay=x=(W-w)/2:y=(H-h)/2:format=auto,format=yuv420p"
    )


def black_frame(width: int, height: int) -> av.VideoFrame:
    """A black yuv420p frame (studio range: Y=16, U=V=128)."""
    from av.video.frame import VideoFrame

    frame = VideoFrame(width, height, "yuv420p")
    for plane, value in zip(frame.planes, (16, 128, 128), strict=True):
        plane.update(bytes([value]) * plane.buffer_size)
    return frame


class SyntheticCamera(FrameSource):
    def __init__(
        self,
        name: str,
        graph: str,
        *,
        framerate: float = 30.0,
        size: tuple[int, int] = (1280, 720),
        paced: bool = True,
        model: str = "",
        timecode: bool = False,
        **kwargs: object,
    ) -> None:
        kwargs.setdefault("reopen_base_s", 0.05)
        kwargs.setdefault("reopen_cap_s", 0.5)
        super().__init__(
            name,
            backend="synthetic",
            model=model or "lavfi " + graph.split("=", 1)[0],
            framerate=framerate,
            size=size,
            **kwargs,
        )  # type: ignore[arg-type]
        self.graph = graph
        self.paced = paced
        self.timecode = timecode
        self._fault = "clear"
        self._fault_lock = threading.Lock()
        self.faults_injected = 0

    @classmethod
    def from_config(cls, name: str, cfg: CameraConfig, **kwargs: object) -> SyntheticCamera:
        w, h = parse_size(cfg.video_size)
        if cfg.pattern == "page":
            graph = page_graph(w, h, cfg.framerate)
        elif cfg.pattern == "timecode":
            # yuv420p explicitly: the timecode is drawn on the luma plane in place.
            graph = f"testsrc2=size={w}x{h}:rate={cfg.framerate:g},format=yuv420p"
        else:
            graph = f"{cfg.pattern}=size={w}x{h}:rate={cfg.framerate:g}"
        return cls(
            name,
            graph,
            framerate=cfg.framerate,
            size=(w, h),
            model=cfg.model or f"lavfi {cfg.pattern}",
            timecode=cfg.pattern == "timecode",
            **kwargs,
        )

    # --- fault injection -------------------------------------------------------------------------

    @property
    def fault(self) -> str:
        return self._fault

    def inject(self, fault: str) -> None:
        """Misbehave from the next frame on (see the module docstring); thread-safe."""
        if fault not in FAULTS:
            raise ValueError(f"unknown camera fault {fault!r}; one of {', '.join(FAULTS)}")
        with self._fault_lock:
            self._fault = "clear" if fault == "replug" else fault
            self.faults_injected += fault not in ("clear", "replug")

    # --- capture ---------------------------------------------------------------------------------

    def _capture(self) -> Iterator[tuple[av.VideoFrame, float]]:
        import av

        if self._fault == "unplug":
            raise CameraMissing(f"camera {self.name}: unplugged (simulated)", device=self.name)
        try:
            container = av.open(self.graph, format="lavfi")
        except av.FFmpegError as exc:
            raise CameraModeError(
                f"camera {self.name}: bad lavfi filtergraph {self.graph!r}: {exc}", device=self.name
            ) from None
        try:
            stream = container.streams.video[0]
            if stream.average_rate:
                self.framerate = float(stream.average_rate)
            self.size = (stream.codec_context.width, stream.codec_context.height)
            black: av.VideoFrame | None = None
            last: av.VideoFrame | None = None
            t0 = time.monotonic()
            n = 0
            for frame in container.decode(stream):
                if self._stop.is_set():
                    return
                t = t0 + float(frame.time if frame.time is not None else n / self.framerate)
                n += 1
                if self.paced:
                    self._stop.wait(max(0.0, t - time.monotonic()))
                else:
                    t = time.monotonic()
                fault = self._fault
                if fault == "unplug":
                    raise CameraMissing(f"camera {self.name}: unplugged (simulated)", device=self.name)
                if fault == "stall" or (fault == "drop" and n % 2 == 0):
                    continue
                if fault == "freeze" and last is not None:
                    yield last, t
                    continue
                if fault == "black":
                    if black is None:
                        black = black_frame(frame.width, frame.height)
                    yield black, t
                    continue
                if self.timecode:
                    if frame.format.name != "yuv420p":
                        frame = frame.reformat(format="yuv420p")
                    draw_timecode_frame(frame, int(time.time() * 1000))  # now: the frame's capture
                last = frame
                yield frame, t
        finally:
            container.close()
