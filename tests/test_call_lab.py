"""The call lab end to end: Janus in the test's own network namespace, the clerk as headless Chromium on
the reference page, the kiosk as aiortc driven by the product's JanusVideoRoom client.

The kiosk publishes what the real one does (room camera, microphone, document camera) as "kiosk-test"
and subscribes to the clerk; the browsers report what they decode through their getStats().
"""

from __future__ import annotations

import asyncio
import fractions
import socket
import threading
import time

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

# The lab's fixtures come as a plugin; its helpers are imported too, so rewrite its asserts first.
pytest.register_assert_rewrite("call_lab")
from call_lab import TimecodeVideoTrack, ToneTrack, connect_kiosk, percentile  # noqa: E402

from drivers.camera.timecode import (  # noqa: E402
    MAX_MS,
    draw_timecode,
    draw_timecode_frame,
    read_timecode,
    read_timecode_frame,
)
from sim.clerk_browser import audio_receiving, videos_decoding  # noqa: E402
from sim.netns import NetNs, link, netns_available  # noqa: E402

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = pytest.mark.xdist_group("heavy")

pytest_plugins = ["call_lab"]

ROOM_CAM = (320, 240)
DOC_CAM = (480, 360)


def kiosk_tracks() -> list:
    return [TimecodeVideoTrack(*ROOM_CAM), ToneTrack(), TimecodeVideoTrack(*DOC_CAM, shade=140)]


def _latency_line(name: str, samples: list[int]) -> str:
    return (
        f"{name}: {len(samples)} samples, p50 {percentile(samples, 50)} ms, p95 {percentile(samples, 95)} ms"
        if samples
        else f"{name}: no samples"
    )


async def test_kiosk_and_clerk_see_and_hear_each_other(call_netns, janus, clerk) -> None:
    """The clerk joins and publishes; the kiosk publishes two videos and a tone and subscribes to the
    clerk: each side decodes the other's video at the size it was sent and receives its audio."""
    browser = clerk(source="canvas", timecode=True)
    await asyncio.to_thread(browser.wait_for, lambda s: s["joined"] and s["published"], 20, "clerk published")
    with call_netns.entered():
        call = await connect_kiosk(
            janus.http_url, tracks=kiosk_tracks(), descriptions={"2": "document camera"}
        )
        try:
            stats = await asyncio.to_thread(
                browser.wait_for,
                lambda s: len(videos_decoding(s, "kiosk-test", 30)) == 2 and audio_receiving(s, "kiosk-test"),
                30,
                "both kiosk videos decoding and kiosk audio received",
            )
            sizes = sorted(
                (m["frameWidth"], m["frameHeight"]) for m in videos_decoding(stats, "kiosk-test", 30)
            )
            assert sizes == sorted([ROOM_CAM, DOC_CAM]), stats
            assert not stats["errors"], stats["errors"]

            video = [s for s in call.sinks if s.track.kind == "video"]
            audio = [s for s in call.sinks if s.track.kind == "audio"]
            assert len(video) == 1 and len(audio) == 1, [s.track.kind for s in call.sinks]
            await video[0].wait(lambda s: s.frames >= 30, 20, "30 clerk video frames")
            await audio[0].wait(lambda s: s.audio_samples > 48000, 20, "a second of clerk audio")
            assert video[0].sizes == {(320, 240)}

            # Latency both ways, for the record (the benchmark asserts the budget, not this test).
            await video[0].wait(lambda s: len(s.latencies_ms) >= 30, 10, "30 timecoded clerk frames")
            stats = await asyncio.to_thread(
                browser.wait_for, lambda s: s["latency_count"] >= 30, 10, "kiosk latencies"
            )
            print()
            print(_latency_line("clerk → kiosk (Chromium canvas → aiortc)", video[0].latencies_ms[10:]))
            print(_latency_line("kiosk → clerk (aiortc → Chromium)", stats["latency_ms"]))
        finally:
            await call.close()


