"""Recording index, export, retention: a technician's script with real FFmpeg (PyAV) segments.

Segments are encoded here from ``lavfi`` testsrc2 with libx264, the way the segment writer makes them:
MPEG-TS with running timestamps, or fragmented MP4 restarting at zero in every file.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import sqlite3
import subprocess
from collections import namedtuple
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_media.recordings import (
    BadSegment,
    EmptySession,
    RecordingDiskFull,
    RecordingIndex,
    Retention,
    SegmentCorrupt,
    SegmentMissing,
    UnknownSession,
)
from tests.conftest import tmpfs

FPS = 25
T0 = 1_700_000_000.0  # wall-clock start of the first test segment


def encode_segments(
    out_dir: Path,
    count: int,
    *,
    fmt: str = "mpegts",
    seconds: int = 1,
    size: str = "160x120",
    restart_ts: bool = False,
) -> list[tuple[Path, float, float]]:
    """Write ``count`` segments of ``seconds`` each, every one starting with a keyframe."""
    out_dir.mkdir(parents=True, exist_ok=True)
    w, h = map(int, size.split("x"))
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = Fraction(1, FPS)
    enc.framerate = FPS
    enc.options = {
        "preset": "ultrafast",
        "tune": "zerolatency",
        "g": str(FPS * seconds),
        "keyint_min": str(FPS * seconds),
        "sc_threshold": "0",
        "bf": "0",
    }
    src = av.open(f"testsrc2=size={size}:rate={FPS}", format="lavfi")
    frames = src.decode(video=0)
    made = []
    ext = "ts" if fmt == "mpegts" else "mp4"
    n = 0
    for i in range(count):
        path = out_dir / f"seg-{i:04d}.{ext}"
        opts = {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if fmt == "mp4" else {}
        with av.open(str(path), "w", format=fmt, options=opts) as out:
            stream = out.add_mux_stream("h264", rate=FPS, width=w, height=h)
            stream.time_base = Fraction(1, 90000) if fmt == "mpegts" else Fraction(1, 12800)
            shift = i * FPS * seconds if restart_ts else 0  # fMP4 writers may restart every file at 0
            for _ in range(FPS * seconds):
                frame = next(frames)
                frame.pts = n
                frame.time_base = enc.time_base
                frame.pict_type = av.video.frame.PictureType.NONE  # lavfi marks every frame I: x264 obeys
                for pkt in enc.encode(frame):
                    pkt.stream = stream
                    pkt.pts -= shift
                    pkt.dts -= shift
                    out.mux(pkt)
                n += 1
            for pkt in enc.encode(None) if i == count - 1 else ():
                pkt.stream = stream
                pkt.pts -= shift
                pkt.dts -= shift
                out.mux(pkt)
        made.append((path, T0 + i * seconds, T0 + (i + 1) * seconds))
    src.close()
    return made


def encode_av_segments(out_dir: Path, count: int) -> list[tuple[Path, float, float]]:
    """MPEG-TS segments of 1 s with H.264 video and AAC audio (a microphone is configured)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    venc = av.CodecContext.create("libx264", "w")
    venc.width, venc.height, venc.pix_fmt = 160, 120, "yuv420p"
    venc.time_base, venc.framerate = Fraction(1, FPS), FPS
    venc.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(FPS), "sc_threshold": "0"}
    video = av.open(f"testsrc2=size=160x120:rate={FPS}", format="lavfi").decode(video=0)
    audio = av.open("sine=frequency=440:sample_rate=48000:samples_per_frame=1024", format="lavfi").decode(
        audio=0
    )
    resample = av.AudioResampler(format="fltp", layout="mono", rate=48000)
    made, n, samples = [], 0, 0
    for i in range(count):
        path = out_dir / f"av-{i:04d}.ts"
        with av.open(str(path), "w", format="mpegts") as out:
            vs = out.add_mux_stream("h264", rate=FPS, width=160, height=120)
            vs.time_base = Fraction(1, 90000)
            aus = out.add_stream("aac", rate=48000, layout="mono")
            for _ in range(FPS):
                frame = next(video)
                frame.pts, frame.time_base = n, venc.time_base
                frame.pict_type = av.video.frame.PictureType.NONE
                n += 1
                for pkt in venc.encode(frame):
                    pkt.stream = vs
                    out.mux(pkt)
                while samples * FPS < n * 48000:  # keep the microphone abreast of the camera
                    for af in resample.resample(next(audio)):
                        af.pts, af.time_base = samples, Fraction(1, 48000)
                        samples += af.samples
                        out.mux(aus.encode(af))
            out.mux(aus.encode(None))
        made.append((path, T0 + i, T0 + i + 1))
    return made


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def index_all(index: RecordingIndex, session: str | None, made: list[tuple[Path, float, float]]) -> None:
    for path, start, end in made:
        index.add_segment(session, path, start, end, sha256(path), path.stat().st_size)


