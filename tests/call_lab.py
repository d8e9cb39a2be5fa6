"""The call lab for tests: a network namespace, Janus in it, clerk browsers, synthetic kiosk media.

Use from a test module with ``pytest_plugins = ["call_lab"]`` (fixtures) and ``from call_lab import ...``
(helpers). Fixtures (function scope, everything cleaned up; skipped with the reason when root, ``ip
netns``, Janus or Chromium is missing):

- ``call_netns``: a :class:`~sim.netns.NetNs` with ``lo`` up and a veth carrying 127.0.0.2/32
  (``call_netns.media_if`` names it); run the aiortc side with ``with call_netns.entered():``;
- ``janus``: a :class:`~sim.janus.JanusServer` in it, gathering ICE only on that veth;
- ``clerk``: a factory ``clerk(**ClerkBrowser kwargs) -> ClerkBrowser`` already started in the
  namespace against ``janus.http_url`` (pass ``janus_url=`` for the WebSocket one); all stopped at
  teardown.

Helpers: :class:`TimecodeVideoTrack` (a synthetic camera drawing the frame timecode),
:class:`ToneTrack` (440 Hz bursts), :class:`TrackSink` (consumes a remote track: counts, sizes,
latencies from timecodes), :func:`connect_kiosk` (publish + subscribe with aiortc over
:class:`~edge_media.call.janus.JanusVideoRoom`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack

from drivers.camera.timecode import draw_timecode_frame, read_timecode_frame
from edge_media.call.janus import JanusVideoRoom, Publisher
from sim.clerk_browser import ClerkBrowser, clerk_browser_available
from sim.janus import JanusServer, janus_available
from sim.mosquitto import Mosquitto
from sim.netns import NetNs, netns_available
from tests.test_media_service import MEDIA

MEDIA_ADDR = "127.0.0.2/32"


# --- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def call_netns() -> Iterator[NetNs]:
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    ns = NetNs.create("kcall")
    try:
        ns.media_if = ns.add_address_link(MEDIA_ADDR)  # type: ignore[attr-defined]
        yield ns
    finally:
        ns.close()


@pytest.fixture
def janus(call_netns: NetNs) -> Iterator[JanusServer]:
    reason = janus_available()
    if reason:
        pytest.skip(reason)
    server = JanusServer(netns=call_netns, ice_enforce=call_netns.media_if)  # type: ignore[attr-defined]
    with server:
        yield server


@pytest.fixture
def clerk(call_netns: NetNs, janus: JanusServer) -> Iterator[Callable[..., ClerkBrowser]]:
    reason = clerk_browser_available()
    if reason:
        pytest.skip(reason)
    started: list[ClerkBrowser] = []

    def make(**kwargs: Any) -> ClerkBrowser:
        url = kwargs.pop("janus_url", janus.http_url)
        browser = ClerkBrowser(url, netns=call_netns, **kwargs)
        started.append(browser)
        return browser.start()

    try:
        yield make
    finally:
        for b in reversed(started):
            b.stop()


# --- synthetic kiosk media ---------------------------------------------------------------------------


class TimecodeVideoTrack(VideoStreamTrack):
    """A synthetic camera: a moving bar on grey, the timecode strip drawn at capture time (wall ms)."""

    def __init__(self, width: int = 320, height: int = 240, *, shade: int = 96) -> None:
        super().__init__()
        self.width, self.height, self.shade = width, height, shade
        self.frames = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        y = np.frombuffer(frame.planes[0], np.uint8).reshape(-1, frame.planes[0].line_size)
        y[:] = self.shade
        x = (self.frames * 4) % max(1, self.width - 32)
        y[self.height // 3 : 2 * self.height // 3, x : x + 32] = 200
        for i in (1, 2):
            np.frombuffer(frame.planes[i], np.uint8)[:] = 128
        draw_timecode_frame(frame, int(time.time() * 1000))
        frame.pts, frame.time_base = pts, time_base
        self.frames += 1
        return frame


class ToneTrack(MediaStreamTrack):
    """Mono 48 kHz s16 audio: 440 Hz, 250 ms on / 250 ms off, paced in 20 ms frames."""

    kind = "audio"
    RATE = 48000
    SAMPLES = 960

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += self.SAMPLES
            wait = self._start + self._pts / self.RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        t = (self._pts + np.arange(self.SAMPLES)) / self.RATE
        on = (np.floor(t / 0.25) % 2) == 0
        samples = (np.sin(2 * math.pi * 440 * t) * 8000 * on).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.RATE)
        return frame


@dataclass
class TrackSink:
    """Consumes one remote track in a task; what the kiosk would show or play."""

    track: MediaStreamTrack
    frames: int = 0
    sizes: set[tuple[int, int]] = field(default_factory=set)
    latencies_ms: list[int] = field(default_factory=list)
    audio_samples: int = 0
    task: asyncio.Task[None] | None = None
    updated: asyncio.Event = field(default_factory=asyncio.Event)

    def start(self) -> TrackSink:
        self.task = asyncio.ensure_future(self._run())
        return self

    async def _run(self) -> None:
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await self.track.recv()
                self.frames += 1
                if isinstance(frame, av.VideoFrame):
                    self.sizes.add((frame.width, frame.height))
                    code = read_timecode_frame(frame)
                    if code is not None:
                        self.latencies_ms.append(int(time.time() * 1000) - code)
                else:
                    self.audio_samples += frame.samples
                self.updated.set()

    async def wait(self, cond: Callable[[TrackSink], bool], timeout_s: float, what: str) -> None:
        """Wait until ``cond(self)`` holds (checked after every frame)."""
        try:
            async with asyncio.timeout(timeout_s):
                while not cond(self):
                    self.updated.clear()
                    await self.updated.wait()
        except TimeoutError:
            raise AssertionError(
                f"{what} within {timeout_s} s: frames={self.frames} sizes={self.sizes}"
            ) from None

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@dataclass
class KioskCall:
    """The aiortc side of a lab call: publisher pc, subscriber pc and the sinks of the clerk's tracks."""

    room: JanusVideoRoom
    pub_pc: RTCPeerConnection
    sub_pc: RTCPeerConnection | None = None
    sinks: list[TrackSink] = field(default_factory=list)

    async def close(self) -> None:
        for s in self.sinks:
            await s.stop()
        for pc in (self.sub_pc, self.pub_pc):
            if pc is not None:
                await pc.close()
        await self.room.close()


