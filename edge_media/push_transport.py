"""Where the live push's packets go: one connection's muxer and socket, chosen by URL scheme.

| scheme           | container | I/O                                                             |
| ---------------- | --------- | --------------------------------------------------------------- |
| ``tcp://h:p``    | MPEG-TS   | our own TCP socket: connect/write timeouts, prompt abort, EOF seen |
| ``udp://h:p``    | MPEG-TS   | our own UDP socket, 7 TS packets per datagram (loss is not seen) |
| ``rtsp://``      | RTSP      | FFmpeg's RTSP muxer (ANNOUNCE/RECORD), RTP interleaved over TCP  |
| ``rtmp(s)://``   | FLV       | FFmpeg's RTMP protocol                                           |
| ``srt://``       | MPEG-TS   | FFmpeg's SRT protocol, only if the FFmpeg build has libsrt       |

The PyAV 18 wheel's FFmpeg is built without libsrt (its protocol list has no ``srt``), so on this
build ``srt://`` is refused up front with ``PushUnsupported`` (and by ``kiosk config check``, through
``build_problem``); the Debian ffmpeg CLI has it and can
still be the receiver. MPEG-TS over ``tcp://`` is the fallback we test and recommend: it carries H.264
and H.265, and since we own the socket a dead or stalled receiver is noticed within the write
timeout and ``stop()`` is immediate. FFmpeg-owned connections (RTMP in particular) cannot be
interrupted from Python: a stalled RTMP peer holds the sender thread until the kernel gives up.
"""

from __future__ import annotations

import contextlib
import errno
import io
import select
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from kiosk_core.errors import MediaError
from kiosk_core.urls import redact_url


class PushError(MediaError):
    code = "media.push"


class PushUrlError(PushError, ValueError):
    code = "media.push.bad_url"


class PushUnsupported(PushError):
    """The URL or the stream is fine in principle but this FFmpeg build or container cannot carry it."""

    code = "media.push.unsupported"


class LinkDown(PushError, ConnectionError):
    """The connection to the receiver failed or was lost (the sender retries)."""

    code = "media.push.link_down"


TS_PACKET = 188
TS_DATAGRAM = 7 * TS_PACKET  # 1316 bytes: fits a 1500-byte MTU with IP/UDP headers


@dataclass(frozen=True)
class Target:
    scheme: str
    url: str
    host: str
    port: int | None
    container: str  # FFmpeg muxer name

    @property
    def shown(self) -> str:
        """For events and logs: no user-info, no query (SRT passphrases, tokens)."""
        return redact_url(self.url)


_CONTAINERS = {
    "tcp": "mpegts",
    "udp": "mpegts",
    "srt": "mpegts",
    "rtsp": "rtsp",
    "rtsps": "rtsp",
    "rtmp": "flv",
    "rtmps": "flv",
}
_protocol_cache: dict[str, bool] = {}


def parse_target(url: object) -> Target:
    if not isinstance(url, str) or not url:
        raise PushUrlError(f"push URL must be a non-empty string, got {url!r}")
    if any(c in url for c in "\r\n\t \x00"):
        raise PushUrlError("push URL must not contain whitespace, line breaks or NUL")
    try:
        p = urllib.parse.urlsplit(url)
        port = p.port
    except ValueError as e:
        raise PushUrlError(f"push URL is malformed: {e}") from None
    scheme = p.scheme.lower()
    if scheme not in _CONTAINERS:
        raise PushUrlError(f"push URL scheme {scheme!r} is not one of {sorted(_CONTAINERS)}")
    if not p.hostname:
        raise PushUrlError(f"push URL {url.split('?')[0]!r} has no host")
    if scheme in ("tcp", "udp") and not port:
        raise PushUrlError(f"{scheme}:// push URL needs a port")
    problem = build_problem(scheme)
    if problem:
        raise PushUnsupported(problem)
    return Target(scheme, url, p.hostname, port, _CONTAINERS[scheme])


# The FFmpeg protocol each scheme needs; tcp:// and udp:// are our own sockets and need none.
_FFMPEG_PROTOCOLS = {"srt": "srt", "rtsp": "rtsp", "rtsps": "rtsps", "rtmp": "rtmp", "rtmps": "rtmps"}


def supported_schemes() -> list[str]:
    """The push URL schemes this FFmpeg build can carry (what a config error offers instead)."""
    return [s for s in sorted(_CONTAINERS) if s not in _FFMPEG_PROTOCOLS or protocol_available(s)]


