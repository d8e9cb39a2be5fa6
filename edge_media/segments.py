"""Crash-safe recording: the encoded stream cut into segment files of ``segment_s`` seconds.

Format: fragmented MP4 (``movflags=frag_keyframe+empty_moov+default_base_moof``, a fragment at every
keyframe and at least every ``fragment_s``) or MPEG-TS. Either way every byte on disk is playable
without a trailer, so a ``kill -9`` or a power cut costs at most the fragment being built:

- the movie header is written first (empty moov), then self-contained fragments;
- a sync thread fsyncs the open segment every ``fragment_s`` (and its directory once, when created),
  so a power cut loses at most one fragment;
- at the segment's end the file and its directory are fsynced, then the segment is added to the
  ``RecordingIndex`` with its span and SHA-256 (closing happens in the sync thread, off the encoder's
  path). A segment whose process died before indexing is picked up by ``recover_orphans()``.

Segments are cut on keyframes only, so each one plays on its own. Writing never raises into the
pipeline: a full disk or an I/O error closes the segment, reports ``media.record.error`` and retries
at a later keyframe.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_media.encoder import TIME_BASE, EncodedPacket, Encoder
from kiosk_core.fsutil import fsync_dir

if TYPE_CHECKING:
    import av

log = logging.getLogger("kiosk.media.segments")

SUFFIX = {"fmp4": ".mp4", "mpegts": ".ts"}
NAME = re.compile(r"^(\d{8}T\d{6}\.\d{3})Z-(\d{5})\.(mp4|ts)$")
RETRY_AFTER_ERROR_S = 1.0
AUDIO_DRAIN_MAX_S = 1.0  # a segment waits at most this long (of video) for its last audio
Emit = Callable[[str, dict[str, Any]], None]


def stamp(wall: float) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(wall)) + f".{int(wall * 1000) % 1000:03d}Z"


def parse_stamp(name: str) -> float | None:
    """The wall-clock start encoded in a segment's file name, or None if it is not one of ours."""
    m = NAME.match(name)
    if not m:
        return None
    import calendar

    base, ms = m.group(1).split(".")
    return calendar.timegm(time.strptime(base, "%Y%m%dT%H%M%S")) + int(ms) / 1000


def last_seq(directory: Path) -> int:
    """The highest segment number among the files (and quarantined ``.broken`` ones) in ``directory``."""
    best = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            m = NAME.match(entry.name.removesuffix(".broken"))
            if m:
                best = max(best, int(m.group(2)))
    return best


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ClosedSegment:
    session_id: str | None
    path: Path
    start_ts: float
    end_ts: float
    sha256: str
    bytes: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "path": str(self.path),
            "start_ts": round(self.start_ts, 3),
            "end_ts": round(self.end_ts, 3),
            "sha256": self.sha256,
            "bytes": self.bytes,
        }


