"""A still picture from a live camera vs a static source, judged on real lavfi pictures and checked
against FFmpeg's own ``freezedetect`` on the same input, then in the real pipeline.

The pictures: ``smptebars`` (a noise-free static source: an HDMI capture of a slide, a denoised
document camera), the same bars with temporal noise (a live sensor looking at a still scene),
``testsrc2`` (a moving picture) and ``testsrc2`` frozen after 2 s with a small live "clock" overlaid in
a corner (a hung camera whose on-screen display still ticks).
"""

from __future__ import annotations

import re
import subprocess
import time

import pytest

from drivers.camera.synthetic import SyntheticCamera
from edge_media.config import FailoverConfig, MediaConfig
from edge_media.pipeline import PacketTap, Pipeline
from edge_media.selector import MAIN, Selector, inspect_frame

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = pytest.mark.xdist_group("heavy")

SIZE, RATE = "320x240", 30
BARS = f"smptebars=size={SIZE}:rate={RATE}"
NOISY_BARS = f"{BARS},noise=alls=8:allf=t"
MOVING = f"testsrc2=size={SIZE}:rate={RATE}"
# frozen from frame 60 (2 s) on, under a small "clock" that changes every frame (48x24 of 320x240:
# 1.5 % of the picture; this FFmpeg build has no drawtext, so the clock's digits are a geq pattern)
CLOCK = (
    f"testsrc2=size={SIZE}:rate={RATE},loop=loop=-1:size=1:start=60[bg];"
    f"color=c=black:s=48x24:r={RATE},format=gray,geq=lum='mod(N*37+X*4\\,256)',format=yuv420p[clock];"
    "[bg][clock]overlay=x=W-w-8:y=8"
)
FREEZE_S = 0.5  # a live camera's default freeze_s