def count_frames(path: Path) -> tuple[int, float]:
    with av.open(str(path)) as c:
        n = sum(1 for _ in c.decode(video=0))
        return n, c.duration / 1e6 if c.duration else 0.0


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    async def __call__(self, type_: str, data: dict) -> None:
        self.seen.append((type_, data))

    def of(self, type_: str) -> list[dict]:
        return [d for t, d in self.seen if t == type_]


@pytest.fixture(scope="module")
def ts_segments(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, float, float]]:
    return encode_segments(tmp_path_factory.mktemp("ts"), 3, fmt="mpegts")


@pytest.fixture
def index(tmp_path: Path) -> Iterator[RecordingIndex]:
    with RecordingIndex(tmp_path / "index" / "recordings.db") as idx:
        yield idx


# --- index ---------------------------------------------------------------------------------------


def test_a_session_lists_its_segments_in_order_and_survives_a_reopen(tmp_path: Path, ts_segments) -> None:
    db = tmp_path / "recordings.db"
    idx = RecordingIndex(db)
    idx.mark_active("S-0001")
    index_all(idx, "S-0001", list(reversed(ts_segments)))  # indexed out of order on purpose
    idx.add_segment(None, ts_segments[0][0].with_name("between.ts"), T0 - 10, T0 - 5, "0" * 64, 10)
    idx.mark_closed("S-0001")
    idx.close()
    idx.close()  # idempotent

    idx = RecordingIndex(db)
    [summary] = idx.sessions()
    assert summary.session_id == "S-0001" and summary.state == "closed"
    assert summary.segments == 3 and summary.bytes == sum(p.stat().st_size for p, _, _ in ts_segments)
    assert (summary.start_ts, summary.end_ts) == (T0, T0 + 3)
    assert [s.path for s in idx.segments("S-0001")] == [p for p, _, _ in ts_segments]
    assert [s.path.name for s in idx.segments(None)] == ["between.ts"]
    assert idx.active_sessions() == set()
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    idx.close()


def test_asking_for_an_unknown_or_empty_session_is_a_typed_error(
    index: RecordingIndex, tmp_path: Path
) -> None:
    with pytest.raises(UnknownSession):
        index.segments("no-such-session")
    with pytest.raises(UnknownSession):
        index.export("no-such-session", tmp_path / "x.mp4")
    with pytest.raises(UnknownSession):
        index.mark_closed("no-such-session")
    index.mark_active("S-empty")
    with pytest.raises(EmptySession):
        index.export("S-empty", tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    session=st.one_of(st.text(max_size=200), st.integers(), st.none()),
    sha=st.one_of(st.text(max_size=70), st.just("A" * 64), st.just("f" * 64)),
    size=st.one_of(st.integers(-5, 10), st.booleans(), st.floats(allow_nan=True)),
    start=st.one_of(st.floats(allow_nan=True), st.text(max_size=3)),
    end=st.one_of(st.floats(allow_nan=True), st.none()),
)
def test_hostile_segment_descriptions_are_refused_and_change_nothing(
    index: RecordingIndex, tmp_path: Path, session, sha, size, start, end
) -> None:
    before = (index.sessions(), index.total_bytes())
    try:
        index.add_segment(session, tmp_path / "seg.ts", start, end, sha, size)
    except BadSegment:
        assert (index.sessions(), index.total_bytes()) == before
    else:  # only a fully valid description may pass
        assert sha == "f" * 64 and isinstance(size, int) and not isinstance(size, bool) and size >= 0
        assert float(end) >= float(start)
        index.remove_segment((tmp_path / "seg.ts").absolute())


