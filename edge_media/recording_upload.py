"""Upload a session's export to the platform: HTTP(S) PUT, resumable in ``Content-Range`` chunks.

The protocol (the one Google Cloud Storage's resumable uploads use, so ordinary object stores and a
few lines of server code speak it):

* A file no larger than ``chunk_bytes`` goes in one ``PUT`` with the whole body.
* A larger file goes as ``PUT`` requests with ``Content-Range: bytes FIRST-LAST/TOTAL``. The server
  answers ``308`` with ``Range: bytes=0-N`` (what it holds so far) until the last chunk, then 200/201.
* After a failure the client asks where to resume with an empty ``PUT`` and ``Content-Range: bytes
  */TOTAL``; a ``308`` names the offset, a 2xx says the upload is already complete.
* A server that does not do partial PUT (it answers 400/405/411/416/501 to the first chunk, or 2xx
  to a chunk that is not the last) gets the whole file in one ``PUT`` instead.

Every request carries the SHA-256 of the whole file as ``Content-SHA256: <hex>`` and
``Digest: sha-256=<base64>`` (RFC 3230), so the server can verify the assembled file. Network errors,
timeouts, 408, 429 and 5xx are retried with exponential backoff and full jitter; other 4xx are final.
Blocking socket I/O runs in a worker thread; the event loop never waits on the network.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import logging
import re
import secrets
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_media.recording_errors import BadUploadUrl, UploadFailed, UploadRejected
from kiosk_core.backoff import full_jitter
from kiosk_core.urls import redact_url

if TYPE_CHECKING:
    from edge_media.recordings import RecordingIndex

log = logging.getLogger("kiosk.media.upload")

EventSink = Callable[[str, dict[str, Any]], Awaitable[None]]

_RANGE = re.compile(r"^bytes=0-(\d+)$")
_FALLBACK_STATUSES = {400, 405, 411, 416, 501}  # "I do not do partial PUT", answered to the first chunk
_TRANSIENT_STATUSES = {408, 429}
NO_PARTIAL_PUT = -1  # chunk() result: fall back to one whole-file PUT


@dataclass(frozen=True)
class UploadResult:
    session_id: str
    url: str  # redacted: no credentials, no query
    bytes: int
    sha256: str
    status: int
    requests: int
    retries: int
    resumable: bool
    seconds: float


class _Transient(Exception):
    """A failure worth retrying (network, timeout, 408/429/5xx)."""


def check_upload_url(url: object) -> urllib.parse.SplitResult:
    if not isinstance(url, str):
        raise BadUploadUrl(f"upload URL must be a string, got {type(url).__name__}")
    try:
        p = urllib.parse.urlsplit(url)
        p.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as e:
        raise BadUploadUrl(f"upload URL {url!r} is malformed: {e}") from None
    if p.scheme not in ("http", "https"):
        raise BadUploadUrl(f"upload URL {redact_url(url)!r} must use http:// or https://, not {p.scheme!r}")
    if not p.hostname:
        raise BadUploadUrl(f"upload URL {redact_url(url)!r} has no host")
    if any(c in url for c in "\r\n\t "):
        raise BadUploadUrl("upload URL must not contain whitespace or line breaks")
    return p


class _Uploader:
    """Blocking HTTP side; one instance per upload. Each request is one ``http.client`` connection."""

    def __init__(
        self,
        url: str,
        path: Path,
        size: int,
        sha256_hex: str,
        *,
        timeout_s: float,
        headers: dict[str, str] | None,
    ) -> None:
        self.parts = check_upload_url(url)
        self.path = path
        self.size = size
        self.timeout_s = timeout_s
        self.requests = 0
        digest_b64 = base64.b64encode(bytes.fromhex(sha256_hex)).decode()
        self.headers = {
            "Content-Type": "video/mp4",
            "Content-SHA256": sha256_hex,
            "Digest": f"sha-256={digest_b64}",
            **(headers or {}),
        }
        if self.parts.username:
            cred = f"{urllib.parse.unquote(self.parts.username)}:{urllib.parse.unquote(self.parts.password or '')}"
            self.headers.setdefault("Authorization", "Basic " + base64.b64encode(cred.encode()).decode())
        target = self.parts.path or "/"
        self.target = f"{target}?{self.parts.query}" if self.parts.query else target

    def _request(self, headers: dict[str, str], body: bytes | Any, length: int) -> tuple[int, str, Any]:
        cls = http.client.HTTPSConnection if self.parts.scheme == "https" else http.client.HTTPConnection
        kwargs: dict[str, Any] = {"timeout": self.timeout_s}
        if self.parts.scheme == "https":
            kwargs["context"] = ssl.create_default_context()
        conn = cls(self.parts.hostname, self.parts.port, **kwargs)
        self.requests += 1
        try:
            conn.request(
                "PUT",
                self.target,
                body=body,
                headers={**self.headers, **headers, "Content-Length": str(length)},
            )
            resp = conn.getresponse()
            resp.read(64 * 1024)  # drain a little of the answer; we only need status and headers
            return resp.status, resp.reason, resp.headers
        except (OSError, http.client.HTTPException, ssl.SSLError) as e:
            raise _Transient(f"{type(e).__name__}: {e}") from e
        finally:
            conn.close()

    def _check(self, status: int, reason: str) -> None:
        if status >= 500 or status in _TRANSIENT_STATUSES:
            raise _Transient(f"HTTP {status} {reason}")
        if status >= 400:
            raise UploadRejected(status, reason, redact_url(self.parts.geturl()))

    def whole(self) -> int:
        with open(self.path, "rb") as f:
            status, reason, _ = self._request({}, f, self.size)
        if 200 <= status < 300:
            return status
        self._check(status, reason)
        raise _Transient(f"unexpected HTTP {status} {reason} to a whole-file PUT")

    def query_offset(self) -> int | None:
        """How many bytes the server holds; None when it says the upload is complete."""
        status, reason, headers = self._request({"Content-Range": f"bytes */{self.size}"}, b"", 0)
        if status == 308:
            return _held(headers)
        if 200 <= status < 300:
            return None
        self._check(status, reason)
        return 0

    def chunk(self, offset: int, chunk_bytes: int) -> tuple[int, int | None]:
        """Send one chunk; returns (status, next offset or None when finished)."""
        end = min(self.size, offset + chunk_bytes)
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read(end - offset)
        status, reason, headers = self._request(
            {"Content-Range": f"bytes {offset}-{end - 1}/{self.size}"}, data, len(data)
        )
        if status == 308:
            return status, _held(headers)
        if 200 <= status < 300:
            # A 2xx before the last byte means the server ignored Content-Range and stored a part.
            return status, None if end == self.size else NO_PARTIAL_PUT
        if status in _FALLBACK_STATUSES and offset == 0:
            return status, NO_PARTIAL_PUT
        self._check(status, reason)
        raise _Transient(f"unexpected HTTP {status} {reason} to a chunk")


def _held(headers: Any) -> int:
    m = _RANGE.match((headers.get("Range") or "").strip())
    return int(m.group(1)) + 1 if m else 0


async def upload(
    index: RecordingIndex,
    session_id: str,
    url: str,
    *,
    emit: EventSink,
    chunk_bytes: int = 4 << 20,
    timeout_s: float = 30.0,
    max_failures: int = 8,
    backoff_base_s: float = 0.5,
    backoff_cap_s: float = 30.0,
    export_dir: Path | None = None,
    keep_export: bool = False,
    headers: dict[str, str] | None = None,
) -> UploadResult:
    """Export ``session_id`` and PUT it to ``url``; emits ``media.recording.uploaded`` or ``.upload_failed``.

    ``max_failures`` bounds consecutive failed requests (progress resets the count). Raises
    ``BadUploadUrl`` (before exporting anything), the export's errors, ``UploadRejected`` (final
    4xx) or ``UploadFailed`` (out of retries). The export is deleted afterwards unless ``keep_export``.
    """
    check_upload_url(url)
    if chunk_bytes < 1 or timeout_s <= 0 or max_failures < 1:
        raise ValueError("chunk_bytes, timeout_s and max_failures must be positive")
    shown = redact_url(url)
    out_dir = Path(export_dir) if export_dir else index.db_path.parent / "exports"
    out_dir.mkdir(parents=True, exist_ok=True)
    # A name of its own: a technician's export of the same session may sit in the same directory.
    target = out_dir / f"{session_id}.upload-{secrets.token_hex(4)}.mp4"
    exported = await asyncio.to_thread(index.export, session_id, target)
    started = time.monotonic()
    up = _Uploader(url, exported.path, exported.bytes, exported.sha256, timeout_s=timeout_s, headers=headers)
    failures = retries = 0
    resumable = exported.bytes > chunk_bytes
    offset: int | None = 0
    status = 0
    need_query = False
    try:
        while True:
            try:
                if not resumable:
                    status = await asyncio.to_thread(up.whole)
                    break
                if need_query:
                    offset = await asyncio.to_thread(up.query_offset)
                    need_query = False
                    if offset is None:
                        status = 200
                        break
                assert offset is not None
                status, nxt = await asyncio.to_thread(up.chunk, offset, chunk_bytes)
                if nxt is None:
                    break
                if nxt == NO_PARTIAL_PUT:
                    log.info("%s does not do partial PUT (HTTP %s): sending the whole file", shown, status)
                    resumable = False
                    continue
                if nxt > offset:
                    failures = 0  # progress
                offset = nxt
            except _Transient as e:
                failures += 1
                if failures >= max_failures:
                    raise UploadFailed(
                        f"upload of session {session_id} to {shown} failed "
                        f"{failures} times in a row, last: {e}"
                    ) from None
                retries += 1
                delay = full_jitter(failures - 1, backoff_base_s, backoff_cap_s)
                await _emit(
                    emit,
                    "media.recording.upload_retry",
                    {
                        "session_id": session_id,
                        "url": shown,
                        "attempt": failures,
                        "delay_s": round(delay, 3),
                        "offset": offset,
                        "error": str(e),
                    },
                )
                await asyncio.sleep(delay)
                need_query = resumable
    except (UploadFailed, UploadRejected) as e:
        await _emit(
            emit,
            "media.recording.upload_failed",
            {
                "session_id": session_id,
                "url": shown,
                "bytes": exported.bytes,
                "error": str(e),
                "code": e.code,
            },
        )
        raise
    finally:
        if not keep_export:
            with contextlib.suppress(OSError):
                exported.path.unlink()
    result = UploadResult(
        session_id=session_id,
        url=shown,
        bytes=exported.bytes,
        sha256=exported.sha256,
        status=status,
        requests=up.requests,
        retries=retries,
        resumable=resumable,
        seconds=round(time.monotonic() - started, 3),
    )
    await _emit(
        emit,
        "media.recording.uploaded",
        {
            "session_id": session_id,
            "url": shown,
            "bytes": result.bytes,
            "sha256": result.sha256,
            "segments": exported.segments,
            "duration_s": round(exported.duration_s, 3),
            "requests": result.requests,
            "retries": retries,
            "resumable": resumable,
            "seconds": result.seconds,
        },
    )
    return result


async def _emit(emit: EventSink, type_: str, data: dict[str, Any]) -> None:
    try:
        await emit(type_, data)
    except Exception:
        log.exception("could not emit %s", type_)
