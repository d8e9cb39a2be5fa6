"""Join a session's segments into one playable MP4 without re-encoding.

Every segment is checked against the index first (size, then SHA-256), so an export never silently
contains a truncated or altered file. The packets are then copied (remuxed) into one MP4.

Placement is by the video track, and every track of a segment moves by the same offset, so audio stays
where the recorder put it relative to the picture. Consecutive segments of one recording run continue
one timeline (the recorder cuts both tracks at the same instant and keeps the pipeline's timestamps):
they keep their timestamps, so frames and audio samples join exactly, with no hole and no overlap.
A segment whose timeline does not continue the previous one (a pipeline restart, a crash, a pause of
more than ``JOIN_GAP_S``) is placed right after the previous segment's last frame, and the time lost
there is reported in ``ExportResult.missing`` (``why: "not recorded"``). Audio stamped before the
export's first frame, or overlapping the previous segment after such a join, is left out.

The output is written to a temporary file beside the target, fsynced, and renamed over it, so a
reader never sees half an export.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_media.recording_errors import (
    IncompatibleSegments,
    RecordingDiskFull,
    SegmentCorrupt,
    SegmentMissing,
    SegmentUnreadable,
)
from kiosk_core.fsutil import fsync_dir

if TYPE_CHECKING:
    from edge_media.recordings import Segment

HASH_CHUNK = 1 << 20
JOIN_GAP_S = 1.0  # a pause on one timeline up to this long is kept as it happened (a still frame)


@dataclass(frozen=True)
class ExportResult:
    session_id: str | None
    path: Path
    segments: int
    bytes: int
    duration_s: float
    sha256: str
    # What the export lacks: quarantined or unreadable segment files ({file, start_ts, why, ...}),
    # files still being written (why "recording") and holes between segments (why "not recorded",
    # {at_s, from_ts, to_ts, seconds}). Empty when the export holds the whole session.
    missing: list[dict[str, Any]] = field(default_factory=list)
    unindexed: list[str] = field(default_factory=list)  # included, though the index lacked them
    audio_s: float | None = None  # seconds of sound (None: no audio track)

    @property
    def complete(self) -> bool:
        return not self.missing


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_segment(seg: Segment) -> None:
    """Raise ``SegmentMissing``/``SegmentCorrupt`` unless the file is exactly the indexed one."""
    try:
        size = seg.path.stat().st_size
    except FileNotFoundError:
        raise SegmentMissing(seg.path) from None
    if size != seg.bytes:
        raise SegmentCorrupt(
            seg.path,
            expected=f"{seg.bytes} bytes",
            actual=f"{size} bytes",
            reason="truncated" if size < seg.bytes else "grown",
        )
    digest = file_sha256(seg.path)
    if digest != seg.sha256:
        raise SegmentCorrupt(seg.path, expected=seg.sha256, actual=digest, reason="SHA-256 mismatch")


def _signature(stream) -> tuple:
    cc = stream.codec_context
    if stream.type == "video":
        return ("video", cc.name, cc.width, cc.height)
    return ("audio", cc.name, cc.sample_rate, cc.channels)


def export_segments(
    session_id: str | None,
    segments: list[Segment],
    out_path: Path,
    *,
    missing: list[dict[str, Any]] | None = None,
    unindexed: list[str] | None = None,
) -> ExportResult:
    """Verify and remux ``segments`` (in order) into ``out_path`` atomically. Blocking.

    ``missing`` (what the caller knows is absent) is returned in the result with the holes found."""
    import av  # heavy: only the processes that export pay for it

    for seg in segments:
        verify_segment(seg)
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.part")
    try:
        remux = _Remux(av, tmp)
        remux.run(segments)
        duration = remux.video_end
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
        fsync_dir(out_path.parent)
        return ExportResult(
            session_id=session_id,
            path=out_path,
            segments=len(segments),
            bytes=out_path.stat().st_size,
            duration_s=float(duration),
            sha256=file_sha256(out_path),
            missing=sorted(
                [*(missing or []), *remux.holes], key=lambda m: m.get("start_ts") or m.get("from_ts") or 0
            ),
            unindexed=list(unindexed or []),
            audio_s=float(remux.audio_end - remux.audio_start) if remux.audio_start is not None else None,
        )
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(e, RecordingDiskFull):
            raise RecordingDiskFull(f"no space left to export {out_path}: {e}") from e
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


class _Remux:
    """Copies segments into one MP4 on one output timeline (seconds, 0 = the first frame)."""

    def __init__(self, av: Any, tmp: Path) -> None:
        self.av = av
        self.out = av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"})
        self.out_streams: list = []
        self.signature: list[tuple] = []
        self.last_dts: list[int | None] = []
        self.next_dts: list[Fraction | None] = []  # where each output track's last packet ends
        self.offset: Fraction | None = None  # input seconds -> output seconds, of the previous segment
        self.prev_in_end: Fraction | None = None  # previous segment's video end, on its own timeline
        self.prev_wall_end: float | None = None
        self.video_end = Fraction(0)
        self.audio_start: Fraction | None = None
        self.audio_end = Fraction(0)
        self.holes: list[dict[str, Any]] = []

    def run(self, segments: list[Segment]) -> None:
        try:
            for seg in segments:
                self._segment(seg)
        except BaseException:
            with contextlib.suppress(Exception):
                self.out.close()  # the interesting error is the one already propagating
            raise
        try:
            self.out.close()  # writes the moov atom and, with faststart, rewrites the file: can hit ENOSPC
        except self.av.FFmpegError as e:
            _raise_disk_full(e)
            raise SegmentUnreadable(Path(self.out.name), f"finishing the MP4 failed: {e}") from e

    def _segment(self, seg: Segment) -> None:
        av = self.av
        try:
            inp = av.open(str(seg.path), "r")
        except av.FFmpegError as e:
            raise SegmentUnreadable(seg.path, str(e)) from e
        with inp:
            streams = [s for s in inp.streams if s.type in ("video", "audio")]
            if not self.out_streams:
                if not streams:
                    raise SegmentUnreadable(seg.path, "no audio or video stream")
                self.out_streams = [self.out.add_stream_from_template(s) for s in streams]
                self.signature = [_signature(s) for s in streams]
                self.last_dts = [None] * len(streams)
                self.next_dts = [None] * len(streams)
                self.out.start_encoding()
            elif [_signature(s) for s in streams] != self.signature:
                raise IncompatibleSegments(
                    f"segment {seg.path} has streams {[_signature(s) for s in streams]}, "
                    f"the session started with {self.signature}: export them separately"
                )
            try:
                packets = [p for p in inp.demux(streams) if p.dts is not None and p.size > 0]
            except av.FFmpegError as e:
                raise SegmentUnreadable(seg.path, str(e)) from e
            self._place(seg, streams, packets)

    def _place(self, seg: Segment, streams: list, packets: list) -> None:
        index_of = {s.index: i for i, s in enumerate(streams)}
        video = next((s for s in streams if s.type == "video"), None)
        rate = Fraction(video.average_rate or 30) if video is not None else Fraction(30)
        interval = 1 / rate if rate else Fraction(1, 30)
        vpkts = [p for p in packets if video is not None and p.stream.index == video.index]
        anchor_pkts = vpkts or packets
        if not anchor_pkts:
            return
        first = min(_t(p.pts if p.pts is not None else p.dts, p.time_base) for p in anchor_pkts)
        in_end = max(
            _t(p.pts if p.pts is not None else p.dts, p.time_base) + (_t(p.duration, p.time_base) or interval)
            for p in anchor_pkts
        )
        if (
            self.offset is not None
            and self.prev_in_end is not None
            and self.prev_in_end - interval / 2 <= first <= self.prev_in_end + JOIN_GAP_S
        ):
            offset = self.offset  # one recording run: keep its timestamps, frames and samples join exactly
            if first - self.prev_in_end > interval and self.prev_wall_end is not None:
                # a pause of the writer (no room, an I/O error): kept as a still frame, and said
                self.holes.append(
                    {
                        "why": "not recorded",
                        "at_s": round(float(self.prev_in_end + offset), 3),
                        "from_ts": round(self.prev_wall_end, 3),
                        "to_ts": round(self.prev_wall_end + float(first - self.prev_in_end), 3),
                        "seconds": round(float(first - self.prev_in_end), 3),
                    }
                )
        else:
            offset = self.video_end - first  # a new timeline: right after the previous frame
            if self.prev_wall_end is not None and seg.start_ts - self.prev_wall_end > float(interval) * 1.5:
                self.holes.append(
                    {
                        "why": "not recorded",
                        "at_s": round(float(self.video_end), 3),
                        "from_ts": round(self.prev_wall_end, 3),
                        "to_ts": round(seg.start_ts, 3),
                        "seconds": round(seg.start_ts - self.prev_wall_end, 3),
                    }
                )
        self.offset, self.prev_in_end, self.prev_wall_end = offset, in_end, seg.end_ts
        for pkt in packets:
            i = index_of[pkt.stream.index]
            tb_in = pkt.time_base
            tb_out = self.out_streams[i].time_base
            t_dts = _t(pkt.dts, tb_in) + offset
            t_pts = _t(pkt.pts, tb_in) + offset if pkt.pts is not None else t_dts
            t_dur = _t(pkt.duration, tb_in) if pkt.duration else Fraction(0)
            is_audio = pkt.stream.type == "audio"
            if is_audio and (
                t_pts < 0 or (self.next_dts[i] is not None and t_dts < self.next_dts[i] - t_dur / 2)
            ):
                continue  # before the first frame, or overlapping what a join already holds
            dts = round(t_dts / tb_out)
            pts = max(round(t_pts / tb_out), dts)
            if self.last_dts[i] is not None and dts <= self.last_dts[i]:
                dts = self.last_dts[i] + 1  # MP4 needs strictly increasing DTS per track
                pts = max(pts, dts)
            self.last_dts[i] = dts
            self.next_dts[i] = t_dts + t_dur
            pkt.stream = self.out_streams[i]
            pkt.time_base = tb_out
            pkt.pts, pkt.dts, pkt.duration = pts, dts, round(t_dur / tb_out)
            try:
                self.out.mux(pkt)
            except self.av.FFmpegError as e:
                _raise_disk_full(e)
                raise SegmentUnreadable(seg.path, str(e)) from e
            end = pts * tb_out + (t_dur or (interval if not is_audio else 0))
            if is_audio:
                self.audio_start = pts * tb_out if self.audio_start is None else self.audio_start
                self.audio_end = max(self.audio_end, end)
            else:
                self.video_end = max(self.video_end, end)
        if not vpkts:
            self.video_end = max(self.video_end, self.audio_end)


def _t(value: int, time_base: Fraction) -> Fraction:
    return Fraction(value) * time_base


def _raise_disk_full(e: BaseException) -> None:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        raise RecordingDiskFull(f"no space left while exporting: {e}") from e