# --- export --------------------------------------------------------------------------------------


def test_export_joins_a_session_into_one_playable_mp4(
    index: RecordingIndex, tmp_path: Path, ts_segments
) -> None:
    index_all(index, "S-0001", ts_segments)
    out = tmp_path / "exports" / "S-0001.mp4"
    out.parent.mkdir()
    result = index.export("S-0001", out)
    frames, duration = count_frames(out)
    assert frames == 3 * FPS
    assert abs(duration - 3.0) < 0.1
    assert result.segments == 3 and result.bytes == out.stat().st_size and result.sha256 == sha256(out)
    assert sorted(os.listdir(out.parent)) == ["S-0001.mp4"]  # no temp file left beside it
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=format_name", "-of", "csv=p=0", str(out)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert probe.returncode == 0 and "mp4" in probe.stdout


def test_export_of_fragmented_mp4_segments_that_restart_at_zero_is_one_continuous_timeline(
    index: RecordingIndex, tmp_path: Path
) -> None:
    made = encode_segments(tmp_path / "fmp4", 3, fmt="mp4", restart_ts=True)
    index_all(index, "S-0002", made)
    out = tmp_path / "S-0002.mp4"
    index.export("S-0002", out)
    with av.open(str(out)) as c:
        dts = [p.dts for p in c.demux(video=0) if p.dts is not None]
    assert len(dts) == 3 * FPS and all(b > a for a, b in zip(dts, dts[1:], strict=False))
    assert abs(count_frames(out)[1] - 3.0) < 0.1


