"""Uploading a session's recording to a real ``http.server`` on 127.0.0.1, with injected trouble."""

from __future__ import annotations

import base64
import hashlib
import http.server
import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_media_recordings import Events, encode_segments, index_all

from edge_media.recordings import BadUploadUrl, RecordingIndex, UploadFailed, UploadRejected, upload


class PlatformStore(http.server.BaseHTTPRequestHandler):
    """The platform side of the resumable PUT protocol, with knobs for misbehaving."""

    server: Platform

    def log_message(self, *args: object) -> None:
        pass

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        s = self.server
        s.requests.append((self.path, dict(self.headers)))
        length = int(self.headers.get("Content-Length", 0))
        n = len(s.requests)
        if n in s.drop_on:  # the village link dies mid-request: read part, answer nothing
            self.rfile.read(min(length, 1000))
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        body = self.rfile.read(length)
        if s.status_always:
            return self._answer(s.status_always)
        if n in s.fail_on:
            return self._answer(503)
        content_range = self.headers.get("Content-Range")
        if not s.resumable or content_range is None:
            s.stored = bytearray(body)  # a plain store: whatever came is the object
            return self._finish()
        unit, _, spec = content_range.partition(" ")
        span, _, total = spec.partition("/")
        if span == "*":  # "where should I resume?"
            return self._held() if len(s.stored) < int(total) else self._finish()
        first, _, last = span.partition("-")
        if int(first) != len(s.stored):
            return self._held()  # not contiguous: tell the client what we have
        s.stored += body
        if len(s.stored) < int(total):
            return self._held()
        return self._finish()

    def _held(self) -> None:
        self.send_response(308)
        if self.server.stored:
            self.send_header("Range", f"bytes=0-{len(self.server.stored) - 1}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _finish(self) -> None:
        expected = base64.b64encode(hashlib.sha256(self.server.stored).digest()).decode()
        ok = self.headers.get("Digest") == f"sha-256={expected}"
        self._answer(201 if ok else 400)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Platform(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), PlatformStore)
        self.requests: list[tuple[str, dict]] = []
        self.stored = bytearray()
        self.resumable = True
        self.fail_on: set[int] = set()
        self.drop_on: set[int] = set()
        self.status_always = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/recordings/kiosk-0001?token=secret"


@pytest.fixture
def platform() -> Iterator[Platform]:
    server = Platform()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory):
    return encode_segments(tmp_path_factory.mktemp("up"), 3, size="320x240")


@pytest.fixture
def index(tmp_path: Path, segments) -> Iterator[RecordingIndex]:
    with RecordingIndex(tmp_path / "recordings.db") as idx:
        index_all(idx, "S-0100", segments)
        yield idx


FAST = {"backoff_base_s": 0.01, "backoff_cap_s": 0.05, "timeout_s": 5}


async def test_a_session_goes_up_in_chunks_and_resumes_after_the_link_drops(
    index, platform, tmp_path
) -> None:
    platform.fail_on = {3}  # a 503 from an overloaded platform
    platform.drop_on = {5}  # the link dies in the middle of a chunk
    events = Events()
    result = await upload(index, "S-0100", platform.url, emit=events, chunk_bytes=32 * 1024, **FAST)

    assert result.resumable and result.retries == 2 and result.status == 201
    assert (
        hashlib.sha256(platform.stored).hexdigest() == result.sha256 and len(platform.stored) == result.bytes
    )
    [done] = events.of("media.recording.uploaded")
    assert done["segments"] == 3 and abs(done["duration_s"] - 3.0) < 0.1
    assert "secret" not in done["url"]  # tokens never reach events
    # no chunk got through between the two failures, so they count as consecutive
    assert [e["attempt"] for e in events.of("media.recording.upload_retry")] == [1, 2]
    assert any(h.get("Content-Range", "").startswith("bytes */") for _, h in platform.requests)  # asked where
    headers = platform.requests[0][1]
    assert headers["Content-SHA256"] == result.sha256 and headers["Content-Type"] == "video/mp4"
    assert not list((tmp_path / "exports").iterdir())  # the temporary export is gone


async def test_a_server_without_partial_put_gets_the_whole_file(index, platform) -> None:
    platform.resumable = False  # stores each body as the object and answers 201: chunks would lose data
    result = await upload(index, "S-0100", platform.url, emit=Events(), chunk_bytes=32 * 1024, **FAST)
    assert not result.resumable
    assert hashlib.sha256(platform.stored).hexdigest() == result.sha256


async def test_a_refusal_is_final_and_reported(index, platform) -> None:
    platform.status_always = 403
    events = Events()
    with pytest.raises(UploadRejected) as err:
        await upload(index, "S-0100", platform.url, emit=events, **FAST)
    assert err.value.status == 403 and len(platform.requests) == 1  # no pointless retries
    assert events.of("media.recording.upload_failed")[0]["code"] == "media.recording.upload.rejected"


async def test_an_unreachable_platform_fails_after_bounded_retries(index) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    events = Events()
    with pytest.raises(UploadFailed):
        await upload(index, "S-0100", f"http://127.0.0.1:{port}/x", emit=events, max_failures=3, **FAST)
    assert len(events.of("media.recording.upload_retry")) == 2 and events.of("media.recording.upload_failed")


async def test_a_server_speaking_garbage_is_a_transient_failure(index) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def garbage() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"\x16\x03\x01 HELLO? \xff\xfe not http at all\r\n\r\n")

    t = threading.Thread(target=garbage, daemon=True)
    t.start()
    try:
        with pytest.raises(UploadFailed, match="failed 2 times"):
            await upload(
                index,
                "S-0100",
                f"http://127.0.0.1:{listener.getsockname()[1]}/x",
                emit=Events(),
                max_failures=2,
                **FAST,
            )
    finally:
        stop.set()
        t.join(5)
        listener.close()


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/x",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http:///nohost",
        "http://127.0.0.1:99999/x",
        "http://127.0.0.1/a b",
        42,
        "",
    ],
)
async def test_a_bad_upload_url_is_refused_before_anything_is_exported(index, tmp_path, url) -> None:
    with pytest.raises(BadUploadUrl):
        await upload(index, "S-0100", url, emit=Events())
    assert not (tmp_path / "exports").exists()


@pytest.mark.parametrize("session", ["../../etc/passwd", "S-0100/../x", "..", "S 0100", "S-0404"])
async def test_a_session_that_does_not_exist_or_is_a_path_is_unknown(
    index, platform, tmp_path, session
) -> None:
    from edge_media.recordings import UnknownSession

    with pytest.raises(UnknownSession):
        await upload(index, session, platform.url, emit=Events())
    assert platform.requests == [] and list((tmp_path / "exports").iterdir()) == []