async def test_supervisor_view_receives_kiosk_and_clerk(call_netns, janus, clerk) -> None:
    """The supervisor's live view publishes nothing and shows the kiosk's feeds and the clerk's."""
    agent = clerk(source="camera", display="clerk-7")
    await asyncio.to_thread(agent.wait_for, lambda s: s["published"], 20, "clerk published")
    with call_netns.entered():
        call = await connect_kiosk(janus.http_url, tracks=kiosk_tracks(), subscribe_to=None)
        try:
            viewer = clerk(viewer=True)
            stats = await asyncio.to_thread(
                viewer.wait_for,
                lambda s: (
                    len(videos_decoding(s, "kiosk-test", 20)) == 2 and videos_decoding(s, "clerk-7", 20)
                ),
                30,
                "the kiosk's two videos and the clerk's decoding in the viewer",
            )
            assert stats["role"] == "viewer" and not stats["published"]
            assert stats["outbound"]["bytesSent"] == 0
            assert {m["frameWidth"] for m in videos_decoding(stats, "kiosk-test", 20)} == {
                ROOM_CAM[0],
                DOC_CAM[0],
            }
            # Chromium's fake camera (a testsrc2 y4m at the page's default 320x240).
            assert videos_decoding(stats, "clerk-7", 20)[0]["frameWidth"] == 320
        finally:
            await call.close()


async def test_clerk_subscribes_again_when_the_kiosk_comes_back(call_netns, janus, clerk) -> None:
    """A kiosk that drops out of the room and joins again (a network cut) is shown again: the page
    drops the old feed and subscribes to the new one."""
    browser = clerk(source="canvas")
    await asyncio.to_thread(browser.wait_for, lambda s: s["published"], 20, "clerk published")
    with call_netns.entered():
        first = await connect_kiosk(janus.http_url, tracks=[TimecodeVideoTrack(*ROOM_CAM)], subscribe_to=None)
        try:
            s1 = await asyncio.to_thread(
                browser.wait_for, lambda s: videos_decoding(s, "kiosk-test", 10), 20, "first kiosk feed"
            )
            old_feed = next(f["id"] for f in s1["feeds"] if f["display"] == "kiosk-test")
        finally:
            await first.close()
        await asyncio.to_thread(
            browser.wait_for,
            lambda s: not any(f["id"] == old_feed for f in s["feeds"]),
            15,
            "old feed dropped",
        )
        second = await connect_kiosk(janus.http_url, tracks=[TimecodeVideoTrack(*DOC_CAM)], subscribe_to=None)
        try:
            s2 = await asyncio.to_thread(
                browser.wait_for,
                lambda s: [m for m in videos_decoding(s, "kiosk-test", 10) if m["frameWidth"] == DOC_CAM[0]],
                20,
                "the returning kiosk's feed decoding",
            )
            assert s2["subscribed_feeds"] == 2
            assert all(f["id"] != old_feed for f in s2["feeds"])
        finally:
            await second.close()


async def test_clerk_shows_a_returning_kiosk_while_its_old_publisher_is_still_in_the_room(
    call_netns, janus, clerk
) -> None:
    """A kiosk whose link dropped rejoins as a new publisher with the same display while its old one is
    still in the room (Janus keeps a vanished kiosk's session until it times out): the page decodes the
    new feed within seconds, and drops the old one once the kiosk destroys its stale session."""
    browser = clerk(source="canvas")
    await asyncio.to_thread(browser.wait_for, lambda s: s["published"], 20, "clerk published")
    with call_netns.entered():
        old = await connect_kiosk(janus.http_url, tracks=[TimecodeVideoTrack(*ROOM_CAM)], subscribe_to=None)
        new = None
        try:
            s1 = await asyncio.to_thread(
                browser.wait_for, lambda s: videos_decoding(s, "kiosk-test", 10), 20, "first kiosk feed"
            )
            old_feed = next(f["id"] for f in s1["feeds"] if f["display"] == "kiosk-test")
            new = await connect_kiosk(
                janus.http_url, tracks=[TimecodeVideoTrack(*DOC_CAM)], subscribe_to=None
            )
            s2 = await asyncio.to_thread(
                browser.wait_for,
                lambda s: [m for m in videos_decoding(s, "kiosk-test", 10) if m["frameWidth"] == DOC_CAM[0]],
                10,
                "the returning kiosk's feed decoding beside its old one",
            )
            assert {f["id"] for f in s2["feeds"]} == {old_feed, new.room.publisher_id}, s2["feeds"]
            # What CallSession does after a rejoin: destroy the session the dropped link left behind.
            await new.room.destroy_session(old.room.session_id)
            s3 = await asyncio.to_thread(
                browser.wait_for,
                lambda s: [f["id"] for f in s["feeds"]] == [new.room.publisher_id],
                5,
                "the old feed dropped when its session was destroyed",
            )
            assert videos_decoding(s3, "kiosk-test", 10), s3["feeds"]
            assert s3["subscribed_feeds"] == 2 and not s3["errors"], s3
        finally:
            await old.close()  # its session is gone: close() must still end quietly
            if new is not None:
                await new.close()


