"""What the kiosk sends in the call: aiortc tracks fed by the one capture of the media process.

- ``FrameSlot`` hands the newest frame from a pipeline or capture thread to the asyncio side, keeping
  only the latest (a call never queues old pictures; latency beats completeness).
- ``CallVideoTrack`` sends the room camera as the pipeline's selector hands it out (so camera failover
  inside the kiosk needs nothing from the call), or the document camera's live preview. It paces to its
  frame rate and scales to a size chosen from the uplink's estimate: resolution drops before frame
  rate (``LADDER``), and below ``min_video_kbps`` the track pauses and the call goes on as audio.
- ``CallAudioTrack`` sends the microphone (after the echo canceller) as Opus packets it encodes itself,
  with in-band FEC and a loss hint, which aiortc's own Opus encoder does not set; aiortc packetises
  ``av.Packet``s as they are.

Frames are resized in a worker thread: the event loop carries the call's RTP and the local bus.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

if TYPE_CHECKING:
    import av

log = logging.getLogger("kiosk.media.call")

VIDEO_CLOCK = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_RATE = 48_000
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_RATE)
OPUS_FRAME = 960  # 20 ms at 48 kHz
# (share of the bitrate the full size needs, share of the configured width and height): resolution
# falls before frame rate, as WebRTC's "maintain-framerate" degradation preference does.
LADDER = ((1.0, 1.0), (0.5, 0.75), (0.0, 0.5))
# VP8 in real time looks decent from about 0.1 bit per pixel per frame (640x360 at 15 fps: 346 kbit/s).
BITS_PER_PIXEL = 0.1


def even(n: float) -> int:
    return max(2, int(n) // 2 * 2)


class FrameSlot:
    """The newest frame of a source, from any thread to one asyncio consumer."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._frame: tuple[av.VideoFrame, float] | None = None
        self._seq = 0
        self._event = asyncio.Event()
        self.offered = 0

    def put(self, frame: av.VideoFrame, t_capture: float) -> None:
        """Thread-safe; replaces a frame not yet taken."""
        with self._lock:
            self._frame = (frame, t_capture)
            self._seq += 1
        self.offered += 1
        if not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._event.set)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def peek(self) -> tuple[int, tuple[av.VideoFrame, float] | None]:
        with self._lock:
            return self._seq, self._frame

    async def newer_than(self, seq: int, timeout_s: float) -> tuple[int, tuple[av.VideoFrame, float] | None]:
        """The newest frame once it is newer than ``seq``, or what is there after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.peek()
            if got[0] != seq:
                return got
            self._event.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return got
            try:
                async with asyncio.timeout(remaining):
                    await self._event.wait()
            except TimeoutError:
                return self.peek()


class CallVideoTrack(MediaStreamTrack):
    """A camera as a WebRTC video track (``name`` is ``room`` or ``doccam``)."""

    kind = "video"

    def __init__(
        self,
        name: str,
        slot: FrameSlot,
        *,
        size: tuple[int, int],
        fps: float,
        min_kbps: int,
        hold_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.name = name
        self.slot = slot
        self.full_size = size
        self.fps = fps
        self.min_kbps = min_kbps
        self.hold_s = hold_s  # resend the last picture this often when the source is still (a page)
        self.size = size
        self.target_kbps: float | None = None
        self.paused = False
        self.sent = 0
        self.resizes = 0
        self._seq = 0
        self._t0: float | None = None
        self._pts = -1
        self._last_capture: float | None = None
        self._src_seq = 0
        self._src_prev: float | None = None
        self._src_gap: float | None = None  # the source's frame interval, smoothed
        self._resume = asyncio.Event()
        self._resume.set()
        from av.video.reformatter import VideoReformatter

        self._reformatter = VideoReformatter()

    def set_target_kbps(self, kbps: float | None) -> None:
        """The uplink's estimate for this track: picks the size, or pauses below ``min_kbps``."""
        self.target_kbps = kbps
        if kbps is None:
            return
        self.paused = kbps < self.min_kbps
        if self.paused:
            self._resume.clear()
        else:
            self._resume.set()
        need = self.full_size[0] * self.full_size[1] * self.fps * BITS_PER_PIXEL / 1000
        share = next(s for floor, s in LADDER if kbps >= floor * need)
        size = (even(self.full_size[0] * share), even(self.full_size[1] * share))
        if size != self.size:
            log.info("call %s video: %dx%d at %.0f kbit/s", self.name, *size, kbps)
            self.size = size
            self.resizes += 1

    def resume(self) -> None:
        self.paused = False
        self._resume.set()

    async def _next_frame(self) -> tuple[int, tuple[av.VideoFrame, float]]:
        """The next picture to send: the first new capture at least a frame period (less half the
        source's own interval) after the last one sent, taken the moment it arrives.

        Sending on the capture's beat, not on a timer of our own, keeps the time from camera to wire
        short and, above all, even: a frame taken off a timer waits 0 to 1 source interval, which the
        clerk's jitter buffer measures as jitter and pays for in delay. A 30 fps camera gives 15 fps as
        every other frame; a source at or below the call's rate is sent whole. A still source (no new
        capture in ``hold_s``) has its last picture sent again.
        """
        period = 1 / self.fps
        seen = self._seq
        while True:
            seq, got = await self.slot.newer_than(seen, self.hold_s)
            if got is None:  # nothing captured yet: wait for the first picture
                if self.readyState != "live":
                    raise MediaStreamError
                continue
            if seq == seen:  # nothing newer within hold_s: send what there is (again)
                return seq, got
            t_capture = got[1]
            if self._last_capture is not None and self._src_prev is not None and seq == self._src_seq + 1:
                gap = t_capture - self._src_prev
                if 0 < gap < 1.0:
                    self._src_gap = gap if self._src_gap is None else 0.9 * self._src_gap + 0.1 * gap
            self._src_seq, self._src_prev = seq, t_capture
            tolerance = 0.5 * min(self._src_gap or period, period)
            if self._last_capture is None or t_capture - self._last_capture >= period - tolerance:
                return seq, got
            seen = seq  # too soon after the last one sent: wait for the next capture

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._resume.wait()
        seq, got = await self._next_frame()
        frame, t_capture = got
        frame, t_capture = got
        # Stamped when it leaves for the encoder, not when it was captured: the pipeline thread hands a
        # capture over 0 to one recording encode late (it encodes 720p between handovers), and with
        # capture stamps the clerk's jitter buffer would count that as network jitter and add it to the
        # delay of every frame. Sent times are what aiortc's sender reports map to wall clock, too.
        t = time.monotonic()
        self._seq = seq
        self._last_capture = t_capture
        w, h = self.size
        # Our own converter: frame.reformat() would use the frame's shared one, which the recording's
        # encoder may be using on the pipeline thread at this moment (a segfault in libswscale, seen).
        out = await asyncio.to_thread(self._reformatter.reformat, frame, width=w, height=h, format="yuv420p")
        if out is frame:  # already the size and format: a copy, since the pts is set below
            out = await asyncio.to_thread(_copy_frame, frame)
        if self._t0 is None:
            self._t0 = t
        pts = round((t - self._t0) * VIDEO_CLOCK)
        self._pts = pts = max(pts, self._pts + 1)
        out.pts, out.time_base = pts, VIDEO_TIME_BASE
        self.sent += 1
        return out


