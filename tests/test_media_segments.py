"""Crash-safe segments: kill -9 a recording recorder, every file still plays, the index recovers them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drivers.camera.synthetic import SyntheticCamera
from edge_media.config import MediaConfig
from edge_media.pipeline import Pipeline
from edge_media.segments import SegmentRecorder, parse_stamp, recover_orphans, segment_duration

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "lavfi:testsrc2=size=320x240:rate=30"
SMALL = MediaConfig.model_validate(
    {
        "renditions": {"main": {"size": "320x240", "bitrate_kbps": 300, "threads": 1}},
        "recording": {"segment_s": 1.0, "fragment_s": 0.5},
    }
)


def ffprobe_ok(path: Path) -> float:
    """Seconds of video in a segment ffprobe reads without a single error (0.0: header only)."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets:packet=pts_time,duration_time",
            "-select_streams",
            "v:0",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.returncode == 0 and not out.stderr.strip(), (path, out.stderr)
    info = json.loads(out.stdout)
    if int(info["streams"][0].get("nb_read_packets", 0)) == 0:
        return 0.0  # killed before the segment's first fragment: no video in it
    # Segments keep the pipeline's timestamps (the first frame may be at t > 0): the span is what plays.
    times = [
        (float(p["pts_time"]), float(p.get("duration_time", 0))) for p in info["packets"] if "pts_time" in p
    ]
    return max(t + d for t, d in times) - min(t for t, _ in times)


