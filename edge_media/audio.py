"""Audio from a microphone (ALSA through PyAV) or a ``lavfi`` graph, encoded to AAC in sync with video.

``AudioSource`` runs the device in a capture thread and hands ``CapturedAudio`` over a small bounded
queue that drops the oldest block when full (a live microphone must never stall its driver). Each
block is stamped with the capture time of its first sample on ``time.monotonic()``, the clock the
cameras stamp video frames on, so the pipeline can put both on one timeline: ``pts = t_capture -
origin`` with the pipeline's origin. A lost device is reopened with backoff and jitter; ``health()``
says ``missing`` with the reason meanwhile, and the video never waits for the audio.

``AudioEncoder`` resamples to the AAC encoder's format (``fltp``, 1024-sample frames) and numbers the
samples continuously from the first block's capture time; if the capture clock runs more than
``RESYNC_S`` ahead of the sample count (blocks dropped, a device reopened) the count jumps forward to
it, so audio never drifts away from video.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from kiosk_core.errors import MediaError
from kiosk_core.health import Health, HealthStatus
from kiosk_core.supervisor import capture_thread

if TYPE_CHECKING:
    import av

    from edge_media.config import AudioConfig

log = logging.getLogger("kiosk.media.audio")
RESYNC_S = 0.1  # capture clock ahead of the sample count by more than this -> jump forward


class AudioError(MediaError):
    code = "media.audio"


@dataclass(frozen=True, slots=True)
class CapturedAudio:
    frame: av.AudioFrame
    t_capture: float  # monotonic seconds of the block's first sample


@dataclass(slots=True)
class EncodedAudio:
    packet: av.Packet  # pts/dts in 1/sample_rate
    t_capture: float
    keyframe: bool = True


def device_of(spec: str) -> tuple[str, str]:
    """``(format, device)`` for a SPEC: ``alsa:hw:1,0`` -> ("alsa", "hw:1,0"), ``lavfi:<graph>``."""
    kind, _, rest = spec.partition(":")
    if kind not in ("alsa", "lavfi") or not rest:
        raise AudioError(f"audio source {spec!r} must be alsa:<device> (e.g. alsa:hw:1,0) or lavfi:<graph>")
    return kind, rest


class AudioSource:
    kind = "microphone"

    def __init__(
        self, spec: str, *, queue_blocks: int = 64, reopen_base_s: float = 0.25, reopen_cap_s: float = 5.0
    ) -> None:
        self.spec = spec
        self.format, self.device = device_of(spec)
        self.reopen_base_s, self.reopen_cap_s = reopen_base_s, reopen_cap_s
        self._queue: collections.deque[CapturedAudio] = collections.deque(maxlen=max(1, queue_blocks))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._runner = capture_thread(
            f"microphone {spec}",
            thread="audio-capture",
            stop=self._stop,
            capture=self._capture,
            deliver=self._deliver,
            ended=lambda: AudioError(f"microphone {spec}: the stream ended"),
            base_s=reopen_base_s,
            cap_s=reopen_cap_s,
            classify=self._classify,
            is_device_error=_is_device_error,
            logger=log,
        )
        self._supervisor = self._runner.policy
        self._listeners: list[Callable[[], None]] = []
        self.blocks = 0
        self.dropped = 0

    def open(self) -> None:
        """Start capturing in the background; a missing device shows in ``health()``, never raises."""
        self._runner.start()

    def close(self, timeout_s: float = 3.0) -> None:
        """Stop capturing and release the device. Idempotent; waits at most ``timeout_s``."""
        self._runner.stop(timeout_s)
        self._supervisor.reset("closed")

    def add_listener(self, wake: Callable[[], None]) -> None:
        self._listeners.append(wake)

    def remove_listener(self, wake: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(wake)

    def drain(self) -> list[CapturedAudio]:
        with self._lock:
            blocks = list(self._queue)
            self._queue.clear()
        return blocks

    def health(self) -> Health:
        return self._supervisor.health

    @property
    def reopens(self) -> int:
        return self._supervisor.total_failures

    def stats(self) -> dict[str, Any]:
        return {
            "source": self.spec,
            "health": self.health().as_dict(),
            "blocks": self.blocks,
            "dropped": self.dropped,
            "reopens": self.reopens,
        }

    def _capture(self) -> Iterator[tuple[av.AudioFrame, float]]:
        import av

        try:
            container = av.open(self.device, format=self.format)
        except (av.FFmpegError, OSError, ValueError) as exc:
            hint = " (check `arecord -l` and [media.audio] source)" if self.format == "alsa" else ""
            raise AudioError(f"microphone {self.spec}: cannot open: {exc}{hint}") from None
        try:
            stream = container.streams.audio[0]
            t0 = time.monotonic()
            for frame in container.decode(stream):
                if self._stop.is_set():
                    return
                now = time.monotonic()
                if self.format == "lavfi":  # a simulation: paced in real time from its own timeline
                    t = t0 + float(frame.time or 0.0)
                    self._stop.wait(max(0.0, t + frame.samples / frame.sample_rate - now))
                else:  # ALSA hands a block over once its last sample is captured
                    t = now - frame.samples / frame.sample_rate
                yield frame, t
        finally:
            container.close()

    def _deliver(self, item: tuple[av.AudioFrame, float]) -> None:
        with self._lock:
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
            self._queue.append(CapturedAudio(*item))
        self.blocks += 1
        for wake in self._listeners:
            wake()

    def _classify(self, exc: Exception, serving: bool) -> Health:
        reason = str(exc) if isinstance(exc, AudioError) else f"microphone {self.spec}: {exc}"
        return Health(HealthStatus.MISSING, reason)


def _is_device_error(exc: Exception) -> bool:
    """What a microphone lets out when it fails; anything else is a bug."""
    import av  # loaded already: _capture() opened the device through it

    return isinstance(exc, AudioError | OSError | av.FFmpegError)


class AudioEncoder:
    """AAC for the recording: ``CapturedAudio`` in, ``EncodedAudio`` out (pts in 1/sample_rate)."""

    def __init__(self, cfg: AudioConfig, *, origin: float) -> None:
        import av

        self.cfg = cfg
        self.origin = origin
        self.sample_rate = cfg.sample_rate
        self.time_base = Fraction(1, cfg.sample_rate)
        layout = "mono" if cfg.channels == 1 else "stereo"
        self._holder = av.open(os.devnull, "w", format="null")
        stream = self._holder.add_stream("aac", rate=cfg.sample_rate)
        ctx = stream.codec_context
        ctx.layout, ctx.format, ctx.bit_rate = layout, "fltp", cfg.bitrate_kbps * 1000
        ctx.time_base = self.time_base
        ctx.flags |= av.codec.context.Flags.global_header  # MP4 wants the AudioSpecificConfig out of band
        try:
            ctx.open()
        except av.FFmpegError as exc:
            raise AudioError(f"cannot open the AAC encoder: {exc}") from None
        self._ctx, self.template = ctx, stream
        self._layout = layout
        self._resampler = self._new_resampler()
        # The input's (format, layout, rate): the call's audio processor hands s16 mono 48 kHz while a
        # call runs, the microphone its own format otherwise; a change gets a fresh resampler.
        self._input: tuple[str, str, int] | None = None
        self._next_pts: int | None = None  # of the next sample the resampler hands out
        self.frames = 0
        self.packets = 0

    def _new_resampler(self) -> av.AudioResampler:
        import av

        return av.AudioResampler(
            format="fltp", layout=self._layout, rate=self.sample_rate, frame_size=self._ctx.frame_size or 1024
        )

    @property
    def extradata(self) -> bytes | None:
        return self._ctx.extradata

    def encode(self, block: CapturedAudio) -> list[EncodedAudio]:
        import av

        captured_pts = round((block.t_capture - self.origin) * self.sample_rate)
        if self._next_pts is None or captured_pts - self._next_pts > RESYNC_S * self.sample_rate:
            self._next_pts = max(captured_pts, self._next_pts or 0)
        block.frame.pts = None  # numbered here, on the pipeline's timeline
        kind = (block.frame.format.name, block.frame.layout.name, block.frame.sample_rate)
        if self._input is not None and kind != self._input:
            self._resampler = self._new_resampler()  # loses at most one AAC frame's worth of samples
        self._input = kind
        out: list[EncodedAudio] = []
        try:
            for frame in self._resampler.resample(block.frame):
                frame.pts, frame.time_base = self._next_pts, self.time_base
                self._next_pts += frame.samples
                out += self._wrap(self._ctx.encode(frame))
        except (av.FFmpegError, ValueError) as exc:
            raise AudioError(f"audio encoding failed: {exc}") from None
        self.frames += 1
        return out

    def close(self) -> list[EncodedAudio]:
        import av

        try:
            return self._wrap(self._ctx.encode(None))
        except av.FFmpegError:
            return []

    def _wrap(self, packets: list[av.Packet]) -> list[EncodedAudio]:
        out = []
        for p in packets:
            p.time_base = self.time_base
            self.packets += 1
            out.append(EncodedAudio(p, self.origin + (p.pts or 0) / self.sample_rate))
        return out

    def stats(self) -> dict[str, Any]:
        return {
            "codec": "aac",
            "sample_rate": self.sample_rate,
            "channels": self.cfg.channels,
            "bitrate_kbps": self.cfg.bitrate_kbps,
            "frames": self.frames,
            "packets": self.packets,
        }