class _OpenSegment:
    def __init__(
        self,
        path: Path,
        container_kind: str,
        fragment_s: float,
        encoder: Encoder,
        start_wall: float,
        t_first: float,
        t0: float,
        audio: Any = None,
    ) -> None:
        import av

        self.path = path
        self.start_wall = start_wall
        self.t_first = t_first
        self.t_last = t_first
        self.t0 = t0  # the first keyframe's pts in seconds (the pipeline's timeline)
        self.t_end = t0  # end of the last video frame on that timeline
        self.cut_t: float | None = None  # when draining: audio stamped before this still goes here
        self.failed = False  # a write or the close failed: the file may be torn
        self.generation = encoder.generation
        if container_kind == "fmp4":
            # delay_moov + frag_discont: the movie header goes out with the first fragment and every
            # fragment's tfdt carries the pipeline's own timestamps, so video and audio keep their
            # offset inside the file and consecutive segments continue one timeline (with empty_moov
            # the muxer restarts every track at 0 and loses the offset between them).
            options = {
                "movflags": "frag_keyframe+delay_moov+default_base_moof+frag_discont",
                "frag_duration": str(int(fragment_s * 1_000_000)),
                "flush_packets": "1",
            }
            fmt = "mp4"
        else:
            options, fmt = {"flush_packets": "1"}, "mpegts"
        self.container: av.container.OutputContainer = av.open(str(path), "w", format=fmt, options=options)
        stream = self.container.add_stream_from_template(encoder.template, opaque=True)
        ctx = stream.codec_context
        ctx.extradata = encoder.extradata
        ctx.width, ctx.height, ctx.pix_fmt = encoder.width, encoder.height, "yuv420p"
        stream.time_base = TIME_BASE
        self.stream = stream
        self.synced_dir = False
        self.audio, self.audio_stream = audio, None
        if audio is not None:  # an AAC track beside the video (edge_media/audio.py)
            astream = self.container.add_stream_from_template(audio.template, opaque=True)
            astream.codec_context.extradata = audio.extradata
            astream.time_base = audio.time_base
            self.audio_stream = astream

    def mux_audio(self, ea: Any) -> None:
        ea.packet.stream = self.audio_stream
        self.container.mux(ea.packet)

    def mux(self, ep: EncodedPacket, t: float, interval: float) -> None:
        ep.packet.stream = self.stream
        self.container.mux(ep.packet)
        self.t_last = ep.t_capture
        self.t_end = max(self.t_end, t + interval)


def _media_t(packet: Any) -> float:
    """A packet's pts in seconds on the pipeline's timeline (both encoders share its origin)."""
    return float(packet.pts * packet.time_base)


