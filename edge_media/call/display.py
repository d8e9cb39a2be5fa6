"""Where the clerk is seen and heard: thin display and speaker adapters, like the camera backends.

Display (``[media.call] display``):
- ``preview`` (tests, the demo, and always beside the other): keeps counts, the last size and the last
  frame, and hands a small RGB picture (``PREVIEW_SIZE``, at most ``PREVIEW_FPS`` a second) to the
  UI's call screen over the local bus. Tests and benchmarks may add ``on_frame`` callbacks.
- ``command``: raw ``yuv420p`` frames written to a program's stdin (on a Pi: mpv on KMS, full screen on
  the room TV's HDMI output, which the switcher routes; docs/media.md). Its own thread and a one-frame
  queue: a slow or dead player drops frames and is restarted with backoff, it never slows the call.

Speaker (``[media.call] speaker``): ``alsa:<device>`` plays through FFmpeg's ALSA output; empty keeps
only the counters (``NullSpeaker``). Both feed what they play to listeners: the echo canceller's far
end and the recording's mix.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from kiosk_core.backoff import equal_jitter

if TYPE_CHECKING:
    import av

log = logging.getLogger("kiosk.media.call")

PREVIEW_SIZE = (64, 36)
PREVIEW_FPS = 4.0
FrameListener = Callable[["av.VideoFrame"], None]
PreviewListener = Callable[[int, int, bytes], None]
PcmListener = Callable[[np.ndarray], None]


class PreviewDisplay:
    """Counts what arrives and makes the UI's small preview; the base of every display."""

    name = "preview"

    def __init__(self, on_preview: PreviewListener | None = None) -> None:
        self.on_preview = on_preview
        self.on_frame: list[FrameListener] = []
        self.frames = 0
        self.width = 0
        self.height = 0
        self.last_frame: av.VideoFrame | None = None
        self.last_at = 0.0
        self._preview_at = 0.0
        # Own converters: a frame's shared one must not be used from two threads (the command display's).
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()

    def show(self, frame: av.VideoFrame) -> None:
        """Called on the event loop for every decoded frame of the clerk; must stay cheap."""
        self.frames += 1
        self.width, self.height = frame.width, frame.height
        self.last_frame, self.last_at = frame, time.monotonic()
        for listener in self.on_frame:
            try:
                listener(frame)
            except Exception:  # noqa: BLE001 - a test's listener must not stop the call
                log.exception("display listener failed")
        now = time.monotonic()
        if self.on_preview is not None and now - self._preview_at >= 1 / PREVIEW_FPS:
            self._preview_at = now
            w, h = PREVIEW_SIZE
            small = self._reformatter.reformat(frame, width=w, height=h, format="rgb24")
            self.on_preview(w, h, bytes(small.to_ndarray().tobytes()))
        self._show(frame)

    def _show(self, frame: av.VideoFrame) -> None:
        pass

    def clear(self) -> None:
        self.last_frame = None

    def close(self) -> None:
        self.clear()

    def stats(self) -> dict[str, Any]:
        return {"backend": self.name, "frames": self.frames, "width": self.width, "height": self.height}


