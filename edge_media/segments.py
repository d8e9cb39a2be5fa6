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
        audio: Any = None,
    ) -> None:
        import av

        self.path = path
        self.start_wall = start_wall
        self.t_first = t_first
        self.t_last = t_first
        self.generation = encoder.generation
        if container_kind == "fmp4":
            options = {
                "movflags": "frag_keyframe+empty_moov+default_base_moof",
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

    def mux(self, ep: EncodedPacket) -> None:
        ep.packet.stream = self.stream
        self.container.mux(ep.packet)
        self.t_last = ep.t_capture


class SegmentRecorder:
    """Writes one rendition's packets into segment files under ``directory``."""

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
        self.wall_offset = time.time() - time.monotonic()
        self._seg: _OpenSegment | None = None
        self._seq = 0
        self._paused_until = 0.0
        self._closing: queue.Queue[_OpenSegment | None] = queue.Queue(maxsize=8)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sync_thread = threading.Thread(target=self._sync_loop, name="segment-sync", daemon=True)
        self._sync_thread.start()
        self.closed: list[ClosedSegment] = []
        self.errors = 0
        self.packets = 0
        self.dropped_packets = 0
        self._audio: Any = None
        self.audio_packets = 0

    # --- the pipeline side -----------------------------------------------------------------------

    def write(self, ep: EncodedPacket, encoder: Encoder) -> None:
        """Mux one packet (pipeline thread). Never raises: failures become events and a retry."""
        seg = self._seg
        if (
            seg is not None
            and ep.keyframe
            and (ep.generation != seg.generation or ep.t_capture - seg.t_first >= self.segment_s - 1e-6)
        ):
            self._finish(seg)
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
            seg = self._start(ep, encoder)
            if seg is None:
                self.dropped_packets += 1
                return
        try:
            seg.mux(ep)
            self.packets += 1
        except Exception as exc:  # noqa: BLE001 - av/OS errors (ENOSPC, EIO) must not stop the pipeline
            self._failed(f"cannot write {seg.path.name}: {exc}")
            self._finish(seg)

    def add_audio(self, audio: Any) -> None:
        """Give segments started from now on an audio track from ``audio`` (an ``AudioEncoder``)."""
        self._audio = audio

    def write_audio(self, ea: Any, audio: Any) -> None:
        """Mux one audio packet into the open segment (pipeline thread); segments are still cut on
        video keyframes, so audio before the first one is dropped. Never raises."""
        seg = self._seg
        if seg is None or seg.audio is not audio:
            return
        try:
            seg.mux_audio(ea)
            self.audio_packets += 1
        except Exception as exc:  # noqa: BLE001 - as for video: an event and a retry, never a crash
            self._failed(f"cannot write audio to {seg.path.name}: {exc}")
            self._finish(seg)

    def _start(self, ep: EncodedPacket, encoder: Encoder) -> _OpenSegment | None:
        expected = int(encoder.bitrate_kbps * 1000 / 8 * self.segment_s * 1.5)
        if not self.has_room(expected):
            self._failed(f"not enough free disk space for a {self.segment_s:g}s segment", kind="disk_full")
            return None
        wall = ep.t_capture + self.wall_offset
        self._seq += 1
        path = self.directory / f"{stamp(wall)}-{self._seq:05d}{SUFFIX[self.container_kind]}"
        try:
            seg = _OpenSegment(
                path, self.container_kind, self.fragment_s, encoder, wall, ep.t_capture, self._audio
            )
        except Exception as exc:  # noqa: BLE001
            self._failed(f"cannot create {path}: {exc}")
            return None
        with self._lock:
            self._seg = seg
        return seg

    def _failed(self, message: str, kind: str = "io") -> None:
        self.errors += 1
        self._paused_until = time.monotonic() + RETRY_AFTER_ERROR_S
        log.warning("recording %s: %s", self.session_id or self.directory, message)
        self.emit("media.record.error", {"session_id": self.session_id, "error": message, "kind": kind})

    def _finish(self, seg: _OpenSegment) -> None:
        with self._lock:
            if self._seg is seg:
                self._seg = None
        try:
            self._closing.put(seg, timeout=5.0)
        except queue.Full:  # the disk is hopelessly slow: close here rather than lose the file
            self._close_one(seg)

    def cut(self) -> None:
        """Finish the open segment now (the next keyframe starts a new one), e.g. after a pipeline restart."""
        seg = self._seg
        if seg is not None:
            self._finish(seg)

    def close(self, timeout_s: float = 10.0) -> list[ClosedSegment]:
        """Finish the open segment and wait until every segment is closed, fsynced and indexed."""
        seg = self._seg
        if seg is not None:
            self._finish(seg)
        self._stop.set()
        try:
            self._closing.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._sync_thread.join(timeout_s)
        return list(self.closed)

    # --- the sync thread ---------------------------------------------------------------------------

    def _sync_loop(self) -> None:
        while True:
            try:
                item = self._closing.get(timeout=self.fragment_s)
            except queue.Empty:
                item = False  # type: ignore[assignment]
            if item is None:
                return
            if item:
                self._close_one(item)
                continue
            with self._lock:
                seg = self._seg
            if seg is not None:
                self._fsync_open(seg)

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
            log.warning("closing %s: %s", seg.path.name, exc)
        try:
            with open(seg.path, "rb") as f:
                os.fsync(f.fileno())
            fsync_dir(seg.path.parent)
            size = seg.path.stat().st_size
            digest = file_sha256(seg.path)
        except OSError as exc:
            self._failed(f"cannot finish {seg.path.name}: {exc}")
            return
        end = seg.start_wall + (seg.t_last - seg.t_first) + self.frame_interval
        closed = ClosedSegment(self.session_id, seg.path, seg.start_wall, end, digest, size)
        if self.index is not None:
            try:
                self.index.add_segment(
                    self.session_id, seg.path, closed.start_ts, closed.end_ts, digest, size
                )
            except Exception as exc:  # noqa: BLE001 - recovered by recover_orphans at the next start
                self._failed(f"cannot index {seg.path.name}: {exc}", kind="index")
        self.closed.append(closed)

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


def recover_orphans(root: Path, index: Any, *, emit: Emit | None = None) -> list[ClosedSegment]:
    """Index the segments a killed recorder left behind (files under ``root`` the index lacks).

    The session id is the segment's directory name relative to ``root`` (None at the top level).
    A file holding only its header (killed before its first fragment) holds no video and is removed;
    a file that is not readable media at all is renamed ``*.broken`` and reported.
    """
    emit = emit or (lambda _t, _d: None)
    known: set[str] = set()
    for summary in index.sessions():
        known.update(str(s.path) for s in index.segments(summary.session_id))
    known.update(str(s.path) for s in index.segments(None))
    found: list[ClosedSegment] = []
    for path in sorted(root.rglob("*")):
        start = parse_stamp(path.name)
        if start is None or str(path) in known or not path.is_file():
            continue
        session = None if path.parent == root else path.parent.name
        duration = segment_duration(path)
        if duration == 0.0:  # cut before its first fragment: it holds no video, nothing is lost
            path.unlink(missing_ok=True)
            continue
        if duration is None:
            broken = path.with_name(path.name + ".broken")
            os.replace(path, broken)
            emit(
                "media.record.error",
                {
                    "session_id": session,
                    "kind": "unplayable",
                    "error": f"{path.name} is not readable media; kept as {broken.name}",
                },
            )
            continue
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        seg = ClosedSegment(session, path, start, start + duration, file_sha256(path), path.stat().st_size)
        index.add_segment(session, path, seg.start_ts, seg.end_ts, seg.sha256, seg.bytes)
        found.append(seg)
    if found:
        emit("media.record.recovered", {"segments": len(found), "paths": [str(s.path) for s in found[:20]]})
    return found