class SegmentRecorder:
    """Writes one rendition's packets into segment files under ``directory``.

    Video and audio are cut at the same instant of the pipeline's timeline: the keyframe that opens a
    segment at ``t`` closes the previous one for video, and the previous one stays open for audio
    ("draining") until an audio packet stamped ``t`` or later arrives (AAC comes out of its encoder
    some packets behind the picture). Every audio packet lands in the segment its timestamp belongs to,
    so consecutive segments join sample-exactly.
    """

    def __init__(
        self,
        directory: Path,
        *,
        session_id: str | None = None,
        container: str = "fmp4",
        segment_s: float = 10.0,
        fragment_s: float = 0.5,
        frame_interval: float = 1 / 30,
        index: Any = None,
        has_room: Callable[[int], bool] | None = None,
        emit: Emit | None = None,
        on_disk_full: Callable[[str, BaseException | None], None] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)  # before any thread: fail early and clean
        self.session_id = session_id
        self.container_kind = container
        self.segment_s = segment_s
        self.fragment_s = fragment_s
        self.frame_interval = frame_interval
        self.index = index
        self.has_room = has_room or (lambda _n: True)
        self.emit = emit or (lambda _t, _d: None)
        self.on_disk_full = on_disk_full or (lambda _w, _e: None)
        self._disk_full_reported = False  # one media.recording.disk_full per episode
        self.wall_offset = time.time() - time.monotonic()
        self._seg: _OpenSegment | None = None
        self._draining: _OpenSegment | None = None
        self._drained = threading.Event()
        self._stopping = False
        # A second recorder for the same session (a failover, the terminal active again) appends to its
        # folder: numbering goes on after the segments already there, so no file name is reused.
        self._seq = last_seq(self.directory)
        self._paused_until = 0.0
        self._closing: queue.Queue[_OpenSegment | None] = queue.Queue(maxsize=8)
        # The pipeline thread writes, close()/cut() come from others: one lock over _seg/_draining.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._unindexed: list[ClosedSegment] = []  # closed and fsynced, the index refused them (yet)
        self._sync_thread = threading.Thread(target=self._sync_loop, name="segment-sync", daemon=True)
        self._sync_thread.start()
        self.closed: list[ClosedSegment] = []
        self.errors = 0
        self.packets = 0
        self.dropped_packets = 0
        self._audio: Any = None
        self.audio_packets = 0
        self.audio_dropped = 0

    # --- the pipeline side -----------------------------------------------------------------------

    def write(self, ep: EncodedPacket, encoder: Encoder) -> None:
        """Mux one packet (pipeline thread). Never raises: failures become events and a retry."""
        t = _media_t(ep.packet)
        with self._lock:
            if self._stopping:
                self.dropped_packets += 1
                return
            drain = self._draining
            if drain is not None and drain.cut_t is not None and t - drain.cut_t > AUDIO_DRAIN_MAX_S:
                self._end_drain()  # the microphone fell silent: do not hold the file open for ever
            seg = self._seg
            if (
                seg is not None
                and ep.keyframe
                and (ep.generation != seg.generation or ep.t_capture - seg.t_first >= self.segment_s - 1e-6)
            ):
                self._drain(seg, t)
                seg = None
            if (
                seg is not None
                and not ep.keyframe
                and ep.t_capture - seg.t_first >= self.segment_s - 1.5 * self.frame_interval
            ):
                encoder.request_keyframe()  # cut close to segment_s rather than at the next natural keyframe
            if seg is None:
                if not ep.keyframe or time.monotonic() < self._paused_until:
                    self.dropped_packets += 1
                    return
                seg = self._start(ep, encoder, t)
                if seg is None:
                    self.dropped_packets += 1
                    return
            try:
                seg.mux(ep, t, self.frame_interval)
                self.packets += 1
            except Exception as exc:  # noqa: BLE001 - av/OS errors (ENOSPC, EIO) must not stop the pipeline
                seg.failed = True
                self._failed(f"cannot write {seg.path.name}: {exc}", kind=_kind(exc), exc=exc)
                self._finish(seg)

    def add_audio(self, audio: Any) -> None:
        """Give segments started from now on an audio track from ``audio`` (an ``AudioEncoder``)."""
        self._audio = audio

    def write_audio(self, ea: Any, audio: Any) -> None:
        """Mux one audio packet into the segment its timestamp belongs to (pipeline thread); audio
        stamped before the recording's first keyframe is dropped. Never raises."""
        t = _media_t(ea.packet)
        with self._lock:
            drain = self._draining
            if drain is not None and drain.audio is audio and drain.cut_t is not None:
                if t < drain.cut_t:
                    self._mux_audio(drain, ea)
                    return
                self._end_drain()
            seg = self._seg
            if seg is None or seg.audio is not audio or t < seg.t0:
                self.audio_dropped += 1
                return
            self._mux_audio(seg, ea)

    def _mux_audio(self, seg: _OpenSegment, ea: Any) -> None:
        try:
            seg.mux_audio(ea)
            self.audio_packets += 1
        except Exception as exc:  # noqa: BLE001 - as for video: an event and a retry, never a crash
            seg.failed = True
            self._failed(f"cannot write audio to {seg.path.name}: {exc}", kind=_kind(exc), exc=exc)
            self._finish(seg)

    def _drain(self, seg: _OpenSegment, cut_t: float) -> None:
        """Stop video into ``seg`` at ``cut_t``; audio stamped before it still goes in (lock held)."""
        if self._seg is seg:
            self._seg = None
        self._end_drain()  # at most one segment drains (audio comes in order)
        if seg.audio is None:
            self._finish(seg)
            return
        seg.cut_t = cut_t
        self._draining = seg
        self._drained.clear()

    def _end_drain(self) -> None:
        drain, self._draining = self._draining, None
        if drain is not None:
            self._finish(drain)
        self._drained.set()

    def _start(self, ep: EncodedPacket, encoder: Encoder, t: float) -> _OpenSegment | None:
        expected = int(encoder.bitrate_kbps * 1000 / 8 * self.segment_s * 1.5)
        if not self.has_room(expected):
            self._failed(f"not enough free disk space for a {self.segment_s:g}s segment", kind="disk_full")
            return None
        wall = ep.t_capture + self.wall_offset
        self._seq += 1
        path = self.directory / f"{stamp(wall)}-{self._seq:05d}{SUFFIX[self.container_kind]}"
        try:
            seg = _OpenSegment(
                path, self.container_kind, self.fragment_s, encoder, wall, ep.t_capture, t, self._audio
            )
        except Exception as exc:  # noqa: BLE001
            self._failed(f"cannot create {path}: {exc}", kind=_kind(exc), exc=exc)
            return None
        self._seg = seg
        self._disk_full_reported = False
        return seg

    def _failed(self, message: str, kind: str = "io", exc: BaseException | None = None) -> None:
        self.errors += 1
        self._paused_until = time.monotonic() + RETRY_AFTER_ERROR_S
        log.warning("recording %s: %s", self.session_id or self.directory, message)
        self.emit("media.record.error", {"session_id": self.session_id, "error": message, "kind": kind})
        if kind == "disk_full" and not self._disk_full_reported:
            self._disk_full_reported = True
            try:
                self.on_disk_full(f"recording {self.session_id or self.directory}", exc)
            except Exception:  # noqa: BLE001 - a report must not stop the recording
                log.exception("disk-full report failed")

    def _finish(self, seg: _OpenSegment) -> None:
        with self._lock:
            if self._seg is seg:
                self._seg = None
            if self._draining is seg:
                self._draining = None
                self._drained.set()
        try:
            self._closing.put(seg, timeout=5.0)
        except queue.Full:  # the disk is hopelessly slow: close here rather than lose the file
            self._close_one(seg)

    def cut(self) -> None:
        """Finish the open segment now (the next keyframe starts a new one), e.g. after a pipeline restart."""
        with self._lock:
            self._end_drain()
            seg = self._seg
            if seg is not None:
                self._finish(seg)

    def close(self, timeout_s: float = 10.0, *, audio_grace_s: float = 0.0) -> list[ClosedSegment]:
        """Finish the open segment and wait until every segment is closed, fsynced and indexed.

        With ``audio_grace_s`` (the pipeline still running, as when a session stops), the last segment
        waits that long for the audio stamped before its last frame's end, so it ends on both tracks."""
        with self._lock:
            self._stopping = True
            seg = self._seg
            if seg is not None:
                if audio_grace_s > 0:
                    self._drain(seg, seg.t_end)
                else:
                    self._finish(seg)
        if audio_grace_s > 0:
            self._drained.wait(audio_grace_s)
        with self._lock:
            self._end_drain()
        self._stop.set()
        try:
            self._closing.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._sync_thread.join(timeout_s)
        return list(self.closed)

    @property
    def current_path(self) -> Path | None:
        """The file being written now (not closed yet), if any."""
        seg = self._seg or self._draining
        return seg.path if seg is not None else None

    @property
    def unindexed(self) -> list[ClosedSegment]:
        """Segments closed on disk that the index has not taken yet (retried at every close)."""
        return list(self._unindexed)

    # --- the sync thread ---------------------------------------------------------------------------

    def _sync_loop(self) -> None:
        while True:
            try:
                item = self._closing.get(timeout=self.fragment_s)
            except queue.Empty:
                item = False  # type: ignore[assignment]
            if item is None:
                self._retry_index()
                return
            if item:
                self._close_one(item)
                continue
            with self._lock:
                seg = self._seg
            if seg is not None:
                self._fsync_open(seg)
            if self._unindexed and time.monotonic() >= self._paused_until:
                self._retry_index()

    def _fsync_open(self, seg: _OpenSegment) -> None:
        try:
            fd = os.open(seg.path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)  # fsync through any descriptor flushes the file's pages
            if not seg.synced_dir:
                fsync_dir(seg.path.parent)
                seg.synced_dir = True
        except OSError as exc:
            log.warning("fsync of %s failed: %s", seg.path, exc)
        finally:
            os.close(fd)

    def _close_one(self, seg: _OpenSegment) -> None:
        try:
            seg.container.close()
        except Exception as exc:  # noqa: BLE001 - the fragments on disk stay playable
            seg.failed = True
            log.warning("closing %s: %s", seg.path.name, exc)
        try:
            # A write that failed (ENOSPC) leaves a torn last fragment: cut the file back to its last
            # whole fragment so what is indexed decodes to its end. A clean close only has its
            # structure checked (decoding every segment would cost a Pi a core's fifth).
            repaired = repair_segment(seg.path, decode=seg.failed)
            if repaired.status != "ok":
                if repaired.status == "empty":
                    seg.path.unlink(missing_ok=True)  # no frame made it to disk: nothing to index
                    fsync_dir(seg.path.parent)
                    return
                broken = quarantine(seg.path, repaired.detail, self.index, self.session_id, seg.start_wall)
                self._failed(f"{seg.path.name} cannot be repaired ({repaired.detail}); kept as {broken.name}")
                return
            with open(seg.path, "rb") as f:
                os.fsync(f.fileno())
            fsync_dir(seg.path.parent)
            size = seg.path.stat().st_size
            digest = file_sha256(seg.path)
        except OSError as exc:
            self._failed(f"cannot finish {seg.path.name}: {exc}", kind=_kind(exc), exc=exc)
            return
        if repaired.truncated_bytes and repaired.duration_s:
            end = seg.start_wall + repaired.duration_s
            self.emit(
                "media.record.repaired",
                {
                    "session_id": self.session_id,
                    "file": seg.path.name,
                    "truncated_bytes": repaired.truncated_bytes,
                    "kept_s": round(repaired.duration_s, 3),
                },
            )
        else:
            end = seg.start_wall + (seg.t_last - seg.t_first) + self.frame_interval
        closed = ClosedSegment(self.session_id, seg.path, seg.start_wall, end, digest, size)
        self.closed.append(closed)
        self._unindexed.append(closed)
        self._retry_index()

    def _retry_index(self) -> None:
        """Index what is waiting, oldest first; a full disk leaves the rest for the next try."""
        if self.index is None:
            self._unindexed.clear()
            return
        while self._unindexed:
            c = self._unindexed[0]
            try:
                self.index.add_segment(self.session_id, c.path, c.start_ts, c.end_ts, c.sha256, c.bytes)
            except Exception as exc:  # noqa: BLE001 - kept and retried; recover_orphans at the next start
                self._failed(f"cannot index {c.path.name}: {exc}", kind=_kind(exc, "index"), exc=exc)
                return
            self._unindexed.pop(0)

    # --- telemetry -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        seg = self._seg
        return {
            "session_id": self.session_id,
            "segments": len(self.closed),
            "packets": self.packets,
            "dropped_packets": self.dropped_packets,
            "errors": self.errors,
            "current": seg.path.name if seg is not None else None,
            "audio_packets": self.audio_packets,
            "audio_dropped": self.audio_dropped,
            "unindexed": len(self._unindexed),
            "bytes": sum(c.bytes for c in self.closed),
        }