class CommandDisplay(PreviewDisplay):
    """Raw frames to a player program's stdin (``{w}``, ``{h}``, ``{fps}`` filled in its arguments)."""

    name = "command"

    def __init__(self, command: list[str], fps: float, on_preview: PreviewListener | None = None) -> None:
        super().__init__(on_preview)
        self.command = command
        self.fps = fps
        self._lock = threading.Condition()
        self._pending: av.VideoFrame | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        from av.video.reformatter import VideoReformatter

        self._own = VideoReformatter()  # the display thread's converter
        self.dropped = 0
        self.restarts = 0
        self.error = ""

    def _show(self, frame: av.VideoFrame) -> None:
        with self._lock:
            if self._pending is not None:
                self.dropped += 1
            self._pending = frame
            self._lock.notify()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="call-display", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failures = 0  # consecutive: the player is restarted after equal_jitter(failures, 0.5, 10) s
        proc: subprocess.Popen[bytes] | None = None
        size: tuple[int, int] | None = None
        while not self._stop.is_set():
            with self._lock:
                while self._pending is None and not self._stop.is_set():
                    self._lock.wait(0.5)
                frame, self._pending = self._pending, None
            if frame is None:
                continue
            if proc is not None and (proc.poll() is not None or size != (frame.width, frame.height)):
                _end(proc)
                proc = None
            if proc is None:
                size = (frame.width, frame.height)
                args = [a.format(w=size[0], h=size[1], fps=self.fps) for a in self.command]
                try:
                    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
                except OSError as exc:
                    self.error = f"cannot start {args[0]}: {exc}"
                    log.error("call display: %s", self.error)
                    self._stop.wait(equal_jitter(failures, 0.5, 10.0))
                    failures += 1
                    continue
                self.restarts += 1
            try:
                assert proc.stdin is not None
                proc.stdin.write(self._own.reformat(frame, format="yuv420p").to_ndarray().tobytes())
                proc.stdin.flush()
                failures = 0
                self.error = ""
            except (BrokenPipeError, OSError) as exc:
                self.error = f"{self.command[0]} stopped: {exc}"
                _end(proc)
                proc = None
                self._stop.wait(equal_jitter(failures, 0.5, 10.0))
                failures += 1
        if proc is not None:
            _end(proc)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify()
        if self._thread is not None:
            self._thread.join(3.0)
            self._thread = None
        super().close()

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "dropped": self.dropped, "restarts": self.restarts, "error": self.error}


def _end(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        if proc.stdin is not None:
            proc.stdin.close()
    try:
        proc.wait(1.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(1.0)


class NullSpeaker:
    """Plays nothing; counts what the clerk said and hands it to listeners (echo canceller, mix)."""

    name = "none"

    def __init__(self) -> None:
        self.listeners: list[PcmListener] = []
        self.played_ms = 0.0
        self.peak = 0
        self.error = ""

    def play(self, pcm: np.ndarray) -> None:
        """Mono int16 at 48 kHz, called on the event loop as the clerk's audio is decoded."""
        self.played_ms += len(pcm) / 48.0
        if len(pcm):
            self.peak = max(self.peak, int(np.abs(pcm.astype(np.int32)).max()))
        for listener in self.listeners:
            try:
                listener(pcm)
            except Exception:  # noqa: BLE001
                log.exception("speaker listener failed")
        self._play(pcm)

    def _play(self, pcm: np.ndarray) -> None:
        pass

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "played_ms": round(self.played_ms),
            "peak": self.peak,
            "error": self.error,
        }


class AlsaSpeaker(NullSpeaker):
    """The room's speaker through FFmpeg's ALSA output device; a failing device is reopened."""

    name = "alsa"

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device
        self._out: Any = None
        self._stream: Any = None
        self._retry_at = 0.0
        self._failures = 0

    def _play(self, pcm: np.ndarray) -> None:
        import av

        if self._out is None:
            if time.monotonic() < self._retry_at:
                return
            try:
                self._out = av.open(self.device, "w", format="alsa")
                self._stream = self._out.add_stream("pcm_s16le", rate=48000, layout="mono")
            except (av.FFmpegError, OSError, ValueError) as exc:
                self.error = f"speaker {self.device}: {exc} (check `aplay -l` and [media.call] speaker)"
                self._out = None
                self._retry()
                return
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        try:
            for packet in self._stream.encode(frame):
                self._out.mux(packet)
            self._failures = 0
            self.error = ""
        except (av.FFmpegError, OSError) as exc:
            self.error = f"speaker {self.device}: {exc}"
            self.close()
            self._retry()

    def _retry(self) -> None:
        self._retry_at = time.monotonic() + equal_jitter(self._failures, 1.0, 30.0)
        self._failures += 1

    def close(self) -> None:
        out, self._out = self._out, None
        if out is not None:
            with contextlib.suppress(Exception):
                out.close()


def open_speaker(spec: str) -> NullSpeaker:
    if spec.startswith("alsa:"):
        return AlsaSpeaker(spec.split(":", 1)[1])
    return NullSpeaker()