def build_problem(scheme: str) -> str | None:
    """Why this FFmpeg build cannot push to ``scheme``, or None. Asks PyAV's FFmpeg (no network I/O)."""
    needed = _FFMPEG_PROTOCOLS.get(scheme)
    if needed is None or protocol_available(needed):
        return None
    library = " (libsrt)" if needed == "srt" else ""
    return (
        f"this FFmpeg build (PyAV's) has no {needed} protocol{library}; it can push to "
        f"{', '.join(s + '://' for s in supported_schemes())} (tcp:// is MPEG-TS, the recommended fallback)"
    )


def protocol_available(name: str) -> bool:
    """Does PyAV's FFmpeg have this protocol? Probed with an address-less URL, so no network I/O."""
    if name not in _protocol_cache:
        import av

        try:
            av.open(f"{name}://", "r", timeout=1).close()
            _protocol_cache[name] = True
        except av.error.ProtocolNotFoundError:
            _protocol_cache[name] = False
        except av.FFmpegError:
            _protocol_cache[name] = True  # it exists; it just refused the empty address
    return _protocol_cache[name]


def probe_tcp(
    host: str, port: int, *, timeout_s: float, stopped: Callable[[], bool], family: int = 0
) -> socket.socket | None:
    """One TCP connect to ``host:port``, at most ``timeout_s``: the connected socket, or None if it was
    refused, timed out, failed to resolve or ``stopped()`` turned true (checked every 50 ms)."""
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
        fam, kind, proto, _, addr = infos[0]
        sock = socket.socket(fam, kind, proto)
    except OSError:
        return None
    try:
        sock.setblocking(False)
        err = sock.connect_ex(addr)
        deadline = time.monotonic() + timeout_s
        while err in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
            left = deadline - time.monotonic()
            if left <= 0 or stopped():
                break
            if select.select([], [sock], [], min(0.05, left))[1]:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == 0:
            sock.setblocking(True)
            return sock
    except OSError:
        pass
    sock.close()
    return None


@dataclass(frozen=True)
class QueuedPacket:
    """A packet copied out of the encoder's ``av.Packet`` (which the recording keeps using)."""

    data: bytes
    pts: int | None
    dts: int | None
    duration: int
    time_base: Fraction
    key: bool
    generation: int
    audio: bool = False  # an AAC packet beside the video (``key`` stays False: GOPs are the video's)