def segment_duration(path: Path) -> float | None:
    """Seconds of video a segment file holds (last packet end - first packet start); 0.0 for a file with
    a header and no frame; None if the file is not readable media at all."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            first = last = None
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                t = float(packet.pts * stream.time_base)
                first = t if first is None else min(first, t)
                last = t if last is None else max(last, t)
            if first is None or last is None:
                return 0.0  # a header and no fragment yet: killed as the segment began
            rate = float(stream.average_rate or 30)
            return last - first + 1 / rate
    except Exception:  # noqa: BLE001 - any unreadable file is an answer, not a crash
        return None


def _kind(exc: BaseException, default: str = "io") -> str:
    """``disk_full`` for ENOSPC/EDQUOT (from the OS, FFmpeg or SQLite via the index), else ``default``."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk_full"
    code = getattr(exc, "code", "")
    if code == "media.recording.disk_full" or "No space left" in str(exc):
        return "disk_full"
    return default


@dataclass(frozen=True)
class Repair:
    """What ``repair_segment`` found: ``ok`` (decodes to its end, after cutting ``truncated_bytes``
    of torn or zero-filled tail), ``empty`` (a header and no frame: nothing was lost) or ``broken``."""

    status: str
    duration_s: float
    truncated_bytes: int
    detail: str = ""