def test_link_between_namespaces_delays_and_cuts_like_a_village_link() -> None:
    """Two namespaces joined by link(): 50 ms each way doubles into a 100 ms round trip, a cut drops
    everything silently (no error, no answer), and restore brings the shaped link back."""
    reason = netns_available()
    if reason:
        pytest.skip(reason)
    with NetNs.create("kvil") as kiosk, NetNs.create("kcty") as county:
        wire = link(kiosk, county)
        try:
            with county.entered():
                echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            echo.bind((wire.addr_b, 0))
            threading.Thread(target=_echo, args=(echo,), daemon=True).start()
            with kiosk.entered():
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            probe.settimeout(1.0)
            target = echo.getsockname()
            assert _rtt_ms(probe, target) < 50
            wire.netem(delay_ms=50, loss_pct=0, rate_kbit=1000)
            assert 100 <= _rtt_ms(probe, target) < 250
            wire.cut()
            assert wire.is_cut
            probe.sendto(b"lost?", target)  # a silent drop: sending works, nothing comes back
            with pytest.raises(TimeoutError):
                probe.recvfrom(100)
            wire.restore()
            assert 100 <= _rtt_ms(probe, target) < 250
            echo.sendto(b"q", echo.getsockname())
        finally:
            close = getattr(wire, "close", None)
            if close is not None:
                close()


def _echo(sock: socket.socket) -> None:
    while True:
        data, addr = sock.recvfrom(2048)
        if data == b"q":
            return
        sock.sendto(data, addr)


def _rtt_ms(sock: socket.socket, target: tuple[str, int]) -> float:
    """The best of three round trips (the first may include ARP)."""
    best = float("inf")
    for _ in range(3):
        t0 = time.monotonic()
        sock.sendto(b"ping", target)
        sock.recvfrom(100)
        best = min(best, (time.monotonic() - t0) * 1000)
    return best


# --- the frame timecode (drivers/camera/timecode.py; clerk.js is its twin) ---------------------------


@settings(max_examples=200, deadline=None)
@given(st.integers(0, MAX_MS), st.sampled_from([(640, 360), (320, 240), (48, 8), (1280, 720), (97, 61)]))
def test_timecode_round_trips_on_a_raw_plane(ms: int, size: tuple[int, int]) -> None:
    w, h = size
    plane = np.full((h, w), 90, np.uint8)
    draw_timecode(plane, ms)
    assert read_timecode(plane) == ms


def test_a_frame_without_a_timecode_reads_none() -> None:
    rng = np.random.default_rng(1)
    assert read_timecode(np.full((240, 320), 128, np.uint8)) is None
    assert read_timecode(rng.integers(0, 256, (240, 320), dtype=np.uint8)) is None
    assert read_timecode(np.zeros((240, 320), np.uint8)) is None


@pytest.mark.parametrize(
    ("width", "height", "bitrate"),
    [(640, 360, 500_000), (320, 240, 250_000), (320, 240, 40_000), (640, 360, 60_000)],
)
def test_timecode_survives_a_real_vp8_encode_and_decode(width: int, height: int, bitrate: int) -> None:
    """Noisy frames (the worst case for the encoder) through libvpx at the call's sizes, also starved
    of bits: every decoded frame still reads its own code."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.bit_rate = bitrate
    enc.time_base = fractions.Fraction(1, 30)
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "error-resilient": "1"}
    dec = av.CodecContext.create("libvpx", "r")
    rng = np.random.default_rng(7)
    base = int(time.time() * 1000)
    sent, read = [], []
    for i in range(30):
        frame = av.VideoFrame(width, height, "yuv420p")
        for p in frame.planes:
            np.frombuffer(p, np.uint8)[:] = rng.integers(0, 256, p.buffer_size, dtype=np.uint8)
        frame.pts = i
        sent.append(base + i * 33)
        draw_timecode_frame(frame, sent[-1])
        for packet in enc.encode(frame):
            read += [read_timecode_frame(d) for d in dec.decode(packet)]
    for packet in enc.encode(None):
        read += [read_timecode_frame(d) for d in dec.decode(packet)]
    assert read == sent
