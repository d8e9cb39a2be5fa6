"""Join a session's segments into one playable MP4 without re-encoding.

Every segment is checked against the index first (size, then SHA-256), so an export never silently
contains a truncated or altered file. The packets are then copied (remuxed) into one MP4: each
segment is placed right after the previous one on the output timeline, which works whether the
segment writer restarts timestamps per segment or keeps them running, and removes the holes a crash
or a restart left between segments. The output is written to a temporary file beside the target,
fsynced, and renamed over it, so a reader never sees half an export.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

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


@dataclass(frozen=True)
class ExportResult:
    session_id: str | None
    path: Path
    segments: int
    bytes: int
    duration_s: float
    sha256: str


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


def export_segments(session_id: str | None, segments: list[Segment], out_path: Path) -> ExportResult:
    """Verify and remux ``segments`` (in order) into ``out_path`` atomically. Blocking."""
    import av  # heavy: only the processes that export pay for it

    for seg in segments:
        verify_segment(seg)
    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.part")
    try:
        duration = _remux(av, segments, tmp)
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
        )
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(e, RecordingDiskFull):
            raise RecordingDiskFull(f"no space left to export {out_path}: {e}") from e
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _remux(av, segments: list[Segment], tmp: Path) -> Fraction:
    out = av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"})
    try:
        out_streams: list = []
        signature: list[tuple] = []
        last_dts: list[int | None] = []
        timeline_end = Fraction(0)  # seconds: where the next segment starts on the output
        for seg in segments:
            try:
                inp = av.open(str(seg.path), "r")
            except av.FFmpegError as e:
                raise SegmentUnreadable(seg.path, str(e)) from e
            with inp:
                streams = [s for s in inp.streams if s.type in ("video", "audio")]
                if not out_streams:
                    if not streams:
                        raise SegmentUnreadable(seg.path, "no audio or video stream")
                    out_streams = [out.add_stream_from_template(s) for s in streams]
                    signature = [_signature(s) for s in streams]
                    last_dts = [None] * len(streams)
                    out.start_encoding()
                elif [_signature(s) for s in streams] != signature:
                    raise IncompatibleSegments(
                        f"segment {seg.path} has streams {[_signature(s) for s in streams]}, "
                        f"the session started with {signature}: export them separately"
                    )
                timeline_end = _copy_segment(inp, streams, out, out_streams, last_dts, timeline_end, seg.path)
    except BaseException:
        with contextlib.suppress(Exception):
            out.close()  # the interesting error is the one already propagating
        raise
    try:
        out.close()  # writes the moov atom and, with faststart, rewrites the file: can hit ENOSPC
    except av.FFmpegError as e:
        _raise_disk_full(e)
        raise SegmentUnreadable(tmp, f"finishing the MP4 failed: {e}") from e
    return timeline_end


def _raise_disk_full(e: BaseException) -> None:
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        raise RecordingDiskFull(f"no space left while exporting: {e}") from e


def _copy_segment(inp, streams, out, out_streams, last_dts, timeline_start: Fraction, path: Path) -> Fraction:
    import av

    index_of = {s.index: i for i, s in enumerate(streams)}
    start = Fraction(inp.start_time, 1_000_000) if inp.start_time is not None else None
    end = timeline_start
    try:
        for pkt in inp.demux(streams):
            if pkt.dts is None or pkt.size == 0:
                continue  # demuxer flush packets carry no data
            i = index_of[pkt.stream.index]
            tb_in = pkt.time_base
            if start is None:
                start = pkt.dts * tb_in
            offset = timeline_start - start
            tb_out = out_streams[i].time_base
            dts = round((pkt.dts * tb_in + offset) / tb_out)
            pts = round((pkt.pts * tb_in + offset) / tb_out) if pkt.pts is not None else dts
            if last_dts[i] is not None and dts <= last_dts[i]:
                dts = last_dts[i] + 1  # MP4 needs strictly increasing DTS per track
            pts = max(pts, dts)
            duration = round(pkt.duration * tb_in / tb_out) if pkt.duration else 0
            last_dts[i] = dts
            pkt.stream = out_streams[i]
            pkt.time_base = tb_out
            pkt.pts, pkt.dts, pkt.duration = pts, dts, duration
            out.mux(pkt)
            end = max(end, (dts + duration) * tb_out)
    except av.FFmpegError as e:
        _raise_disk_full(e)
        raise SegmentUnreadable(path, str(e)) from e
    return end