_BOX_TYPE = re.compile(rb"^[a-z0-9 ]{4}$")
_ZEROS = b"\0" * 16  # never inside H.264/H.265 data (emulation prevention): a page that never hit the disk
TS_PACKET = 188


def _mp4_layout(path: Path) -> tuple[int, list[int], bool]:
    """(bytes of whole boxes that end a unit, offsets of the whole fragments, junk seen)."""
    size = path.stat().st_size
    good, pos, moofs, pending = 0, 0, [], None
    with open(path, "rb") as f:
        while pos + 8 <= size:
            f.seek(pos)
            head = f.read(16)
            box = int.from_bytes(head[:4], "big")
            kind = head[4:8]
            if box == 1 and len(head) >= 16:
                box = int.from_bytes(head[8:16], "big")
            if box < 8 or not _BOX_TYPE.match(kind) or pos + box > size:
                return good, moofs, True
            if kind == b"moof":
                pending = pos
            elif kind == b"mdat":
                if pending is not None:
                    moofs.append(pending)
                pending = None
                good = pos + box
            elif pending is None:
                good = pos + box  # ftyp, moov, free, mfra, ...
            pos += box
    return good, moofs, good < size


def _ts_layout(path: Path) -> tuple[int, list[int], bool]:
    size = path.stat().st_size
    good = 0
    with open(path, "rb") as f:
        while chunk := f.read(TS_PACKET * 1024):
            for i in range(0, len(chunk) - TS_PACKET + 1, TS_PACKET):
                if chunk[i] != 0x47:
                    return good, [], True
                good += TS_PACKET
            if len(chunk) % TS_PACKET:
                break
    return good, [], good < size