def freezedetect(graph: str, seconds: float, *, d: float = FREEZE_S, crop: str = "") -> list[float]:
    """The freeze starts FFmpeg's freezedetect (n = -60 dB, its default) reports for ``graph``."""
    vf = f"{crop + ',' if crop else ''}freezedetect=n=-60dB:d={d}"
    out = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-f", "lavfi", "-i", graph, "-t", str(seconds)]
        + ["-vf", vf, "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [float(x) for x in re.findall(r"lavfi\.freezedetect\.freeze_start: ([0-9.]+)", out.stderr)]


def judge(graph: str, seconds: float, **source: object) -> tuple[float | None, float | None]:
    """Decode ``graph`` through PyAV and let the selector judge every frame at the frame's own time:
    (when the source was first judged frozen, when its still run started), or Nones."""
    import av

    sel = Selector({MAIN: 1 / RATE}, FailoverConfig(main=source), out_interval=1 / RATE, now=0.0)
    with av.open(graph, format="lavfi") as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = float(frame.time)
            if t > seconds:
                break
            sel.offer(MAIN, frame, t, t, sample=inspect_frame(frame))
            track = sel.tracks[MAIN]
            if track.frozen:
                return t, track.still_t
    return None, None


def test_still_bars_are_frozen_for_a_live_camera_and_alive_for_a_static_source() -> None:
    [start] = freezedetect(BARS, 3)
    assert start == 0.0  # the reference tool: still from the first frame on
    frozen_at, still_since = judge(BARS, 3)
    assert still_since == start
    assert frozen_at == pytest.approx(start + FREEZE_S, abs=0.5 / RATE)  # freezedetect's d, to the frame
    assert judge(BARS, 3, kind="static") == (None, None)  # a slide: nothing wrong with it
    assert judge(BARS, 3, kind="static", freeze_s=2.0)[0] == pytest.approx(2.0, abs=0.5 / RATE)


def test_a_frozen_picture_under_a_live_clock_is_frozen() -> None:
    # freezedetect over the whole frame averages the clock's change into the picture's and misses the
    # freeze (the mean difference stays above its noise floor); with the clock cropped away it sees it
    assert freezedetect(CLOCK, 4) == []
    [start] = freezedetect(CLOCK, 4, crop="crop=320:200:0:40")
    assert 1.9 <= start <= 2.05
    frozen_at, still_since = judge(CLOCK, 4)
    assert still_since == pytest.approx(start, abs=0.5 / RATE)
    assert frozen_at == pytest.approx(start + FREEZE_S, abs=0.5 / RATE)
    # the clock ticks inside our sample, so the pictures are never bit-identical: the old rule
    # ("frozen = the same sample as the last frame") never saw this freeze
    a, b = frames_at(CLOCK, 3.0, 3.0 + 1 / RATE)
    assert inspect_frame(a) != inspect_frame(b)


def frames_at(graph: str, *times: float) -> list:
    import av

    found = []
    with av.open(graph, format="lavfi") as container:
        for frame in container.decode(container.streams.video[0]):
            if any(abs(float(frame.time) - t) < 0.25 / RATE for t in times):
                found.append(frame)
            if len(found) == len(times):
                return found
    raise AssertionError(f"no frames at {times}")


@pytest.mark.parametrize("graph", [MOVING, NOISY_BARS], ids=["moving", "sensor-noise"])
def test_a_live_picture_is_never_frozen(graph: str) -> None:
    assert freezedetect(graph, 3) == []
    assert judge(graph, 3) == (None, None)


def pipeline_room(graph: str, kind: str, *, backup: bool) -> tuple[Pipeline, list, PacketTap, list]:
    cfg = MediaConfig.model_validate(
        {
            "renditions": {"main": {"size": SIZE, "bitrate_kbps": 300, "threads": 1}},
            "failover": {"holdoff_s": 0.5, "main": {"kind": kind}},
        }
    )
    sources = {"main": SyntheticCamera("main", graph, framerate=RATE, size=(320, 240))}
    if backup:
        sources["backup"] = SyntheticCamera("backup", f"testsrc=size={SIZE}:rate={RATE}", framerate=RATE)
    for s in sources.values():
        s.open()
    events: list[dict] = []
    pipeline = Pipeline(sources, cfg, emit=lambda t, d: events.append(d) if t == "media.failover" else None)
    tap = PacketTap()
    pipeline.attach("main", tap)
    pipeline.start()
    return pipeline, events, tap, list(sources.values())


def wait_until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


@pytest.mark.timeout(30)
def test_static_bars_stay_on_air_while_a_live_camera_showing_them_goes_to_the_slate() -> None:
    assert freezedetect(BARS, 3) == [0.0]  # still, as far as freezedetect is concerned
    pipeline, events, tap, sources = pipeline_room(BARS, "static", backup=False)
    try:
        # the source's own frames, not the start-up slate, for 3 s: far past a live camera's 0.5 s
        assert wait_until(lambda: tap.packets >= 90, 10)
        assert pipeline.selector.active == MAIN and events == []
        assert pipeline.selector.slate_frames == 0
        sources[0].inject("unplug")  # alive is what matters: gone is gone
        assert wait_until(lambda: events, 3)
        assert events[0]["to"] == "slate" and events[0]["reason"].startswith("main lost")
    finally:
        pipeline.stop()
        for s in sources:
            s.close()
    pipeline, events, tap, sources = pipeline_room(BARS, "live", backup=False)
    try:
        assert wait_until(lambda: events, 5)
        assert events[0]["to"] == "slate" and events[0]["reason"] == "main frozen"
    finally:
        pipeline.stop()
        for s in sources:
            s.close()


@pytest.mark.timeout(30)
def test_a_live_camera_frozen_under_its_clock_fails_over_to_the_backup() -> None:
    pipeline, events, tap, sources = pipeline_room(CLOCK, "live", backup=True)
    try:
        # on air within its first (moving) 2 s; the start may have gone through the backup
        sel = pipeline.selector
        assert wait_until(lambda: sel.active == MAIN and not sel.switching and tap.packets >= 10, 5)
        started = len(events)
        assert wait_until(lambda: len(events) > started, 6)
        event = events[started]
        assert event["from"] == MAIN and event["to"] == "backup" and event["reason"] == "main frozen"
        assert event["gap_ms"] <= 50  # the frozen frames went out, then the backup continues
    finally:
        pipeline.stop()
        for s in sources:
            s.close()
