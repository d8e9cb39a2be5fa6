"""A session recorded through the media process plays back whole: no hole at any segment boundary,
and as much sound as picture (lavfi testsrc2 camera, lavfi sine microphone, real FFmpeg)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest

FPS = 30
RATE = 48000
AAC_FRAME_S = 1024 / RATE
SOURCES = f"""
[media.sources]
main = "lavfi:testsrc2=size=320x240:rate={FPS}"
backup = ""
doccam = false
[media.renditions.main]
size = "320x240"
bitrate_kbps = 300
threads = 1
[media.audio]
source = "lavfi:sine=frequency=440:sample_rate={RATE}"
[media]
state_interval_s = 0.3
"""


def decode_export(path: Path) -> tuple[list[float], int, float]:
    """(video frame times, audio samples decoded, audio start) of an export, decoded with PyAV."""
    with av.open(str(path)) as c:
        frames = [float(f.pts * f.time_base) for f in c.decode(video=0)]
    with av.open(str(path)) as c:
        audio = list(c.decode(audio=0))
    return sorted(frames), sum(f.samples for f in audio), float(audio[0].pts * audio[0].time_base)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("container", ["fmp4", "mpegts"])
async def test_an_export_of_several_segments_has_no_hole_and_all_its_sound(
    tmp_path: Path, bus_broker, container: str
) -> None:
    from tests.test_media_service import running_media

    extra = SOURCES + f'[media.recording]\nsegment_s = 1.5\ncontainer = "{container}"\nmin_free_mb = 1\n'
    async with running_media(tmp_path, bus_broker.port, extra) as (_, bench):
        await bench.call("record_start", {"session_id": "s-whole"})
        await asyncio.sleep(6.5)
        stopped = await bench.call("record_stop")
        exported = await bench.call("export", {"session_id": "s-whole"}, timeout_s=30)
    assert stopped["segments"] >= 4 and stopped["errors"] == 0 and stopped["unindexed"] == []
    assert exported["segments"] == stopped["segments"]
    assert exported["complete"] is True and exported["missing"] == []

    frames, samples, audio_start = await asyncio.to_thread(decode_export, Path(exported["path"]))
    intervals = [b - a for a, b in zip(frames, frames[1:], strict=False)]
    assert max(intervals) <= 1.5 / FPS, max(intervals)  # the segment boundaries included
    video_s = frames[-1] - frames[0] + 1 / FPS
    assert exported["duration_s"] == pytest.approx(video_s, abs=0.002)
    assert abs(samples / RATE - video_s) <= AAC_FRAME_S, (samples / RATE, video_s)
    assert abs(audio_start - frames[0]) <= AAC_FRAME_S


async def test_a_hole_between_two_recording_runs_is_closed_up_and_reported(tmp_path: Path) -> None:
    from edge_media.recordings import RecordingIndex
    from tests.test_media_recordings import encode_segments, index_all

    first = encode_segments(tmp_path / "a", 2, fmt="mpegts")  # 2 s, then the process died
    second = encode_segments(tmp_path / "b", 2, fmt="mpegts")  # restarted: its timestamps start again
    second = [(p, start + 10, end + 10) for p, start, end in second]  # 8 s later on the wall clock
    with RecordingIndex(tmp_path / "index.sqlite") as index:
        index_all(index, "s-gap", first + second)
        res = await asyncio.to_thread(index.export, "s-gap", tmp_path / "out.mp4")
    assert res.duration_s == pytest.approx(4.0, abs=0.05) and not res.complete
    [hole] = res.missing
    assert hole["why"] == "not recorded" and hole["seconds"] == pytest.approx(8.0)
    assert hole["at_s"] == pytest.approx(2.0, abs=0.05)
    with av.open(str(res.path)) as c:
        frames = sorted(float(f.pts * f.time_base) for f in c.decode(video=0))
    gaps = [b - a for a, b in zip(frames, frames[1:], strict=False)]
    assert len(frames) == 100 and max(gaps) <= 1.5 / 25  # joined right after the last frame