def _first_bad_packet(path: Path) -> tuple[int | None, int, float | None, str]:
    """Decode every packet: (byte position of the first bad one or None, video frames, seconds, why)."""
    import av

    frames, first, last, rate = 0, None, None, 30.0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None, 0, None, "no video stream"
            vs = container.streams.video[0]
            rate = float(vs.average_rate or 30)
            decoders = {s.index: s.codec_context for s in container.streams if s.type in ("video", "audio")}
            for packet in container.demux(list(container.streams)):
                if packet.size == 0 or packet.stream.index not in decoders:
                    continue
                is_video = packet.stream.index == vs.index
                if is_video and _ZEROS in bytes(packet):
                    return packet.pos, frames, None, "zero-filled video data"
                try:
                    decoded = decoders[packet.stream.index].decode(packet)
                except av.FFmpegError as exc:
                    return packet.pos, frames, None, f"undecodable packet: {exc}"
                if is_video and packet.pts is not None:
                    frames += len(decoded) or 1
                    t = float(packet.pts * packet.time_base)
                    first = t if first is None else min(first, t)
                    last = t if last is None else max(last, t)
    except av.FFmpegError as exc:
        return 0, 0, None, f"not readable media: {exc}"
    if first is None or last is None:
        return None, 0, 0.0, "no frame"
    return None, frames, last - first + 1 / rate, ""


