"""The call's video track on its own: which captures it sends, when, and stamped how.

Real PyAV frames through a real ``FrameSlot`` from a producer thread, as the pipeline feeds it; no
network (tests/test_call_media.py has the whole call against Janus).
"""

from __future__ import annotations

import asyncio
import threading
import time

import av
import numpy as np
import pytest

from edge_media.call.tracks import VIDEO_CLOCK, VIDEO_TIME_BASE, CallVideoTrack, FrameSlot

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = pytest.mark.xdist_group("heavy")


def frame(value: int) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.full((48, 64, 3), value, np.uint8), format="rgb24")


async def sent(track: CallVideoTrack, n: int) -> list[tuple[int, float, int]]:
    """(pts, time recv returned, the picture's value) of the next ``n`` frames the track sends."""
    out = []
    for _ in range(n):
        f = await asyncio.wait_for(track.recv(), 5)
        y = f.to_ndarray(format="gray")
        out.append((f.pts, time.monotonic(), int(y.mean())))
    return out


def produce(slot: FrameSlot, fps: float, count: int, stop: threading.Event) -> threading.Thread:
    """A camera thread: ``count`` captures at ``fps``, each a grey picture of its own index."""

    def run() -> None:
        t0 = time.monotonic()
        for i in range(count):
            if stop.is_set():
                return
            at = t0 + i / fps
            time.sleep(max(0.0, at - time.monotonic()))
            slot.put(frame(i * 8 % 256), time.monotonic())

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


@pytest.mark.parametrize(("source_fps", "expect_fps", "step"), [(30, 15, 2), (10, 10, 1)])
async def test_the_track_sends_every_nth_capture_as_it_arrives(source_fps, expect_fps, step) -> None:
    slot = FrameSlot(asyncio.get_running_loop())
    track = CallVideoTrack("room", slot, size=(64, 48), fps=15, min_kbps=30)
    stop = threading.Event()
    th = produce(slot, source_fps, 60, stop)
    try:
        got = await sent(track, 12)
    finally:
        stop.set()
        th.join(5)
        track.stop()
    pts = [p for p, _t, _v in got]
    gaps_s = np.diff(pts[2:]) / VIDEO_CLOCK  # the first two may catch the producer's start
    assert abs(float(np.median(gaps_s)) - 1 / expect_fps) < 0.012, gaps_s
    # Captures are taken in order, none twice, every ``step``-th one (a value per capture index).
    values = [v for _p, _t, v in got][2:]
    steps = {round((b - a) / 8) % 32 for a, b in zip(values, values[1:], strict=False)}
    assert steps == {step}, values
    # Sent on the capture's beat: the wall-clock gaps between sends follow the pts gaps closely.
    wall = np.diff([t for _p, t, _v in got][2:])
    assert float(np.max(np.abs(wall - gaps_s))) < 0.02, (wall, gaps_s)


async def test_a_still_source_has_its_last_picture_sent_again_after_hold_s() -> None:
    slot = FrameSlot(asyncio.get_running_loop())
    track = CallVideoTrack("doccam", slot, size=(64, 48), fps=15, min_kbps=30, hold_s=0.2)
    slot.put(frame(80), time.monotonic())
    try:
        first, again = await sent(track, 2)
    finally:
        track.stop()
    assert first[2] == again[2] == 80
    assert 0.15 < again[1] - first[1] < 0.5
    assert again[0] > first[0]  # stamped when sent again, so the clerk's player moves on


async def test_a_stopped_track_ends_recv_with_media_stream_error() -> None:
    from aiortc.mediastreams import MediaStreamError

    slot = FrameSlot(asyncio.get_running_loop())
    track = CallVideoTrack("room", slot, size=(64, 48), fps=15, min_kbps=30, hold_s=0.05)
    waiter = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.1)  # waiting for a first picture that never comes
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiter, 2)


