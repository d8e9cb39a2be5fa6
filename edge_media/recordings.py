"""The recording index, export and retention of service-session recordings.

``RecordingIndex`` is the SQLite book of every finished segment file: which session it belongs to,
the wall-clock span it covers, its size and SHA-256. It is written in WAL mode with
``synchronous=FULL`` so a segment the writer has indexed survives a power cut together with its file.

``Retention`` keeps the recordings filesystem healthy: it deletes the oldest segments first, when they
are older than ``max_age_s`` or while free space is under ``min_free_bytes``, and never a segment of
a session in progress. Every purge is an event. Nothing here lets "disk full" crash the process:
SQLite's "database or disk is full" and ENOSPC become ``RecordingDiskFull`` or an event.

``upload`` (in ``recording_upload``) sends a session's export to the platform over HTTP(S).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_media.recording_errors import (
    BadSegment,
    BadUploadUrl,
    EmptySession,
    IncompatibleSegments,
    RecordingDiskFull,
    RecordingError,
    RecordingIndexError,
    SegmentCorrupt,
    SegmentMissing,
    SegmentUnreadable,
    UnknownSession,
    UploadError,
    UploadFailed,
    UploadRejected,
)
from edge_media.recording_export import ExportResult, export_segments
from edge_media.recording_upload import UploadResult, upload
from kiosk_core.fsutil import fsync_dir
from kiosk_core.tasks import wait_for

__all__ = [
    "BadSegment",
    "BadUploadUrl",
    "EmptySession",
    "ExportResult",
    "IncompatibleSegments",
    "Purged",
    "RecordingDiskFull",
    "RecordingError",
    "RecordingIndex",
    "RecordingIndexError",
    "Retention",
    "Segment",
    "SegmentCorrupt",
    "SegmentMissing",
    "SegmentUnreadable",
    "SessionSummary",
    "UnknownSession",
    "UploadError",
    "UploadFailed",
    "UploadRejected",
    "UploadResult",
    "upload",
]

log = logging.getLogger("kiosk.media.recordings")

EventSink = Callable[[str, dict[str, Any]], Awaitable[None]]

# What the recorder leaves free under the watermark (or a quarter of the watermark, if less): room for the index's rows and WAL, the closing
# of the open segment and the events about it (a 2 Mbit/s segment of 10 s is 2.5 MiB).
RESERVE_BYTES = 32 * 1024 * 1024

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")  # what the appliance's session ids look like

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('active', 'closed')),
    opened_at REAL NOT NULL,
    closed_at REAL
);
CREATE TABLE IF NOT EXISTS segments (
    path TEXT PRIMARY KEY,
    session_id TEXT,
    start_ts REAL NOT NULL,
    end_ts REAL NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS segments_by_session ON segments (session_id, start_ts);
CREATE INDEX IF NOT EXISTS segments_by_age ON segments (start_ts);
CREATE TABLE IF NOT EXISTS broken_segments (
    path TEXT PRIMARY KEY,
    session_id TEXT,
    start_ts REAL NOT NULL,
    bytes INTEGER NOT NULL,
    reason TEXT NOT NULL,
    found_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Segment:
    session_id: str | None
    path: Path
    start_ts: float
    end_ts: float
    sha256: str
    bytes: int

    @property
    def duration_s(self) -> float:
        return self.end_ts - self.start_ts


@dataclass(frozen=True)
class SessionSummary:
    session_id: str
    state: str  # "active" | "closed"
    start_ts: float | None  # first segment's start; None while no segment exists
    end_ts: float | None
    segments: int
    bytes: int


@dataclass(frozen=True)
class Purged:
    segment: Segment
    why: str  # "age" | "disk"


def _check_session_id(session_id: object, *, allow_none: bool, lookup: bool = False) -> None:
    """Session ids end up in file names (exports): only a safe alphabet, never a path."""
    if session_id is None and allow_none:
        return
    if not isinstance(session_id, str) or not _SESSION_ID.match(session_id) or session_id in (".", ".."):
        if lookup:  # such a session cannot have been recorded
            raise UnknownSession(session_id)
        raise BadSegment(f"session id {session_id!r} must be 1-128 characters of letters, digits, '._:-'")


class RecordingIndex:
    """SQLite index of recorded segments per service session. Thread-safe; every call blocks briefly."""

    def __init__(self, db_path: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.db_path = Path(db_path)
        self._clock = clock
        self._lock = threading.Lock()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db: sqlite3.Connection | None = sqlite3.connect(
                str(self.db_path), check_same_thread=False, timeout=10, isolation_level=None
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise RecordingIndexError(f"recording index {self.db_path} cannot be opened: {e}") from e

    # --- plumbing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One locked transaction; SQLite errors become ``RecordingError``s here and nowhere else."""
        with self._lock:
            if self._db is None:
                raise RecordingIndexError(f"recording index {self.db_path} is closed")
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.OperationalError as e:
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                if "full" in str(e):
                    raise RecordingDiskFull(f"recording index {self.db_path}: {e}") from e
                raise RecordingIndexError(f"recording index {self.db_path}: {e}") from e
            except sqlite3.DatabaseError as e:
                raise RecordingIndexError(f"recording index {self.db_path}: {e}") from e

    @staticmethod
    def _segment(row: tuple) -> Segment:
        return Segment(
            session_id=row[1], path=Path(row[0]), start_ts=row[2], end_ts=row[3], sha256=row[4], bytes=row[5]
        )

    # --- the writer's side ---------------------------------------------------------------------

    def add_segment(
        self, session_id: str | None, path: Path, start_ts: float, end_ts: float, sha256: str, bytes: int
    ) -> Segment:
        """Index a finished, fsynced segment. Re-adding the same path replaces its row (crash recovery).

        ``session_id`` None files the segment outside any session (recording between sessions).
        A session seen for the first time is created ``active``.
        """
        _check_session_id(session_id, allow_none=True)
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise BadSegment(f"sha256 {sha256!r} is not 64 lowercase hex digits")
        if isinstance(bytes, bool) or not isinstance(bytes, int) or bytes < 0:
            raise BadSegment(f"bytes {bytes!r} must be a non-negative integer")
        try:
            start, end = float(start_ts), float(end_ts)
        except (TypeError, ValueError):
            raise BadSegment(f"timestamps {start_ts!r}..{end_ts!r} are not numbers") from None
        if not (start == start and end == end) or end < start:  # NaN or reversed
            raise BadSegment(f"segment span {start_ts!r}..{end_ts!r} is not a forward time span")
        seg = Segment(session_id, Path(os.path.abspath(path)), start, end, sha256, bytes)
        with self._tx() as db:
            if session_id is not None:
                db.execute(
                    "INSERT OR IGNORE INTO sessions (id, state, opened_at) VALUES (?, 'active', ?)",
                    (session_id, start),
                )
            db.execute(
                "INSERT INTO segments (path, session_id, start_ts, end_ts, sha256, bytes) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET session_id=excluded.session_id, "
                "start_ts=excluded.start_ts, end_ts=excluded.end_ts, sha256=excluded.sha256, "
                "bytes=excluded.bytes",
                (str(seg.path), session_id, start, end, sha256, bytes),
            )
        return seg

    def add_broken(
        self, session_id: str | None, path: Path, start_ts: float, bytes: int, reason: str
    ) -> None:
        """Book a segment that could not be repaired (kept on disk as ``*.broken``): exports of its
        session name it under ``missing``."""
        _check_session_id(session_id, allow_none=True)
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO broken_segments (path, session_id, start_ts, bytes, reason, found_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    str(Path(os.path.abspath(path))),
                    session_id,
                    float(start_ts),
                    int(bytes),
                    reason,
                    self._clock(),
                ),
            )

    def broken(self, session_id: str | None) -> list[dict[str, Any]]:
        """The quarantined segments of a session: ``{file, start_ts, bytes, reason}``, oldest first."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT path, start_ts, bytes, reason FROM broken_segments WHERE session_id IS ? "
                "ORDER BY start_ts",
                (session_id,),
            ).fetchall()
        return [{"file": Path(r[0]).name, "start_ts": r[1], "bytes": r[2], "reason": r[3]} for r in rows]

    def close_active_sessions(self) -> list[str]:
        """Close every session still ``active`` (a crash left them so); returns their ids."""
        with self._tx() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM sessions WHERE state='active' ORDER BY id")]
            db.execute(
                "UPDATE sessions SET state='closed', closed_at=? WHERE state='active'", (self._clock(),)
            )
        return ids

    def mark_active(self, session_id: str) -> None:
        _check_session_id(session_id, allow_none=False)
        with self._tx() as db:
            db.execute(
                "INSERT INTO sessions (id, state, opened_at) VALUES (?, 'active', ?) "
                "ON CONFLICT(id) DO UPDATE SET state='active', closed_at=NULL",
                (session_id, self._clock()),
            )

    def mark_closed(self, session_id: str) -> None:
        """Close a session; closing an unknown session raises ``UnknownSession``."""
        _check_session_id(session_id, allow_none=False, lookup=True)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE sessions SET state='closed', closed_at=? WHERE id=?", (self._clock(), session_id)
            )
            if cur.rowcount == 0:
                raise UnknownSession(session_id)

    # --- readers -------------------------------------------------------------------------------

    def active_sessions(self) -> set[str]:
        """Sessions marked active. Suitable as ``Retention(active_sessions=index.active_sessions)``."""
        with self._tx() as db:
            return {r[0] for r in db.execute("SELECT id FROM sessions WHERE state='active'")}

    def sessions(self) -> list[SessionSummary]:
        """Every known session, oldest first, with its span, segment count and bytes on disk."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT s.id, s.state, s.opened_at, MIN(g.start_ts), MAX(g.end_ts), COUNT(g.path), "
                "COALESCE(SUM(g.bytes), 0) FROM sessions s LEFT JOIN segments g ON g.session_id = s.id "
                "GROUP BY s.id ORDER BY COALESCE(MIN(g.start_ts), s.opened_at), s.id"
            ).fetchall()
        return [
            SessionSummary(session_id=r[0], state=r[1], start_ts=r[3], end_ts=r[4], segments=r[5], bytes=r[6])
            for r in rows
        ]

    def segments(self, session_id: str | None) -> list[Segment]:
        """A session's segments in time order. ``None`` lists segments recorded outside sessions."""
        _check_session_id(session_id, allow_none=True, lookup=True)
        cols = "path, session_id, start_ts, end_ts, sha256, bytes"
        with self._tx() as db:
            if session_id is None:
                rows = db.execute(
                    f"SELECT {cols} FROM segments WHERE session_id IS NULL ORDER BY start_ts, path"
                ).fetchall()
            else:
                if db.execute("SELECT 1 FROM sessions WHERE id=?", (session_id,)).fetchone() is None:
                    raise UnknownSession(session_id)
                rows = db.execute(
                    f"SELECT {cols} FROM segments WHERE session_id=? ORDER BY start_ts, path", (session_id,)
                ).fetchall()
        return [self._segment(r) for r in rows]

    def oldest_segments(self, *, exclude_sessions: set[str]) -> list[Segment]:
        """Every segment not in ``exclude_sessions``, oldest first (the purge order)."""
        with self._tx() as db:
            rows = db.execute(
                "SELECT path, session_id, start_ts, end_ts, sha256, bytes FROM segments "
                "ORDER BY start_ts, path"
            ).fetchall()
        return [s for s in map(self._segment, rows) if s.session_id not in exclude_sessions]

    def total_bytes(self) -> int:
        with self._tx() as db:
            return int(db.execute("SELECT COALESCE(SUM(bytes), 0) FROM segments").fetchone()[0])

    def remove_segment(self, path: Path) -> None:
        """Forget a segment; a closed session whose last segment goes is forgotten too."""
        with self._tx() as db:
            row = db.execute("SELECT session_id FROM segments WHERE path=?", (str(path),)).fetchone()
            db.execute("DELETE FROM segments WHERE path=?", (str(path),))
            if row is not None and row[0] is not None:
                db.execute(
                    "DELETE FROM sessions WHERE id=? AND state='closed' AND NOT EXISTS "
                    "(SELECT 1 FROM segments WHERE session_id=?)",
                    (row[0], row[0]),
                )

    # --- export --------------------------------------------------------------------------------

    def export(
        self,
        session_id: str,
        out_path: Path,
        *,
        directory: Path | None = None,
        recording: list[Path] | tuple[Path, ...] = (),
    ) -> ExportResult:
        """One playable MP4 of the whole session (remuxed, not re-encoded), written atomically.

        ``directory`` (the session's segment folder) lets the export find closed segments the index
        has not taken yet (a full disk refused the row): each is checked to decode to its end and
        included (``ExportResult.unindexed``) or named in ``missing``. ``recording`` are files still
        being written (named in ``missing`` as ``recording``). Quarantined segments and holes in the
        timeline are in ``missing`` too; ``complete`` is True when nothing is.

        Blocking (hashes and copies every segment): call it through ``asyncio.to_thread``.
        Raises ``UnknownSession``, ``EmptySession``, ``SegmentMissing``, ``SegmentCorrupt`` (checked
        for every segment before anything is written), ``SegmentUnreadable``, ``IncompatibleSegments``
        or ``RecordingDiskFull``; on any error no file is left at ``out_path`` or beside it.
        """
        segs = self.segments(session_id)
        missing: list[dict[str, Any]] = [{**b, "why": "broken"} for b in self.broken(session_id)]
        unindexed: list[Segment] = []
        if directory is not None and Path(directory).is_dir():
            from edge_media.segments import file_sha256, parse_stamp, repair_segment

            indexed = {str(s.path) for s in segs}
            busy = {str(Path(os.path.abspath(p))) for p in recording}
            for path in sorted(Path(directory).iterdir()):
                start = parse_stamp(path.name)
                full = str(Path(os.path.abspath(path)))
                if start is None or full in indexed or not path.is_file():
                    continue
                if full in busy:
                    missing.append({"file": path.name, "start_ts": start, "why": "recording"})
                    continue
                check = repair_segment(path, fix=False)
                if check.status != "ok":
                    missing.append(
                        {"file": path.name, "start_ts": start, "why": check.detail or check.status}
                    )
                    continue
                size = path.stat().st_size
                unindexed.append(
                    Segment(session_id, Path(full), start, start + check.duration_s, file_sha256(path), size)
                )
        if not segs and not unindexed:
            raise EmptySession(session_id)
        every = sorted([*segs, *unindexed], key=lambda s: (s.start_ts, str(s.path)))
        return export_segments(
            session_id,
            every,
            Path(out_path),
            missing=missing,
            unindexed=[s.path.name for s in unindexed],
        )

    def close(self) -> None:
        """Close the database. Idempotent."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> RecordingIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Retention:
    """Age and free-space retention of the recordings under ``root``.

    The oldest segment goes first. A segment goes when it ended more than ``max_age_s`` ago, or
    while the filesystem has less than ``min_free_bytes`` free. Segments of the sessions returned by
    ``active_sessions()`` are never touched; if that callable fails, the sweep deletes nothing.
    """

    def __init__(
        self,
        index: RecordingIndex,
        root: Path,
        *,
        max_age_s: float,
        min_free_bytes: int,
        active_sessions: Callable[[], set[str]],
        emit: EventSink,
        disk_usage: Callable[[Path], Any] = shutil.disk_usage,
        clock: Callable[[], float] = time.time,
        reserve_bytes: int | None = None,
    ) -> None:
        if max_age_s <= 0 or min_free_bytes < 0:
            raise ValueError("max_age_s must be > 0 and min_free_bytes >= 0")
        # The floor under the margin: RESERVE_BYTES, or a quarter of a small watermark.
        default = min(RESERVE_BYTES, min_free_bytes // 4)
        self.reserve_bytes = min(min_free_bytes, default if reserve_bytes is None else reserve_bytes)
        self.index = index
        self.root = Path(root)
        self.max_age_s = max_age_s
        self.min_free_bytes = min_free_bytes
        self._active_sessions = active_sessions
        self._emit = emit
        self._disk_usage = disk_usage
        self._clock = clock
        self._low = False  # inside a "cannot get above the watermark" episode (one event per episode)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._sweeping = asyncio.Lock()  # run() and a command-triggered sweep must not interleave

    # --- for the segment writer ----------------------------------------------------------------

    def free_bytes(self) -> int | None:
        try:
            return int(self._disk_usage(self.root).free)
        except OSError as e:
            log.warning("cannot read free space of %s: %s", self.root, e)
            return None

    def has_room(self, bytes_needed: int) -> bool:
        """May the writer start writing ``bytes_needed`` more bytes? Thread-safe, never raises.

        The watermark (``min_free_bytes``) is where retention starts deleting closed sessions; the
        writer may go on recording into that margin (a session in progress is never purged, so the
        margin is what lets it finish) and stops only where writing would leave less than
        ``reserve_bytes`` free: the floor kept for the index, closing segments and the events.
        Dipping under the watermark wakes the sweeper at once instead of at its next interval.
        """
        free = self.free_bytes()
        if free is None:
            return False
        after = free - max(0, int(bytes_needed))
        if after < self.min_free_bytes:
            self._kick()
        return after >= self.reserve_bytes

    async def disk_full(self, where: str, error: BaseException | None = None) -> None:
        """Report an ENOSPC the caller met (``media.recording.disk_full``) and sweep now."""
        await self._safe_emit(
            "media.recording.disk_full",
            {
                "where": where,
                "error": str(error) if error else None,
                "free_bytes": self.free_bytes(),
                "min_free_bytes": self.min_free_bytes,
                "reserve_bytes": self.reserve_bytes,
            },
        )
        self._kick()

    def _kick(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # --- the sweep -----------------------------------------------------------------------------

    async def sweep(self) -> list[Purged]:
        """Purge what the policy says, emit one ``media.recording.purged`` per session and reason."""
        async with self._sweeping:
            return await self._sweep()

    async def _sweep(self) -> list[Purged]:
        try:
            protected = set(self._active_sessions())
        except Exception as e:  # fail safe: never delete when we cannot tell what is in progress
            log.error("retention skipped: active sessions unknown: %s", e)
            return []
        try:
            purged, failed, free = await asyncio.to_thread(self._sweep_blocking, protected)
        except RecordingError as e:
            await self._safe_emit("media.recording.retention_failed", {"error": str(e), "code": e.code})
            return []
        for event in _purge_events(purged):
            await self._safe_emit("media.recording.purged", event)
        for seg, err in failed:
            await self._safe_emit(
                "media.recording.purge_failed",
                {"file": seg.path.name, "session_id": seg.session_id, "error": err},
            )
        if free is not None and free < self.min_free_bytes:
            if not self._low:
                self._low = True
                await self._safe_emit(
                    "media.recording.disk_low",
                    {
                        "free_bytes": free,
                        "min_free_bytes": self.min_free_bytes,
                        "protected_sessions": sorted(protected),
                        "note": "only segments of sessions in progress (or nothing) are left to purge",
                    },
                )
        else:
            self._low = False
        return purged

    def _sweep_blocking(
        self, protected: set[str]
    ) -> tuple[list[Purged], list[tuple[Segment, str]], int | None]:
        now = self._clock()
        free = self.free_bytes()
        purged: list[Purged] = []
        failed: list[tuple[Segment, str]] = []
        dirs: set[Path] = set()
        for seg in self.index.oldest_segments(exclude_sessions=protected):
            if now - seg.end_ts > self.max_age_s:
                why = "age"
            elif free is not None and free < self.min_free_bytes:
                why = "disk"
            else:
                break  # oldest first: nothing younger qualifies either
            try:
                seg.path.unlink()
            except FileNotFoundError:
                pass  # already gone (a technician, a previous half-finished sweep): forget it below
            except OSError as e:
                failed.append((seg, f"{errno.errorcode.get(e.errno or 0, 'error')}: {e.strerror or e}"))
                continue
            dirs.add(seg.path.parent)
            try:
                self.index.remove_segment(seg.path)
            except RecordingError as e:
                # The file is gone, only its row stays; the next sweep finds it missing and drops it.
                failed.append((seg, str(e)))
            purged.append(Purged(seg, why))
            free = self.free_bytes()
        for d in dirs:
            with contextlib.suppress(OSError):
                fsync_dir(d)
        return purged, failed, free

    async def run(self, interval_s: float) -> None:
        """Sweep every ``interval_s`` (and at once when ``has_room`` sees the watermark) until cancelled."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        try:
            while True:
                try:
                    await self.sweep()
                except Exception:  # a sweep must never end retention
                    log.exception("retention sweep failed")
                with contextlib.suppress(TimeoutError):
                    await wait_for(self._wake.wait(), interval_s)
                self._wake.clear()
        finally:
            self._loop = self._wake = None

    async def _safe_emit(self, type_: str, data: dict[str, Any]) -> None:
        try:
            await self._emit(type_, data)
        except Exception:
            log.exception("could not emit %s", type_)


def _purge_events(purged: list[Purged]) -> list[dict[str, Any]]:
    """Group purges by (session, reason): a disk-pressure sweep may delete hundreds of segments."""
    groups: dict[tuple[str | None, str], list[Segment]] = {}
    for p in purged:
        groups.setdefault((p.segment.session_id, p.why), []).append(p.segment)
    return [
        {
            "what": "segments",
            "session_id": sid,
            "why": why,
            "segments": len(segs),
            "bytes": sum(s.bytes for s in segs),
            "files": [s.path.name for s in segs],
            "from_ts": min(s.start_ts for s in segs),
            "to_ts": max(s.end_ts for s in segs),
        }
        for (sid, why), segs in groups.items()
    ]