def repair_segment(path: Path, *, fix: bool = True, decode: bool = True) -> Repair:
    """Check that a segment decodes to its end; with ``fix``, cut a torn or zero-filled tail back to
    the last whole fragment (fMP4) or TS packet that decodes. ``decode=False`` checks the structure
    only (cheap: box or packet headers; ``duration_s`` is then 0). Never raises for bad media."""
    path = Path(path)
    size = path.stat().st_size
    layout = _ts_layout if path.suffix == ".ts" else _mp4_layout
    good, fragments, junk = layout(path)
    keep = good
    if not decode:
        if keep < size and fix:
            os.truncate(path, keep)
        if keep == 0 or (path.suffix != ".ts" and not fragments):
            return Repair(
                "broken" if junk else "empty", 0.0, size - keep, "no whole fragment" if junk else ""
            )
        if keep < size and not fix:
            return Repair("broken", 0.0, size - keep, "torn or zero-filled tail")
        return Repair("ok", 0.0, size - keep)
    for _attempt in range(8):
        if keep < size and fix:
            os.truncate(path, keep)
        if keep == 0:
            return Repair("broken" if junk else "empty", 0.0, size, "no whole header" if junk else "")
        if keep < size and not fix:
            return Repair("broken", 0.0, size - keep, "torn or zero-filled tail")
        bad, frames, duration, why = _first_bad_packet(path)
        if bad is None:
            if frames == 0:
                return Repair("broken" if junk else "empty", 0.0, size - keep, why if junk else "")
            return Repair("ok", duration or 0.0, size - keep)
        if not fix:
            return Repair("broken", 0.0, 0, why)
        earlier = [f for f in fragments if f <= bad] if fragments else [bad // TS_PACKET * TS_PACKET]
        cut = max(earlier) if earlier else 0
        if cut >= keep:
            return Repair("broken", 0.0, size - keep, why)
        keep, junk = cut, True
        fragments = [f for f in fragments if f < cut]
    return Repair("broken", 0.0, size - keep, "does not settle")


def quarantine(path: Path, reason: str, index: Any, session_id: str | None, start_ts: float) -> Path:
    """Rename an unrepairable segment ``*.broken`` and book it in the index (if one is given)."""
    broken = path.with_name(path.name + ".broken")
    size = path.stat().st_size
    os.replace(path, broken)
    fsync_dir(path.parent)
    if index is not None:
        with contextlib.suppress(Exception):  # the rename already says it; the index may be full
            index.add_broken(session_id, broken, start_ts, size, reason)
    return broken


def recover_orphans(root: Path, index: Any, *, emit: Emit | None = None) -> list[ClosedSegment]:
    """Repair and index the segments a killed recorder left behind (files under ``root`` the index
    lacks), and close the sessions a crash left ``active``. Call it at start, before recording.

    The session id is the segment's directory name relative to ``root`` (None at the top level).
    Every file is decoded first: a torn or zero-filled tail is cut back to the last whole fragment that
    decodes (``media.record.repaired``); a file holding only its header (killed before its first
    fragment) holds no video and is removed; a file with nothing that decodes is renamed ``*.broken``,
    booked in the index (``broken_segments``) and reported.
    """
    emit = emit or (lambda _t, _d: None)
    known: set[str] = set()
    for summary in index.sessions():
        known.update(str(s.path) for s in index.segments(summary.session_id))
    known.update(str(s.path) for s in index.segments(None))
    found: list[ClosedSegment] = []
    for path in sorted(root.rglob("*")):
        start = parse_stamp(path.name)
        if start is None or str(path.resolve()) in known or str(path) in known or not path.is_file():
            continue
        session = None if path.parent == root else path.parent.name
        repaired = repair_segment(path)
        if repaired.status == "empty":  # cut before its first fragment: it holds no video, nothing is lost
            path.unlink(missing_ok=True)
            continue
        if repaired.status == "broken":
            broken = quarantine(path, repaired.detail, index, session, start)
            emit(
                "media.record.error",
                {
                    "session_id": session,
                    "kind": "unplayable",
                    "error": f"{path.name} does not decode ({repaired.detail}); kept as {broken.name}",
                },
            )
            continue
        if repaired.truncated_bytes:
            emit(
                "media.record.repaired",
                {
                    "session_id": session,
                    "file": path.name,
                    "truncated_bytes": repaired.truncated_bytes,
                    "kept_s": round(repaired.duration_s, 3),
                },
            )
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        seg = ClosedSegment(
            session, path, start, start + repaired.duration_s, file_sha256(path), path.stat().st_size
        )
        index.add_segment(session, path, seg.start_ts, seg.end_ts, seg.sha256, seg.bytes)
        found.append(seg)
    closed_sessions = index.close_active_sessions()
    if found or closed_sessions:
        emit(
            "media.record.recovered",
            {
                "segments": len(found),
                "paths": [str(s.path) for s in found[:20]],
                "closed_sessions": closed_sessions,
            },
        )
    return found