def _copy_frame(frame: av.VideoFrame) -> av.VideoFrame:
    import av

    return av.VideoFrame.from_ndarray(frame.to_ndarray(), format=frame.format.name)


class OpusFecEncoder:
    """Mono 48 kHz s16 in 20 ms frames -> Opus packets with in-band FEC (``av.Packet``, 1/48000)."""

    def __init__(self, bitrate: int = 32_000, expected_loss_pct: int = 10) -> None:
        import av

        ctx = av.CodecContext.create("libopus", "w")
        ctx.sample_rate, ctx.format, ctx.layout = AUDIO_RATE, "s16", "mono"
        ctx.bit_rate = bitrate
        ctx.time_base = AUDIO_TIME_BASE
        # fec: Opus's LBRR copy of the previous frame, used by the receiver when a packet is lost;
        # packet_loss tells the encoder how much to protect (libopus turns FEC on only above 0).
        # compression_level 5: libwebrtc's Opus complexity on ARM and mobile (10, FFmpeg's default, costs
        # a third more CPU for speech no one hears the difference in at 32 kbit/s).
        ctx.options = {
            "application": "voip",
            "fec": "1",
            "packet_loss": str(expected_loss_pct),
            "compression_level": "5",
        }
        ctx.open()
        self._ctx = ctx
        self.packets = 0

    def encode(self, pcm: np.ndarray, pts: int) -> list[av.Packet]:
        import av

        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, pts, AUDIO_TIME_BASE
        out = []
        for p in self._ctx.encode(frame):
            p.time_base = AUDIO_TIME_BASE
            out.append(p)
        self.packets += len(out)
        return out


