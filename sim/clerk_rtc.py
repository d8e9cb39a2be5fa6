"""A clerk in Python (aiortc): publishes a timecoded picture and a tone, watches the kiosk's feeds.

For tests and benchmarks that need the clerk's side without a browser (the reference clerk is the web
page in ``sim/clerk_web/``, driven by Chromium through ``sim/clerk_browser.py``). It joins the room as
publisher ``clerk-py``, publishes video with the frame timecode of ``drivers/camera/timecode.py`` (so the
kiosk can measure clerk -> kiosk latency) and a 440 Hz tone, subscribes to the first kiosk publisher, and
counts what it receives per track; received video frames are read for the kiosk's timecode (kiosk ->
clerk latency).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import time
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from drivers.camera.timecode import draw_timecode, read_timecode
from edge_media.call.janus import JanusVideoRoom


class TimecodeVideo(MediaStreamTrack):
    """Gray frames with a moving bar and the wall-clock timecode strip, at ``fps``."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: float = 15.0) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._n = 0
        self._t0: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self._t0 is None:
            self._t0 = time.monotonic()
        due = self._t0 + self._n / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        y = np.full((self.height, self.width), 90, np.uint8)
        x = (self._n * 4) % self.width
        y[self.height // 2 :, x : x + 16] = 200  # motion, so the encoder has something to code
        draw_timecode(y, int(time.time() * 1000))
        chroma = np.full((self.height // 2, self.width), 128, np.uint8)  # U and V planes, stacked
        frame = av.VideoFrame.from_ndarray(np.concatenate([y, chroma]), format="yuv420p")
        frame.pts, frame.time_base = self._n * 3000, fractions.Fraction(1, 90_000)
        self._n += 1
        return frame


class Tone(MediaStreamTrack):
    """440 Hz at -12 dBFS, 20 ms frames, mono 48 kHz."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._n = 0
        self._t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._t0 is None:
            self._t0 = time.monotonic()
        await asyncio.sleep(max(0.0, self._t0 + self._n * 0.02 - time.monotonic()))
        t = (np.arange(960) + self._n * 960) / 48_000
        pcm = (0.25 * 32767 * np.sin(2 * math.pi * 440 * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48_000, self._n * 960, fractions.Fraction(1, 48_000)
        self._n += 1
        return frame


@dataclass
class Received:
    kind: str
    frames: int = 0
    width: int = 0
    height: int = 0
    audio_ms: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)


class PythonClerk:
    """``async with PythonClerk(url, room) as clerk:`` then ``await clerk.wait_for(...)``."""

    def __init__(self, url: str, room: int, *, display: str = "clerk-py", video: bool = True) -> None:
        self.room = JanusVideoRoom(url, room, display)
        self.video = video
        self.received: list[Received] = []
        self._pcs: list[RTCPeerConnection] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> PythonClerk:
        await self.room.connect()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self._pcs.append(pc)
        if self.video:
            pc.addTransceiver(TimecodeVideo(), direction="sendonly")
        pc.addTransceiver(Tone(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        answer = await self.room.publish(pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        self._tasks.add(asyncio.ensure_future(self._watch_kiosk()))
        return self

    async def _watch_kiosk(self) -> None:
        kiosk = await self.room.wait_publisher("kiosk", 120)
        sub = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self._pcs.append(sub)

        @sub.on("track")
        def on_track(track: Any) -> None:
            rec = Received(track.kind)
            self.received.append(rec)
            self._tasks.add(asyncio.ensure_future(self._consume(track, rec)))

        offer = await self.room.subscribe([kiosk])
        await sub.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await sub.setLocalDescription(await sub.createAnswer())
        await self.room.start(sub.localDescription.sdp)

    async def _consume(self, track: Any, rec: Received) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                rec.frames += 1
                if rec.kind == "video":
                    rec.width, rec.height = frame.width, frame.height
                    code = read_timecode(frame.to_ndarray(format="gray"))
                    if code is not None:
                        rec.latencies_ms.append(time.time() * 1000 - code)
                else:
                    rec.audio_ms += frame.samples * 1000 / frame.sample_rate

    def videos(self) -> list[Received]:
        return [r for r in self.received if r.kind == "video"]

    def audio(self) -> list[Received]:
        return [r for r in self.received if r.kind == "audio"]

    async def wait_for(self, cond: Any, within_s: float) -> None:
        deadline = time.monotonic() + within_s
        while not cond(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"clerk: condition not met in {within_s} s: {self.received}")
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for pc in self._pcs:
            with contextlib.suppress(Exception):
                await pc.close()
        await self.room.close()