def test_a_remb_is_recorded_not_applied_and_the_encoder_is_not_rebuilt_for_it() -> None:
    from edge_media.call.encoders import SteadyVp8Encoder

    enc = SteadyVp8Encoder()
    for i in range(3):
        g = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")
        g = g.reformat(format="yuv420p")
        g.pts, g.time_base = i * 6000, VIDEO_TIME_BASE
        enc.encode(g)
        if i == 0:
            codec = enc.codec
            enc.target_bitrate = 1_000_000  # what aiortc does with a REMB
    assert enc.codec is codec and enc.remb_bps == 1_000_000 and enc.target_bitrate == 500_000
    assert enc.rebuilds == 0


def test_the_vp8_encoder_opens_with_the_device_tuning_over_aiortcs_options() -> None:
    from edge_media.call.encoders import VP8_TUNING, SteadyVp8Encoder

    enc = SteadyVp8Encoder()
    assert enc.codec is None
    sizes = []
    for i in range(4):
        g = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 40, np.uint8), format="rgb24")
        g = g.reformat(format="yuv420p")
        g.pts, g.time_base = i * 6000, VIDEO_TIME_BASE
        payloads, _ts = enc.encode(g, force_keyframe=i == 0)
        sizes.append(sum(map(len, payloads)))
    opts = enc.codec.options_given
    assert {k: opts[k] for k in VP8_TUNING} == VP8_TUNING == {"cpu-used": "-12", "noise-sensitivity": "1"}
    assert opts["deadline"] == "realtime" and opts["lag-in-frames"] == "0"  # aiortc's own, kept
    assert enc.codec.width == 64 and all(sizes) and sizes[0] > sizes[1]  # a keyframe, then deltas
    enc.codec = None  # what aiortc does to rebuild
    assert enc.codec is None


def test_set_rate_drops_at_once_and_rises_only_in_worthwhile_steps() -> None:
    from edge_media.call.encoders import UP_HOLD_S, SteadyVp8Encoder

    enc = SteadyVp8Encoder()
    t = 100.0
    assert not enc.set_rate(480_000, t)  # -4 %: not worth a keyframe
    assert enc.set_rate(300_000, t + 0.1)  # -40 %: congestion, at once
    assert not enc.set_rate(450_000, t + 1)  # +50 % but too soon after the last change
    assert enc.set_rate(450_000, t + 0.1 + UP_HOLD_S)
    assert not enc.set_rate(500_000, t + 20)  # +11 %: not worth it
    assert enc.target_bitrate == 450_000
    assert enc.set_rate(10, t + 21) and enc.target_bitrate == 30_000  # the floor holds


def test_install_makes_aiortc_senders_build_the_steady_encoders() -> None:
    from aiortc import RTCRtpCodecParameters, rtcrtpsender

    from edge_media.call import encoders

    encoders.install()
    vp8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
    assert isinstance(rtcrtpsender.get_encoder(vp8), encoders.SteadyVp8Encoder)
    assert not isinstance(rtcrtpsender.get_encoder(opus), encoders.SteadyRate)


async def test_the_microphone_track_sends_every_frame_and_wakes_the_loop_once_per_frame() -> None:
    """The capture thread pushes 10 ms blocks; the track sends 20 ms Opus packets, all of them, in
    order, waking the event loop at most once per packet's worth (not once per block)."""
    from edge_media.call import tracks

    loop = asyncio.get_running_loop()
    track = tracks.CallAudioTrack(loop)
    wakes = 0
    real_wake = track._wake

    def counting_wake() -> None:
        nonlocal wakes
        wakes += 1
        real_wake()

    track._wake = counting_wake  # type: ignore[method-assign]
    block = np.zeros(480, np.int16)

    def capture() -> None:
        for _ in range(100):  # 1 s of microphone
            track.push(block)
            time.sleep(0.002)

    pusher = threading.Thread(target=capture)
    pusher.start()
    packets = [await asyncio.wait_for(track.recv(), 5) for _ in range(50)]
    pusher.join()
    pts = [p.pts for p in packets]  # the first is Opus's pre-skip early
    assert [b - a for a, b in zip(pts, pts[1:], strict=False)] == [tracks.OPUS_FRAME] * 49
    assert track.pushed == 100 and track.dropped_ms == 0
    assert 1 <= wakes <= 50
    track.stop()
