"""The disk fills up in the middle of a segment (a real small tmpfs the test mounts): the segment is
cut back to what decodes and indexed once there is room, the appliance hears
``media.recording.disk_full``, and the export right after ``record_stop`` holds every closed segment
or says exactly what it lacks. Crash recovery repairs a torn or zero-filled file, or quarantines it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_media.segments import parse_stamp, recover_orphans, repair_segment
from tests.conftest import tmpfs

SOURCES = """
[media.sources]
main = "lavfi:testsrc2=size=320x240:rate=30"
backup = ""
doccam = false
[media.renditions.main]
size = "320x240"
bitrate_kbps = 600
threads = 1
[media.audio]
source = "lavfi:sine=frequency=440:sample_rate=48000"
[media.recording]
segment_s = 1.0
min_free_mb = 1
[media]
state_interval_s = 0.3
"""


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "small", "12m") as mount:
        yield mount


def fill(path: Path) -> None:
    with open(path, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\xff" * 16384)
            f.flush()


@pytest.mark.timeout(90)
async def test_a_disk_full_mid_segment_loses_nothing_closed_and_the_export_says_what_is_missing(
    small_fs: Path, bus_broker
) -> None:
    from tests.test_media_service import running_media

    filler = small_fs / "filler"
    data_dir = small_fs / "data"
    async with running_media(
        small_fs.parent, bus_broker.port, SOURCES, data_dir=data_dir, wait_audio=False
    ) as (
        _,
        bench,
    ):

        def seen(kind: str) -> list[dict]:
            return [e["data"] for e in bench.events if e["type"] == kind]

        await bench.call("record_start", {"session_id": "s-full"})
        await bench.wait_for(lambda: (bench.state.get("recording") or {}).get("segments", 0) >= 1, 5)
        await asyncio.to_thread(fill, filler)  # the disk is full in the middle of segment 2 or so
        await bench.wait_for(lambda: seen("media.recording.disk_full"), 8)
        assert any(d["kind"] == "disk_full" for d in seen("media.record.error"))
        assert len(seen("media.recording.disk_full")) == 1  # once per episode, not per retry
        filler.unlink()  # space comes back: recording resumes at a keyframe (1 s after the error)
        await asyncio.sleep(2.5)
        stopped = await bench.call("record_stop")
        exported = await bench.call("export", {"session_id": "s-full"}, timeout_s=30)

    files = sorted(p for p in (small_fs / "data" / "recordings" / "s-full").iterdir() if parse_stamp(p.name))
    assert len(files) >= 3 and stopped["segments"] == len(files)
    for f in files:  # the segment the full disk tore was cut back to what decodes
        check = await asyncio.to_thread(repair_segment, f, fix=False)
        assert check.status == "ok" and check.truncated_bytes == 0, (f.name, check)
    assert exported["segments"] == len(files)  # every closed segment of the session, indexed or not
    assert set(exported["unindexed"]) <= {f.name for f in files}
    # the pause while the disk was full is in the export as a hole, and said so
    holes = [m for m in exported["missing"] if m["why"] == "not recorded"]
    assert holes and exported["complete"] is False
    assert all(0 < h["seconds"] < 5 for h in holes)
    from edge_media.recordings import RecordingIndex

    with RecordingIndex(small_fs / "data" / "media" / "recordings.sqlite") as index:
        spans = index.segments("s-full")
    assert len(spans) == len(files)  # indexed once there was room again
    wall = spans[-1].end_ts - spans[0].start_ts
    # what plays plus what is said to be missing is the whole session
    assert exported["duration_s"] + sum(h["seconds"] for h in holes) == pytest.approx(wall, abs=0.1)


def test_recovery_cuts_a_torn_or_zero_filled_tail_and_quarantines_what_never_decodes(tmp_path: Path) -> None:
    from edge_media.cli import record
    from edge_media.config import MediaConfig
    from edge_media.recordings import RecordingIndex

    class Cfg:
        media = MediaConfig.model_validate(
            {
                "renditions": {"main": {"size": "320x240", "bitrate_kbps": 300, "threads": 1}},
                "recording": {"segment_s": 3.0, "fragment_s": 0.5},
            }
        )
        drivers = None

    root = tmp_path / "rec"
    with contextlib.redirect_stdout(None):
        summary = record("lavfi:testsrc2=size=320x240:rate=30", None, str(root / "s-crash"), 2.5, cfg=Cfg)
    [seg] = summary["segments"]
    good = Path(seg["path"])
    whole = good.read_bytes()
    torn = good.with_name("20260101T000000.000Z-00007.mp4")
    torn.write_bytes(whole[: len(whole) * 2 // 3])  # the power went in the middle of a fragment
    zero_tail = good.with_name("20260101T000010.000Z-00008.mp4")
    zero_tail.write_bytes(whole[: len(whole) // 2] + b"\0" * 8192)  # size on disk, data pages lost
    zero_mid = good.with_name("20260101T000020.000Z-00009.mp4")
    mid = len(whole) // 2
    zero_mid.write_bytes(whole[:mid] + b"\0" * 4096 + whole[mid + 4096 :])  # a lost page inside an mdat
    zeros = good.with_name("20260101T000030.000Z-00010.mp4")
    zeros.write_bytes(b"\0" * len(whole))

    with RecordingIndex(tmp_path / "index.sqlite") as index:
        index.mark_active("s-crash")
        events: list[tuple[str, dict]] = []
        found = recover_orphans(root, index, emit=lambda t, d: events.append((t, d)))
        names = {s.path.name for s in found}
        assert names == {good.name, torn.name, zero_tail.name, zero_mid.name}
        for s in found:  # what is indexed decodes to its end, with the span it really holds
            check = repair_segment(s.path, fix=False)
            assert check.status == "ok", (s.path.name, check)
            assert s.end_ts - s.start_ts == pytest.approx(check.duration_s, abs=0.01)
        assert good.read_bytes() == whole  # a sound file is left alone
        assert torn.stat().st_size < len(whole) * 2 // 3 and zero_tail.stat().st_size <= len(whole) // 2
        assert zero_mid.stat().st_size <= mid
        repaired = {d["file"] for t, d in events if t == "media.record.repaired"}
        assert repaired == {torn.name, zero_tail.name, zero_mid.name}
        assert not zeros.exists() and [b["file"] for b in index.broken("s-crash")] == [zeros.name + ".broken"]
        assert index.active_sessions() == set()
        res = index.export("s-crash", tmp_path / "out.mp4")
        assert [m["why"] for m in res.missing if m.get("file")] == ["broken"]
        assert not res.complete
