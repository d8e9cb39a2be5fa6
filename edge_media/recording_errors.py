"""Errors of the recording index, export, retention and upload (all ``MediaError``).

They live in their own module so ``recordings``, ``recording_export`` and ``recording_upload`` can
share them without importing each other; ``edge_media.recordings`` re-exports every one.
"""

from __future__ import annotations

from pathlib import Path

from kiosk_core.errors import MediaError


class RecordingError(MediaError):
    """Sub-root for everything about recorded segments."""

    code = "media.recording"


class UnknownSession(RecordingError, LookupError):
    code = "media.recording.unknown_session"

    def __init__(self, session_id: object) -> None:
        super().__init__(f"no recording for session {session_id!r} in the index")
        self.session_id = session_id


class EmptySession(RecordingError, LookupError):
    code = "media.recording.empty_session"

    def __init__(self, session_id: object) -> None:
        super().__init__(f"session {session_id!r} has no recorded segments (yet, or any more: retention)")
        self.session_id = session_id


class BadSegment(RecordingError, ValueError):
    """``add_segment`` was given values that cannot describe a real segment."""

    code = "media.recording.bad_segment"


class SegmentMissing(RecordingError, FileNotFoundError):
    code = "media.recording.segment_missing"

    def __init__(self, path: Path) -> None:
        super().__init__(f"segment file {path} is indexed but missing on disk")
        self.path = path


class SegmentCorrupt(RecordingError, ValueError):
    """The file on disk is not the file that was indexed: truncated, or its SHA-256 differs."""

    code = "media.recording.segment_corrupt"

    def __init__(self, path: Path, *, expected: str, actual: str, reason: str) -> None:
        super().__init__(f"segment {path} is corrupt ({reason}): expected {expected}, found {actual}")
        self.path = path
        self.expected = expected
        self.actual = actual
        self.reason = reason


class SegmentUnreadable(RecordingError, ValueError):
    """The checksum matched but FFmpeg cannot demux the file (it was indexed broken)."""

    code = "media.recording.segment_unreadable"

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"segment {path} cannot be read by FFmpeg: {detail}")
        self.path = path


class IncompatibleSegments(RecordingError, ValueError):
    """Segments of one session carry different streams and cannot be joined without re-encoding."""

    code = "media.recording.incompatible_segments"


class RecordingDiskFull(RecordingError, OSError):
    """The recordings filesystem is full (ENOSPC or SQLite's "database or disk is full")."""

    code = "media.recording.disk_full"


class RecordingIndexError(RecordingError):
    """The SQLite index cannot be used (corrupt file, locked beyond the timeout, ...)."""

    code = "media.recording.index"


class UploadError(RecordingError):
    code = "media.recording.upload"


class BadUploadUrl(UploadError, ValueError):
    code = "media.recording.upload.bad_url"


class UploadRejected(UploadError):
    """The server answered with a final 4xx status: retrying the same request cannot help."""

    code = "media.recording.upload.rejected"

    def __init__(self, status: int, reason: str, url: str) -> None:
        super().__init__(f"upload to {url} rejected with HTTP {status} {reason}")
        self.status = status


class UploadFailed(UploadError):
    """Every attempt failed for transient reasons (network, timeouts, 5xx)."""

    code = "media.recording.upload.failed"