class CallAudioTrack(MediaStreamTrack):
    """The microphone as Opus: ``push()`` mono int16 48 kHz from any thread; ``recv()`` packets."""

    kind = "audio"

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_ms: int = 400) -> None:
        super().__init__()
        self._loop = loop
        self._lock = threading.Lock()
        self._pcm: collections.deque[np.ndarray] = collections.deque()
        self._buffered = 0
        self._max = max_ms * AUDIO_RATE // 1000
        self._ready = asyncio.Event()
        self._wake_pending = False
        self._encoder = OpusFecEncoder()
        self._pts = 0
        self._pending: collections.deque[av.Packet] = collections.deque()
        self.dropped_ms = 0
        self.pushed = 0

    def push(self, pcm: np.ndarray) -> None:
        """Thread-safe. Keeps at most ``max_ms``: older audio is dropped (a live call never lags)."""
        with self._lock:
            self._pcm.append(pcm)
            self._buffered += len(pcm)
            while self._buffered - len(self._pcm[0]) >= self._max:
                self._buffered -= len(self._pcm.popleft())
                self.dropped_ms += 20
            # One wake-up of the event loop per frame's worth, not one per block: each is a write to the
            # loop's self-pipe and a turn of the loop (py-spy: 3 % of kiosk-media's samples in a call).
            wake = self._buffered >= OPUS_FRAME and not self._wake_pending
            if wake:
                self._wake_pending = True
        self.pushed += 1
        if wake and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._wake)
            except RuntimeError:
                pass

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._ready.set()

    def _take_frame(self) -> np.ndarray | None:
        with self._lock:
            if self._buffered < OPUS_FRAME:
                return None
            parts, need = [], OPUS_FRAME
            while need:
                head = self._pcm[0]
                if len(head) <= need:
                    parts.append(self._pcm.popleft())
                    need -= len(head)
                else:
                    parts.append(head[:need])
                    self._pcm[0] = head[need:]
                    need = 0
            self._buffered -= OPUS_FRAME
            return np.concatenate(parts)

    async def recv(self) -> av.Packet:
        while not self._pending:
            if self.readyState != "live":
                raise MediaStreamError
            pcm = self._take_frame()
            if pcm is None:
                self._ready.clear()
                try:
                    async with asyncio.timeout(1.0):
                        await self._ready.wait()
                except TimeoutError:
                    pass
                continue
            self._pending.extend(self._encoder.encode(pcm, self._pts))
            self._pts += OPUS_FRAME
        return self._pending.popleft()


def to_mono_s16(frame: av.AudioFrame, resampler: Any) -> np.ndarray:
    """An audio frame as mono int16 at 48 kHz (``resampler``: an ``av.AudioResampler`` to s16/mono/48k)."""
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    return np.concatenate(parts).astype(np.int16, copy=False) if parts else np.zeros(0, np.int16)


def mono_resampler() -> Any:
    import av

    return av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