def test_export_keeps_audio_and_video_together(index: RecordingIndex, tmp_path: Path) -> None:
    made = encode_av_segments(tmp_path / "av", 3)
    index_all(index, "S-av", made)
    out = tmp_path / "S-av.mp4"
    index.export("S-av", out)
    with av.open(str(out)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        assert a.codec_context.name == "aac" and a.codec_context.sample_rate == 48000
        spans = {}
        for pkt in c.demux(v, a):
            if pkt.dts is not None:
                lo, hi = spans.get(pkt.stream.type, (None, None))
                t = float(pkt.dts * pkt.time_base)
                spans[pkt.stream.type] = (t if lo is None else min(lo, t), t if hi is None else max(hi, t))
    assert abs(spans["video"][1] - 3.0) < 0.1 and abs(spans["audio"][1] - 3.0) < 0.1  # both run 3 s
    assert abs(spans["video"][0] - spans["audio"][0]) < 0.1  # and start together


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_segment_stops_the_export_with_a_typed_error_and_no_file(
    index: RecordingIndex, tmp_path: Path, damage: str
) -> None:
    made = encode_segments(tmp_path / "segs", 2)
    index_all(index, "S-0003", made)
    victim = made[1][0]
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(bytes(data[: len(data) // 3]))
    else:
        victim.unlink()
    out = tmp_path / "out" / "S-0003.mp4"
    out.parent.mkdir()
    expected = SegmentMissing if damage == "delete" else SegmentCorrupt
    with pytest.raises(expected) as err:
        index.export("S-0003", out)
    assert err.value.path == victim
    if damage == "truncate":
        assert err.value.reason == "truncated"
    assert os.listdir(out.parent) == []


def test_a_segment_indexed_with_the_right_hash_but_no_video_is_unreadable(
    index: RecordingIndex, tmp_path: Path
) -> None:
    from edge_media.recordings import SegmentUnreadable

    junk = tmp_path / "junk.ts"
    junk.write_bytes(b"\x47garbage" * 500)
    index.add_segment("S-junk", junk, T0, T0 + 1, sha256(junk), junk.stat().st_size)
    with pytest.raises(SegmentUnreadable):
        index.export("S-junk", tmp_path / "junk.mp4")
    assert not (tmp_path / "junk.mp4").exists()


# --- retention -----------------------------------------------------------------------------------


def fake_segments(index: RecordingIndex, root: Path, plan: list[tuple[str | None, float, int]]) -> list[Path]:
    """Files of the given (session, start, size): retention needs real files, not real video."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (session, start, size) in enumerate(plan):
        p = root / f"{session or 'none'}-{i:03d}.ts"
        p.write_bytes(os.urandom(size))
        index.add_segment(session, p, start, start + 10, sha256(p), size)
        paths.append(p)
    return paths


async def test_old_segments_go_oldest_first_but_never_from_a_session_in_progress(
    index: RecordingIndex, tmp_path: Path
) -> None:
    now = T0 + 100 * 86400
    root = tmp_path / "rec"
    old_closed = fake_segments(index, root, [("S-old", T0, 1000), ("S-old", T0 + 10, 1000)])
    old_active = fake_segments(index, root, [("S-live", T0 + 5, 500)])
    young = fake_segments(index, root, [("S-new", now - 60, 700)])
    index.mark_closed("S-old")
    index.mark_closed("S-new")
    events = Events()
    ret = Retention(
        index,
        root,
        max_age_s=30 * 86400,
        min_free_bytes=0,
        active_sessions=lambda: {"S-live"},
        emit=events,
        clock=lambda: now,
    )

    purged = await ret.sweep()

    assert [p.segment.path for p in purged] == old_closed and {p.why for p in purged} == {"age"}
    assert not any(p.exists() for p in old_closed) and old_active[0].exists() and young[0].exists()
    [event] = events.of("media.recording.purged")
    assert event["session_id"] == "S-old" and event["why"] == "age" and event["bytes"] == 2000
    assert event["segments"] == 2
    assert [s.session_id for s in index.sessions()] == ["S-live", "S-new"]  # emptied closed session forgotten
    assert await ret.sweep() == []  # nothing more qualifies


async def test_under_the_free_space_watermark_the_oldest_go_until_there_is_room(
    index: RecordingIndex, tmp_path: Path
) -> None:
    root = tmp_path / "rec"
    capacity = 10_000

    def disk_usage(path: Path):
        used = sum(p.stat().st_size for p in root.iterdir())
        return namedtuple("usage", "total used free")(capacity, used, capacity - used)

    files = fake_segments(
        index,
        root,
        [("S-a", T0, 2000), ("S-b", T0 + 20, 2000), ("S-live", T0 + 30, 2000), (None, T0 + 40, 2000)],
    )
    events = Events()
    ret = Retention(
        index,
        root,
        max_age_s=1e9,
        min_free_bytes=5000,
        active_sessions=lambda: {"S-live"},
        emit=events,
        disk_usage=disk_usage,
        clock=lambda: T0 + 100,
    )
    # 2000 free, under the watermark: the live session records on into the margin down to the floor
    # (a quarter of this small watermark), and the sweeper is woken
    assert ret.reserve_bytes == 1250
    assert ret.has_room(700) and not ret.has_room(800)

    purged = await ret.sweep()  # 2000 free -> purge S-a (4000) -> purge S-b (6000) >= 5000: stop

    assert [p.segment.path for p in purged] == files[:2] and {p.why for p in purged} == {"disk"}
    assert files[2].exists() and files[3].exists()
    assert [e["session_id"] for e in events.of("media.recording.purged")] == ["S-a", "S-b"]
    assert events.of("media.recording.disk_low") == []
    assert ret.has_room(4700) and not ret.has_room(4800)  # 6000 free now

    capacity = 6_500  # something else filled the disk: only the live session and one file are left
    purged = await ret.sweep()
    assert [p.segment.path for p in purged] == [files[3]] and files[2].exists()
    [low] = events.of("media.recording.disk_low")
    assert low["protected_sessions"] == ["S-live"]
    await ret.sweep()
    assert len(events.of("media.recording.disk_low")) == 1  # once per episode, not every sweep


async def test_when_the_active_sessions_cannot_be_told_nothing_is_deleted(
    index: RecordingIndex, tmp_path: Path
) -> None:
    files = fake_segments(index, tmp_path / "rec", [("S-x", T0, 100)])

    def broken() -> set[str]:
        raise RuntimeError("pipeline state unavailable")

    ret = Retention(
        index,
        tmp_path / "rec",
        max_age_s=1,
        min_free_bytes=0,
        active_sessions=broken,
        emit=Events(),
        clock=lambda: T0 + 1e6,
    )
    assert await ret.sweep() == [] and files[0].exists()


async def test_has_room_wakes_the_sweeper_at_once(index: RecordingIndex, tmp_path: Path) -> None:
    root = tmp_path / "rec"
    files = fake_segments(index, root, [("S-a", T0, 3000)])
    free = {"bytes": 10_000}
    usage = namedtuple("usage", "total used free")
    events = Events()
    ret = Retention(
        index,
        root,
        max_age_s=1e9,
        min_free_bytes=4000,
        active_sessions=set,
        emit=events,
        disk_usage=lambda p: usage(0, 0, free["bytes"]),
        clock=lambda: T0,
    )
    task = asyncio.create_task(ret.run(interval_s=3600))
    try:
        await asyncio.sleep(0.2)  # first sweep: nothing to do
        assert files[0].exists()
        free["bytes"] = 1000
        assert not await asyncio.to_thread(ret.has_room, 500)  # the writer's thread asks
        for _ in range(50):  # the event comes after the file is gone: wait for the event
            if events.of("media.recording.purged"):
                break
            await asyncio.sleep(0.05)
        assert not files[0].exists() and events.of("media.recording.purged")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- a real full filesystem (a 2 MiB tmpfs) --------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "small", "2m") as mount:
        yield mount


async def test_a_full_disk_is_an_error_or_an_event_never_a_crash(small_fs: Path, ts_segments) -> None:
    import shutil

    root = small_fs / "rec"
    root.mkdir()
    index = RecordingIndex(small_fs / "recordings.db")
    copies = []
    for i, (p, start, end) in enumerate(ts_segments):
        copies.append((shutil.copy(p, root / f"seg-{i}.ts"), start, end))
    index_all(index, "S-full", [(Path(c), s, e) for c, s, e in copies])
    filler = small_fs / "filler"
    with open(filler, "wb") as f:  # eat the rest of the filesystem
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    events = Events()
    ret = Retention(
        index,
        root,
        max_age_s=1e9,
        min_free_bytes=256 * 1024,
        active_sessions=index.active_sessions,
        emit=events,
    )
    assert not ret.has_room(64 * 1024)

    with pytest.raises(RecordingDiskFull):  # the export needs room for a whole copy
        index.export("S-full", small_fs / "S-full.mp4")
    assert not [n for n in os.listdir(small_fs) if n.endswith((".mp4", ".part"))]

    with pytest.raises(RecordingDiskFull):  # the index itself cannot grow either
        for i in range(200):
            index.add_segment("S-full", root / f"ghost-{i}.ts", T0 + i, T0 + i + 1, "a" * 64, 1)

    await ret.disk_full("segment writer", OSError(28, "No space left on device"))
    assert events.of("media.recording.disk_full")[0]["where"] == "segment writer"

    filler.unlink()
    index.mark_closed("S-full")  # the session ended: retention may take it now
    # 16 KiB under the watermark: the oldest segment (45 KiB, less the index WAL growth) must go
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_fs).free - (256 - 16) * 1024))
    purged = await ret.sweep()
    assert [p.segment.path.name for p in purged] == ["seg-0.ts"]
    assert ret.free_bytes() >= 256 * 1024 and events.of("media.recording.purged")
    index.close()