async def connect_kiosk(
    url: str,
    *,
    display: str = "kiosk-test",
    tracks: list[MediaStreamTrack],
    subscribe_to: str | None = "clerk",
    room: int = 1234,
    pin: str | None = None,
    timeout_s: float = 20.0,
    descriptions: dict[str, str] | None = None,
) -> KioskCall:
    """Publish ``tracks`` as ``display`` and (if ``subscribe_to``) subscribe to the first publisher whose
    display starts with it; every received track gets a started :class:`TrackSink`."""
    client = JanusVideoRoom(url, room, display, pin=pin)
    await client.connect()
    pub = RTCPeerConnection()
    call = KioskCall(client, pub)
    try:
        for t in tracks:
            pub.addTransceiver(t, direction="sendonly")
        await pub.setLocalDescription(await pub.createOffer())
        answer = await client.publish(pub.localDescription.sdp, descriptions=descriptions)
        await pub.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        if subscribe_to is not None:
            feed: Publisher = await client.wait_publisher(subscribe_to, timeout_s)
            offer = await client.subscribe([feed])
            call.sub_pc = sub = RTCPeerConnection()

            @sub.on("track")
            def _on_track(track: MediaStreamTrack) -> None:
                call.sinks.append(TrackSink(track).start())

            await sub.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await sub.setLocalDescription(await sub.createAnswer())
            await client.start(sub.localDescription.sdp)
    except BaseException:
        await call.close()
        raise
    return call


def percentile(values: list[int] | list[float], p: float) -> float | None:
    """The ``p``-th percentile (nearest rank) or None for no values."""
    if not values:
        return None
    s = sorted(values)
    return float(s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))])


# --- the kiosk-media process in the lab ---------------------------------------------------------------

CALL = (
    MEDIA
    + """
[media.audio]
source = "lavfi:sine=frequency=300:sample_rate=48000"
[media.call]
allow_plain_loopback = true
size = "320x240"
doccam_size = "320x240"
text_fallback_s = 3
"""
)
PREVIEW_TOPIC = "kiosk/local/media/call/preview"


class Lab:
    """The namespace (entered by the test's thread), Janus and a local mosquitto in it."""

    def __init__(self, ns: NetNs, janus: JanusServer, bus: Mosquitto) -> None:
        self.ns, self.janus, self.bus = ns, janus, bus

    def media(self, url: str | None = None, **over: object) -> dict[str, object]:
        """The ``media`` object the platform would send for this lab's room."""
        return {
            "kind": "janus-videoroom",
            "url": url or self.janus.http_url,
            "room": 1234,
            "display": "kiosk-0001",
            "ice_servers": [],
            **over,
        }


@pytest.fixture
def lab(call_netns: NetNs, janus: JanusServer) -> Iterator[Lab]:
    """For tests that run kiosk-media (in their own loop) against the lab's Janus: the test's thread
    stays in the namespace for the whole test, so the media process, its bus and the clerk meet there."""
    with call_netns.entered():
        bus = Mosquitto(name="call-bus").start()
        try:
            yield Lab(call_netns, janus, bus)
        finally:
            bus.stop()