def start_recorder(out: Path, seconds: float = 30, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = out.parent / "media.toml"
    cfg.write_text(
        '[device]\nid = "k1"\nname = "t"\nregion = ["33", "3308", "330803", "330803100", '
        '"330803100201"]\n[media.renditions.main]\nsize = "320x240"\nbitrate_kbps = 300\n'
        "threads = 1\n[media.recording]\nsegment_s = 1.0\nfragment_s = 0.5\n"
    )
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kiosk_cli.main",
            "--config",
            str(cfg),
            "media",
            "record",
            "--source",
            SOURCE,
            "--out",
            str(out),
            "--seconds",
            str(seconds),
            *extra,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("container", ["fmp4", "mpegts"])
def test_kill_9_during_recording_loses_at_most_a_second(tmp_path: Path, container: str) -> None:
    out = tmp_path / "rec"
    proc = start_recorder(out, extra=("--container", container))
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["event"] == "recording"
        time.sleep(2.6)
        killed_at = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    segments = sorted(p for p in out.iterdir() if parse_stamp(p.name) is not None)
    assert len(segments) >= 2
    ends = []
    for seg in segments:
        duration = ffprobe_ok(seg)  # every segment plays, the one cut by the kill included
        ends.append(parse_stamp(seg.name) + duration)  # type: ignore[operator]
    lost = killed_at - max(ends)
    assert lost <= 1.0, f"lost {lost:.2f}s"


@pytest.mark.timeout(60)
def test_orphans_of_a_killed_recorder_are_indexed_at_the_next_start(tmp_path: Path) -> None:
    from edge_media.recordings import RecordingIndex

    root = tmp_path / "recordings"
    out = root / "session-42"
    proc = start_recorder(out)
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(2.2)
    finally:
        proc.kill()
        proc.wait(10)
    empty = root / "session-42" / "20260101T000000.000Z-00099.mp4"
    empty.write_bytes(b"")  # cut before its first fragment: nothing in it was ever video
    zeros = root / "session-42" / "20260101T000001.000Z-00098.mp4"
    zeros.write_bytes(b"\0" * 65536)  # a power cut: the size reached the disk, the data did not
    index = RecordingIndex(tmp_path / "index.sqlite")
    index.mark_active("session-42")  # the crash left the session open
    events: list[tuple[str, dict]] = []
    found = recover_orphans(root, index, emit=lambda t, d: events.append((t, d)))
    assert found and all(s.session_id == "session-42" for s in found)
    indexed = index.segments("session-42")
    assert {s.path for s in indexed} == {s.path for s in found}
    assert all(s.end_ts > s.start_ts for s in indexed)
    assert not empty.exists() and not zeros.exists() and zeros.with_name(zeros.name + ".broken").exists()
    assert any(d.get("kind") == "unplayable" for _, d in events)
    assert [b["file"] for b in index.broken("session-42")] == [zeros.name + ".broken"]
    assert index.active_sessions() == set()  # closed on recovery
    assert recover_orphans(root, index) == []  # idempotent
    index.close()


@pytest.mark.timeout(30)
def test_segments_are_cut_on_keyframes_near_segment_s_and_indexed(tmp_path: Path) -> None:
    from edge_media.recordings import RecordingIndex

    cam = SyntheticCamera("main", "testsrc2=size=320x240:rate=30", framerate=30, size=(320, 240))
    cam.open()
    index = RecordingIndex(tmp_path / "index.sqlite")
    index.mark_active("s1")
    rec = SegmentRecorder(tmp_path / "s1", session_id="s1", segment_s=1.0, fragment_s=0.5, index=index)
    pipeline = Pipeline({"main": cam}, SMALL)
    pipeline.attach("main", rec)
    pipeline.start()
    time.sleep(3.3)
    pipeline.stop()
    closed = rec.close()
    cam.close()
    assert len(closed) >= 3
    for seg in closed[:-1]:
        assert 0.9 <= seg.end_ts - seg.start_ts <= 1.2
        assert 0.9 <= ffprobe_ok(seg.path) <= 1.2
    indexed = index.segments("s1")
    assert [s.sha256 for s in indexed] == [c.sha256 for c in closed]
    assert segment_duration(closed[0].path) == pytest.approx(closed[0].end_ts - closed[0].start_ts, abs=0.05)
    index.close()


@pytest.mark.timeout(30)
def test_a_full_disk_pauses_the_recording_with_an_event_and_it_resumes(tmp_path: Path) -> None:
    room = {"ok": False}
    events: list[tuple[str, dict]] = []
    cam = SyntheticCamera("main", "testsrc2=size=320x240:rate=30", framerate=30, size=(320, 240))
    cam.open()
    rec = SegmentRecorder(
        tmp_path, segment_s=1.0, has_room=lambda n: room["ok"], emit=lambda t, d: events.append((t, d))
    )
    pipeline = Pipeline({"main": cam}, SMALL)
    pipeline.attach("main", rec)
    pipeline.start()
    try:
        time.sleep(1.2)
        assert list(tmp_path.glob("*.mp4")) == []
        assert any(d["kind"] == "disk_full" for t, d in events if t == "media.record.error")
        assert pipeline.running
        room["ok"] = True
        time.sleep(2.5)
    finally:
        pipeline.stop()
        closed = rec.close()
        cam.close()
    assert closed and all(ffprobe_ok(c.path) > 0 for c in closed)


def test_segment_names_carry_their_start() -> None:
    assert parse_stamp("20261121T045102.882Z-00001.mp4") == pytest.approx(1795236662.882)
    assert parse_stamp("notes.txt") is None and parse_stamp("20261121T045102.882Z-00001.mp4.broken") is None
    assert os.sep not in "20261121T045102.882Z-00001.mp4"


@pytest.mark.timeout(30)
def test_an_h265_rendition_records_hevc(tmp_path: Path) -> None:
    cfg = MediaConfig.model_validate(
        {"renditions": {"main": {"codec": "h265", "size": "320x240", "bitrate_kbps": 300, "threads": 1}}}
    )
    cam = SyntheticCamera("main", "testsrc2=size=320x240:rate=30", framerate=30, size=(320, 240))
    cam.open()
    rec = SegmentRecorder(tmp_path, segment_s=10)
    pipeline = Pipeline({"main": cam}, cfg)
    pipeline.attach("main", rec)
    pipeline.start()
    time.sleep(1.5)
    pipeline.stop()
    [seg] = rec.close()
    cam.close()
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0", str(seg.path)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert out.stdout.strip() == "hevc" and ffprobe_ok(seg.path) > 1.0