class _SocketSink(io.RawIOBase):
    """The file object PyAV's MPEG-TS muxer writes to; every write goes straight to our socket."""

    def __init__(self, sock: socket.socket, datagram: bool) -> None:
        self.sock = sock
        self.datagram = datagram
        self.bytes_sent = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        if not self.datagram:
            self._check_peer()
        try:
            if self.datagram:
                for i in range(0, len(data), TS_DATAGRAM):
                    self.sock.send(data[i : i + TS_DATAGRAM])
            else:
                self.sock.sendall(data)
        except TimeoutError as e:
            raise LinkDown("receiver stopped reading (write timed out)") from e
        except OSError as e:
            raise LinkDown(
                f"connection lost: {errno.errorcode.get(e.errno or 0, '')} {e.strerror or e}"
            ) from e
        self.bytes_sent += len(data)
        return len(data)

    def _check_peer(self) -> None:
        """A receiver that closed is noticed here, before the kernel's RST; what it says is discarded."""
        while select.select([self.sock], [], [], 0)[0]:
            try:
                chunk = self.sock.recv(65536, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as e:
                raise LinkDown(f"connection lost: {e}") from e
            if not chunk:
                raise LinkDown("receiver closed the connection")


class Connection:
    """One connection to the receiver: a muxer with one video stream (and an AAC one with ``audio``). Used by the sender thread only,
    except ``abort()``, which any thread may call to make a blocked write fail at once."""

    def __init__(
        self,
        target: Target,
        params: Any,
        *,
        connect_timeout_s: float,
        write_timeout_s: float,
        send_buffer_bytes: int | None = None,
        audio: Any = None,
    ) -> None:
        self.target = target
        self.audio = audio  # an AudioEncoder (template, extradata, time_base): adds an AAC stream
        self.send_buffer_bytes = send_buffer_bytes
        self.params = params
        self.connect_timeout_s = connect_timeout_s
        self.write_timeout_s = write_timeout_s
        self._sock: socket.socket | None = None
        self._sink: _SocketSink | None = None
        self._container: Any = None
        self._stream: Any = None
        self._audio_stream: Any = None
        self._origin: Fraction | None = None  # first DTS of this connection: timestamps start near 0
        self._ffmpeg_bytes = 0
        self.open_ = False

    @property
    def bytes_sent(self) -> int:
        return self._sink.bytes_sent if self._sink else self._ffmpeg_bytes

    def open(self, connected: socket.socket | None = None) -> None:
        """Connect (for our own sockets) and prepare the muxer. Raises ``LinkDown``. ``connected``: a
        tcp:// socket a ``probe_tcp`` already connected, used as is (the ingest sees one connection)."""
        import av

        t = self.target
        try:
            if t.scheme in ("tcp", "udp"):
                kind = socket.SOCK_STREAM if t.scheme == "tcp" else socket.SOCK_DGRAM
                sock = connected
                if sock is None:
                    infos = socket.getaddrinfo(t.host, t.port, type=kind)
                    family, _, _, _, addr = infos[0]
                    sock = socket.socket(family, kind)
                self._sock = sock
                if self.send_buffer_bytes:
                    # A small kernel buffer keeps the backlog in our queue, where adaptation sees it
                    # (and where stale GOPs can be dropped) instead of hiding seconds of video in the kernel.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer_bytes)
                if connected is None:
                    sock.settimeout(self.connect_timeout_s)
                    sock.connect(addr)
                sock.settimeout(self.write_timeout_s)
                if t.scheme == "tcp":
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sink = _SocketSink(sock, datagram=t.scheme == "udp")
                self._container = av.open(
                    self._sink,
                    "w",
                    format="mpegts",
                    buffer_size=TS_DATAGRAM,
                    container_options={"flush_packets": "1"},
                )
            else:
                options = {}
                if t.container == "rtsp":
                    options = {"rtsp_transport": "tcp", "timeout": str(int(self.write_timeout_s * 1e6))}
                self._container = av.open(
                    t.url, "w", format=t.container, options=options, timeout=self.connect_timeout_s
                )
            p = self.params
            self._stream = self._container.add_mux_stream(
                p.codec, rate=p.rate, width=p.width, height=p.height
            )
            self._stream.time_base = p.time_base
            if self.audio is not None:  # as the recorder adds it (segments.py)
                astream = self._container.add_stream_from_template(self.audio.template, opaque=True)
                astream.codec_context.extradata = self.audio.extradata
                astream.time_base = self.audio.time_base
                self._audio_stream = astream
        except (OSError, av.FFmpegError) as e:
            self.close()
            raise LinkDown(f"cannot reach {t.shown}: {e}") from e
        except ValueError as e:  # the container cannot carry this codec
            self.close()
            raise PushUnsupported(f"{t.container} cannot carry {self.params.codec}: {e}") from e
        self.open_ = True

    def send(self, item: QueuedPacket) -> None:
        """Mux one packet (the first of a connection must be a keyframe). Raises ``LinkDown``."""
        import av

        if item.audio and (self._audio_stream is None or self._origin is None):
            return  # no audio track on this connection, or no video keyframe sent yet
        if self._origin is None:
            self._origin = (item.dts if item.dts is not None else item.pts or 0) * item.time_base
        shift = round(self._origin / item.time_base)
        if item.audio and (item.pts or 0) < shift:
            return  # audio from before this connection's first video frame: the timeline starts there
        pkt = av.Packet(item.data)
        pkt.time_base = item.time_base
        pkt.pts = None if item.pts is None else item.pts - shift
        pkt.dts = None if item.dts is None else item.dts - shift
        pkt.duration = item.duration
        pkt.is_keyframe = item.key or item.audio
        pkt.stream = self._audio_stream if item.audio else self._stream
        try:
            self._container.mux(pkt)
        except LinkDown:
            raise
        except (OSError, av.FFmpegError) as e:
            cause = e.__cause__ or e.__context__
            if isinstance(cause, LinkDown):
                raise cause from None
            raise LinkDown(f"sending to {self.target.shown} failed: {e}") from e
        if self._sink is None:
            self._ffmpeg_bytes += len(item.data)

    def abort(self) -> None:
        """From another thread: make a blocked connect or write fail now (own sockets only)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Idempotent; never raises (the link may already be dead)."""
        container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self.open_ = False
