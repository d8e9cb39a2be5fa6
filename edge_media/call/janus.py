"""The kiosk's Janus VideoRoom client: signalling only (SDP in, SDP out), no media.

:class:`JanusVideoRoom` speaks the Janus API (https://janus.conf.meetecho.com/docs/rest.html and the
VideoRoom plugin's multistream API of Janus 1.x) over one of two transports chosen by the URL's scheme:

- ``http://`` / ``https://`` (``…/janus``): :class:`HttpTransport`, requests as POSTs and events by a
  long-poll GET loop;
- ``ws://`` / ``wss://``: :class:`WebSocketTransport`, subprotocol ``janus-protocol``.

The seam is :class:`Transport`: "send one JSON object, deliver every JSON object the server sends"; a
WHIP/WHEP transport would be a third class behind a different client (those are not Janus's API).

What callers may rely on:

- every message from the server is bounded (:data:`MAX_MESSAGE_BYTES`), must be a JSON object with the
  fields its kind needs, and every SDP must start with ``v=0``; anything else is a
  :class:`~edge_media.call.errors.CallSignallingError` for the request waiting on it and a
  :class:`SignallingProblem` event, never a crash of the reader loop;
- replies are matched by transaction id; unknown transaction ids are ignored;
- every request ends within its timeout with an answer or a typed :class:`~edge_media.call.errors.CallError`;
- :meth:`JanusVideoRoom.close` is idempotent, bounded and never raises, also on a dead server;
- events arrive as small frozen dataclasses from :meth:`JanusVideoRoom.next_event` or
  ``async for event in room.events()``; the queue is bounded (:data:`EVENT_QUEUE_SIZE`), the oldest
  event is dropped when full (counted in ``events_dropped``), so a caller that stops reading never stalls
  the signalling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from edge_media.call.errors import (
    CallClosed,
    CallError,
    CallRefused,
    CallServerUnreachable,
    CallSessionLost,
    CallSignallingError,
    CallTimeout,
)
from kiosk_core.errors import ConfigError
from kiosk_core.tasks import TaskSet

log = logging.getLogger("kiosk.media.call.janus")

MAX_MESSAGE_BYTES = 256 * 1024
"""Largest message accepted from the server. A VideoRoom SDP with a few streams is ~5-10 KiB."""

EVENT_QUEUE_SIZE = 256
VIDEOROOM = "janus.plugin.videoroom"
SESSION_NOT_FOUND = 458
HANDLE_NOT_FOUND = 459

Message = dict[str, Any]


# --- parsing (pure) ----------------------------------------------------------------------------------


def parse_message(data: str | bytes, *, allow_batch: bool = False, where: str = "") -> list[Message]:
    """Parse and validate one frame from the server; return its message(s).

    ``allow_batch``: a JSON array of messages is accepted (the HTTP long-poll with ``maxev`` > 1 returns
    one); elsewhere an array is an error. Raises :class:`CallSignallingError` for anything that is not
    valid Janus signalling; raises nothing else.
    """
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > MAX_MESSAGE_BYTES:
        raise CallSignallingError(
            f"message of {size} bytes is over the {MAX_MESSAGE_BYTES} byte limit", where=where
        )
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise CallSignallingError(f"not JSON ({type(exc).__name__}: {str(exc)[:80]})", where=where) from None
    if isinstance(value, list) and allow_batch:
        return [validate_message(v, where=where) for v in value]
    return [validate_message(value, where=where)]


def validate_message(value: object, *, where: str = "") -> Message:
    """Check one decoded message has the shape its ``janus`` kind needs; return it as a dict."""
    if not isinstance(value, dict):
        raise CallSignallingError(f"expected a JSON object, got {type(value).__name__}", where=where)
    kind = value.get("janus")
    if not isinstance(kind, str):
        raise CallSignallingError("the message has no string field 'janus'", where=where)
    tx = value.get("transaction")
    if tx is not None and not isinstance(tx, str):
        raise CallSignallingError("'transaction' is not a string", where=where)
    for key in ("session_id", "sender"):
        if key in value and not _is_int(value[key]):
            raise CallSignallingError(f"'{key}' is not an integer", where=where)
    if kind == "error":
        err = value.get("error")
        if (
            not isinstance(err, dict)
            or not _is_int(err.get("code"))
            or not isinstance(err.get("reason", ""), str)
        ):
            raise CallSignallingError("an 'error' message without error.code/error.reason", where=where)
    if "plugindata" in value:
        pd = value["plugindata"]
        if not isinstance(pd, dict) or not isinstance(pd.get("data"), dict):
            raise CallSignallingError("'plugindata' has no object 'data'", where=where)
    if "jsep" in value:
        validate_jsep(value["jsep"], where=where)
    return value


def validate_jsep(jsep: object, *, where: str = "") -> Mapping[str, Any]:
    """A jsep must be ``{"type": "offer"|"answer", "sdp": "v=0..."}``."""
    if not isinstance(jsep, dict):
        raise CallSignallingError("'jsep' is not an object", where=where)
    if jsep.get("type") not in ("offer", "answer"):
        raise CallSignallingError(
            f"jsep type {str(jsep.get('type'))[:20]!r} is not offer/answer", where=where
        )
    sdp = jsep.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise CallSignallingError("the jsep's 'sdp' is not an SDP (does not start with v=0)", where=where)
    return jsep


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_sdp(sdp: str, what: str) -> str:
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise ValueError(f"{what}: not an SDP (must start with v=0)")
    return sdp


# --- events ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stream:
    """One stream of a publisher (an m-line): ``kind`` "audio"/"video"/"data"."""

    mid: str
    kind: str
    codec: str | None = None
    description: str | None = None
    disabled: bool = False


@dataclass(frozen=True)
class Publisher:
    """Another participant publishing in the room (from the join reply and later events)."""

    id: int
    display: str
    streams: tuple[Stream, ...] = ()

    @property
    def video_mids(self) -> tuple[str, ...]:
        return tuple(s.mid for s in self.streams if s.kind == "video" and not s.disabled)

    @property
    def audio_mids(self) -> tuple[str, ...]:
        return tuple(s.mid for s in self.streams if s.kind == "audio" and not s.disabled)


@dataclass(frozen=True)
class PublisherJoined:
    """A publisher appeared in the room, or changed its streams."""

    publisher: Publisher


@dataclass(frozen=True)
class PublisherLeft:
    """A publisher stopped publishing (``reason`` "unpublished") or left (``"leaving"``, ``"kicked"``)."""

    feed_id: int
    reason: str


@dataclass(frozen=True)
class WebRtcUp:
    """ICE and DTLS are up on ``handle`` ("publisher" or "subscriber")."""

    handle: str


@dataclass(frozen=True)
class MediaState:
    """Janus started or stopped receiving ``kind`` on ``mid`` from us (publisher) or sending (subscriber)."""

    handle: str
    kind: str
    mid: str | None
    receiving: bool


@dataclass(frozen=True)
class SlowLink:
    """Janus saw many lost packets: ``uplink`` True means from us to Janus."""

    handle: str
    mid: str | None
    uplink: bool
    lost: int


@dataclass(frozen=True)
class HangUp:
    """The PeerConnection of ``handle`` was closed by Janus (``reason`` as Janus says, e.g. "DTLS alert")."""

    handle: str
    reason: str


@dataclass(frozen=True)
class SubscriptionUpdated:
    """Janus renegotiates the subscription (a feed came or went): answer ``sdp`` and call ``start()``."""

    sdp: str


@dataclass(frozen=True)
class SessionLost:
    """The Janus session timed out or was destroyed on the server; connect again."""

    reason: str


@dataclass(frozen=True)
class ServerGone:
    """The transport to the server broke (connection reset, refused, keepalive unanswered)."""

    reason: str


@dataclass(frozen=True)
class SignallingProblem:
    """The server sent something invalid; it was ignored (and failed any request waiting)."""

    detail: str


CallEvent = (
    PublisherJoined
    | PublisherLeft
    | WebRtcUp
    | MediaState
    | SlowLink
    | HangUp
    | SubscriptionUpdated
    | SessionLost
    | ServerGone
    | SignallingProblem
)


def parse_publishers(items: object) -> list[Publisher]:
    """The ``publishers`` list of a VideoRoom join reply or event (dummy publishers skipped)."""
    if not isinstance(items, list):
        raise CallSignallingError("'publishers' is not a list")
    out: list[Publisher] = []
    for item in items:
        if not isinstance(item, dict) or not _is_int(item.get("id")):
            raise CallSignallingError(
                "a publisher without an integer 'id' (string_ids rooms are not supported)"
            )
        if item.get("dummy"):
            continue
        streams: list[Stream] = []
        for s in item.get("streams") or []:
            if not isinstance(s, dict) or not isinstance(s.get("type"), str):
                raise CallSignallingError("a publisher stream without a 'type'")
            streams.append(
                Stream(
                    mid=str(s.get("mid", "")),
                    kind=s["type"],
                    codec=s.get("codec") if isinstance(s.get("codec"), str) else None,
                    description=s.get("description") if isinstance(s.get("description"), str) else None,
                    disabled=bool(s.get("disabled", False)),
                )
            )
        display = item.get("display")
        out.append(
            Publisher(
                id=item["id"], display=display if isinstance(display, str) else "", streams=tuple(streams)
            )
        )
    return out


# --- transports --------------------------------------------------------------------------------------


class Transport(Protocol):
    """How Janus messages travel. One object per connection; not reusable after ``close()``.

    ``open()`` connects (raising :class:`CallServerUnreachable`); afterwards every message the server
    pushes is given to ``deliver``, an invalid one to ``problem``, and a broken connection to ``lost``
    (once). ``send()`` transmits one request; a transport whose requests have direct replies (HTTP)
    delivers the reply through ``deliver`` too, or raises if the reply is invalid.
    """

    url: str

    async def open(
        self,
        deliver: Callable[[Message], None],
        problem: Callable[[CallSignallingError], None],
        lost: Callable[[CallError], None],
    ) -> None: ...

    async def send(self, message: Message) -> None: ...

    def session_created(self, session_id: int) -> None: ...

    async def close(self) -> None: ...


def _unreachable(url: str, exc: BaseException) -> CallServerUnreachable:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError):
        detail = f"TLS failed ({exc}); check the server's certificate and the kiosk's clock"
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return CallServerUnreachable(url, detail)


class _BaseTransport:
    def __init__(self, url: str, *, ssl_context: ssl.SSLContext | None, connect_timeout_s: float) -> None:
        self.url = url
        self._ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self._connect_timeout_s = connect_timeout_s
        self._http: aiohttp.ClientSession | None = None
        self._tasks = TaskSet("call.janus.transport", log)
        self._deliver: Callable[[Message], None] = lambda m: None
        self._problem: Callable[[CallSignallingError], None] = lambda e: None
        self._lost: Callable[[CallError], None] = lambda e: None
        self._closed = False

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout_s)
            self._http = aiohttp.ClientSession(timeout=timeout)
        return self._http

    async def close(self) -> None:
        self._closed = True
        await self._tasks.close()
        if self._http is not None:
            with contextlib.suppress(Exception):
                await self._http.close()
            self._http = None


async def _read_bounded(resp: aiohttp.ClientResponse, where: str) -> bytes:
    length = resp.content_length
    if length is not None and length > MAX_MESSAGE_BYTES:
        raise CallSignallingError(
            f"message of {length} bytes is over the {MAX_MESSAGE_BYTES} byte limit", where=where
        )
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        buf += chunk
        if len(buf) > MAX_MESSAGE_BYTES:
            raise CallSignallingError(f"message over the {MAX_MESSAGE_BYTES} byte limit", where=where)
    return bytes(buf)


class HttpTransport(_BaseTransport):
    """Janus's REST transport: POST ``<url>[/<session>[/<handle>]]``, events by long-poll GET.

    The long poll asks for up to 10 events at a time; Janus holds it up to 30 s and answers a
    ``keepalive`` when nothing happened, so the GET's own timeout is 45 s.
    """

    POLL_TIMEOUT_S = 45.0

    def __init__(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None, connect_timeout_s: float = 5.0
    ) -> None:
        super().__init__(url.rstrip("/"), ssl_context=ssl_context, connect_timeout_s=connect_timeout_s)
        self._session_id: int | None = None

    async def open(
        self,
        deliver: Callable[[Message], None],
        problem: Callable[[CallSignallingError], None],
        lost: Callable[[CallError], None],
    ) -> None:
        self._deliver, self._problem, self._lost = deliver, problem, lost
        self._client()  # HTTP has no connection to open; the first POST (create) shows reachability

    def _path(self, message: Message) -> str:
        path = self.url
        if "session_id" in message:
            path += f"/{message['session_id']}"
            if "handle_id" in message:
                path += f"/{message['handle_id']}"
        return path

    async def send(self, message: Message) -> None:
        if self._closed:
            raise CallClosed("the signalling transport is closed")
        where = f"reply to {message.get('janus')}"
        try:
            async with self._client().post(self._path(message), json=message, ssl=self._ssl) as resp:
                body = await self._checked_body(resp, where)
        except CallError:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise _unreachable(self.url, exc) from None
        for msg in parse_message(body, where=where):
            self._deliver(msg)

    async def _checked_body(self, resp: aiohttp.ClientResponse, where: str) -> bytes:
        if resp.status >= 500:
            raise CallServerUnreachable(
                self.url, f"HTTP {resp.status} from the server or a proxy in front of it"
            )
        if resp.status != 200:
            raise CallSignallingError(f"HTTP status {resp.status}", where=where)
        return await _read_bounded(resp, where)

    def session_created(self, session_id: int) -> None:
        self._session_id = session_id
        self._tasks.spawn(self._poll(session_id), name="janus-http-longpoll")

    async def _poll(self, session_id: int) -> None:
        url = f"{self.url}/{session_id}"
        where = "long-poll event"
        timeout = aiohttp.ClientTimeout(total=self.POLL_TIMEOUT_S, sock_connect=self._connect_timeout_s)
        while not self._closed:
            params = {"maxev": "10", "rid": str(int(time.time() * 1000))}
            try:
                async with self._client().get(url, params=params, ssl=self._ssl, timeout=timeout) as resp:
                    body = await self._checked_body(resp, where)
                messages = parse_message(body, allow_batch=True, where=where)
            except CallSignallingError as exc:
                self._problem(exc)
                # A server answering garbage at once would make this a busy loop; half a second is far
                # below any timeout that matters to a call.
                await asyncio.sleep(0.5)
                continue
            except CallServerUnreachable as exc:
                self._lost(exc)
                return
            except TimeoutError:
                continue  # no answer in 45 s: ask again; keepalives decide whether the server is gone
            except (aiohttp.ClientError, OSError) as exc:
                self._lost(_unreachable(self.url, exc))
                return
            for msg in messages:
                self._deliver(msg)


class WebSocketTransport(_BaseTransport):
    """Janus's WebSocket transport (subprotocol ``janus-protocol``); one reader task delivers everything.

    aiohttp refuses frames over 4 × :data:`MAX_MESSAGE_BYTES` by closing the connection (the transport
    is then lost); frames between the two limits are refused by the parser and the connection stays.
    """

    def __init__(
        self, url: str, *, ssl_context: ssl.SSLContext | None = None, connect_timeout_s: float = 5.0
    ) -> None:
        super().__init__(url, ssl_context=ssl_context, connect_timeout_s=connect_timeout_s)
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(
        self,
        deliver: Callable[[Message], None],
        problem: Callable[[CallSignallingError], None],
        lost: Callable[[CallError], None],
    ) -> None:
        self._deliver, self._problem, self._lost = deliver, problem, lost
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                self._ws = await self._client().ws_connect(
                    self.url,
                    protocols=("janus-protocol",),
                    ssl=self._ssl,
                    max_msg_size=4 * MAX_MESSAGE_BYTES,
                    autoping=True,
                )
        except TimeoutError:
            raise CallServerUnreachable(
                self.url, f"no WebSocket handshake within {self._connect_timeout_s:g} s"
            ) from None
        except aiohttp.WSServerHandshakeError as exc:
            raise CallSignallingError(
                f"WebSocket handshake refused (HTTP {exc.status})", where=self.url
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _unreachable(self.url, exc) from None
        self._tasks.spawn(self._read(self._ws), name="janus-ws-reader")

    async def send(self, message: Message) -> None:
        if self._closed or self._ws is None or self._ws.closed:
            raise CallServerUnreachable(self.url, "the WebSocket is closed")
        try:
            await self._ws.send_str(json.dumps(message))
        except (aiohttp.ClientError, OSError, RuntimeError) as exc:
            raise _unreachable(self.url, exc) from None

    def session_created(self, session_id: int) -> None:
        pass  # events arrive on the same socket

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        reason = "the server closed the WebSocket"
        try:
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    try:
                        messages = parse_message(msg.data, where="WebSocket message")
                    except CallSignallingError as exc:
                        self._problem(exc)
                        continue
                    for m in messages:
                        self._deliver(m)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    self._problem(CallSignallingError("a binary WebSocket frame", where="WebSocket message"))
                elif msg.type in (
                    aiohttp.WSMsgType.CLOSE,
                    aiohttp.WSMsgType.CLOSING,
                    aiohttp.WSMsgType.CLOSED,
                ):
                    break
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    reason = f"WebSocket error: {ws.exception()!r}"
                    break
        except (aiohttp.ClientError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if not self._closed:
            self._lost(CallServerUnreachable(self.url, reason))

    async def close(self) -> None:
        self._closed = True
        if self._ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._ws.close()
        await super().close()


def transport_for(
    url: str, *, ssl_context: ssl.SSLContext | None = None, connect_timeout_s: float = 5.0
) -> Transport:
    """Pick the transport by the URL's scheme (http/https → long-poll, ws/wss → WebSocket)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return HttpTransport(url, ssl_context=ssl_context, connect_timeout_s=connect_timeout_s)
    if scheme in ("ws", "wss"):
        return WebSocketTransport(url, ssl_context=ssl_context, connect_timeout_s=connect_timeout_s)
    raise ConfigError("call.server_url", [f"{url!r}: the scheme must be https, http, wss or ws"])


# --- the client --------------------------------------------------------------------------------------


@dataclass
class _Pending:
    future: asyncio.Future[Message]
    final: frozenset[str]
    what: str


@dataclass
class _Handle:
    role: str
    id: int
    joined: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class JanusVideoRoom:
    """One kiosk in one VideoRoom: a Janus session with a publisher handle and a subscriber handle.

    Typical use (the caller owns the aiortc PeerConnections)::

        async with JanusVideoRoom("wss://county/janus-ws", room=1234, display="kiosk-3308") as room:
            answer = await room.publish(pc.localDescription.sdp)           # after createOffer/setLocal
            clerk = await room.wait_publisher(lambda p: p.display.startswith("clerk"), 30)
            offer = await room.subscribe([clerk])                            # Janus's offer
            ...                                                              # answer it on a 2nd pc
            await room.start(answer_sdp)
            async for event in room.events(): ...

    ``url``: http(s)://…/janus or ws(s)://…; ``token``: Janus's core token (also sent to the room as its
    ACL token); ``apisecret``: Janus's API secret if the server has one; ``pin``: the room's pin;
    ``ssl_context`` None = default verification (system CAs). Timeouts are in seconds.
    """

    def __init__(
        self,
        url: str,
        room: int,
        display: str,
        *,
        token: str | None = None,
        pin: str | None = None,
        apisecret: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout_s: float = 5.0,
        request_timeout_s: float = 10.0,
        keepalive_s: float = 25.0,
        keepalive_grace_s: float = 45.0,
        close_timeout_s: float = 2.0,
        transport: Transport | None = None,
    ) -> None:
        self.url = url
        self.room = int(room)
        self.display = display
        self.token = token
        self.pin = pin
        self.apisecret = apisecret
        self.request_timeout_s = request_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        self.keepalive_grace_s = keepalive_grace_s
        self.close_timeout_s = close_timeout_s
        self._transport = transport or transport_for(
            url, ssl_context=ssl_context, connect_timeout_s=connect_timeout_s
        )
        self._tasks = TaskSet("call.janus", log)
        self._pending: dict[str, _Pending] = {}
        self._events: asyncio.Queue[CallEvent] = asyncio.Queue(maxsize=EVENT_QUEUE_SIZE)
        self._publishers: dict[int, Publisher] = {}
        # Replaced (after being set) on every change of the publisher list: waiters wake, re-check.
        self._publishers_changed: asyncio.Event | None = None
        self._handles: dict[int, _Handle] = {}
        self._pub: _Handle | None = None
        self._sub: _Handle | None = None
        self._dead: CallError | None = None
        self._published = False
        self._closed = False
        self.session_id: int | None = None
        self.publisher_id: int | None = None
        self.private_id: int | None = None
        self.events_dropped = 0
        self.signalling_problems = 0

    # --- public state ------------------------------------------------------------------------------

    @property
    def publishers(self) -> dict[int, Publisher]:
        """The other publishers in the room now (a copy), by feed id."""
        return dict(self._publishers)

    @property
    def connected(self) -> bool:
        return self.session_id is not None and self._dead is None and not self._closed

    # --- lifecycle ---------------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the transport, create the Janus session, start the keepalive and the event reader.

        Raises :class:`CallServerUnreachable`, :class:`CallTimeout`, :class:`CallRefused` (e.g. a bad
        token or API secret), :class:`CallSignallingError`.
        """
        if self._closed:
            raise CallClosed("this JanusVideoRoom was closed; make a new one")
        if self.session_id is not None:
            return
        self._publishers_changed = asyncio.Event()
        try:
            async with asyncio.timeout(self.connect_timeout_s + self.request_timeout_s):
                await self._transport.open(self._on_message, self._on_problem, self._on_lost)
        except TimeoutError:
            raise CallServerUnreachable(self.url, "no connection within the connect timeout") from None
        reply = await self._request({"janus": "create"}, "create the session")
        self.session_id = _data_id(reply, "create")
        self._transport.session_created(self.session_id)
        self._tasks.spawn(self._keepalive(), name="janus-keepalive")

    async def __aenter__(self) -> JanusVideoRoom:
        try:
            await self.connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Leave the room, detach the handles, destroy the session, stop every task. Idempotent, bounded
        by ``close_timeout_s`` per step, never raises (a dead server is simply not told)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.session_id is not None and self._dead is None:
                for handle in (self._sub, self._pub):
                    if handle is None:
                        continue
                    if handle.role == "publisher" and handle.joined:
                        await self._quietly(
                            self._message(
                                handle,
                                {"request": "leave"},
                                "leave the room",
                                final={"ack", "event", "success"},
                            )
                        )
                    await self._quietly(self._request({"janus": "detach", "handle_id": handle.id}, "detach"))
                await self._quietly(self._request({"janus": "destroy"}, "destroy the session"))
        finally:
            await self._tasks.close()
            with contextlib.suppress(Exception):
                await self._transport.close()
            self._fail_pending(CallClosed("the call client was closed"))

    async def _quietly(self, coro: Any) -> None:
        try:
            async with asyncio.timeout(self.close_timeout_s):
                await coro
        except (CallError, TimeoutError) as exc:
            log.debug("janus close step failed (ignored): %s", exc)

    # --- publishing --------------------------------------------------------------------------------

    async def join(self) -> None:
        """Join the room as a participant (ptype publisher) without publishing. Idempotent.

        From then on the room's publishers come and go as events (VideoRoom tells only participants),
        so a kiosk can wait for the clerk before it publishes, and a watcher can watch. Raises
        :class:`CallRefused` (wrong pin 433, no such room 426, ...) and the transport's errors.
        """
        pub = await self._publisher_handle()
        if pub.joined:
            return
        body: dict[str, Any] = {
            "request": "join",
            "ptype": "publisher",
            "room": self.room,
            "display": self.display,
        }
        self._room_auth(body)
        reply = await self._message(pub, body, "join the room")
        data = _plugin_data(reply, "join")
        if data.get("videoroom") != "joined" or not _is_int(data.get("id")):
            raise CallSignallingError(f"join answered {str(data)[:120]}", where="join")
        pub.joined = True
        self.publisher_id = data["id"]
        self.private_id = data.get("private_id") if _is_int(data.get("private_id")) else None
        self._update_publishers(data)

    async def publish(self, offer_sdp: str, *, descriptions: Mapping[str, str] | None = None) -> str:
        """Publish ``offer_sdp`` (joining the room first if :meth:`join` was not called); return Janus's
        answer SDP.

        The offer must carry all its candidates (aiortc does): ``trickle {"completed": true}`` follows.
        ``descriptions`` maps mid → a label Janus passes to subscribers (e.g. ``{"1": "document camera"}``).
        A second call renegotiates (an ICE restart, a changed track) with ``configure``.
        Raises :class:`CallRefused` (wrong pin 433, no such room 426, room full 432, ...), the
        transport's errors, :class:`CallTimeout`, or ``ValueError`` if ``offer_sdp`` is not an SDP.
        """
        _check_sdp(offer_sdp, "publish")
        pub = await self._publisher_handle()
        if not pub.joined:
            await self.join()
        # Janus wants "publish" the first time and "configure" for a renegotiation of what is published.
        request = "configure" if self._published else "publish"
        body: dict[str, Any] = {"request": request}
        if descriptions:
            body["descriptions"] = [
                {"mid": str(mid), "description": str(d)} for mid, d in descriptions.items()
            ]
        reply = await self._message(
            pub, body, f"{request} the kiosk's media", jsep={"type": "offer", "sdp": offer_sdp}
        )
        data = _plugin_data(reply, request)
        jsep = reply.get("jsep")
        if not isinstance(jsep, dict) or jsep.get("type") != "answer":
            raise CallSignallingError(f"{request} was answered without a jsep answer", where=request)
        self._published = True
        # Not awaited: the answer is what the caller needs to start ICE; waiting for the trickle's ack
        # would add a round trip (300 ms on a village link) to every (re)join.
        self._tasks.spawn(self._quietly(self._trickle_completed(pub)), name="janus-trickle")
        self._update_publishers(data)
        return str(jsep["sdp"])

    async def unpublish(self) -> None:
        """Stop publishing (stay in the room)."""
        if self._pub is not None and self._published:
            await self._message(self._pub, {"request": "unpublish"}, "unpublish")
            self._published = False

    # --- subscribing -------------------------------------------------------------------------------

    async def wait_publisher(self, match: Callable[[Publisher], bool] | str, timeout_s: float) -> Publisher:
        """Wait until a publisher for which ``match(publisher)`` is true (or whose display starts with
        ``match`` if it is a string) is in the room; return it. Publisher events are seen only after
        :meth:`publish` joined the room (a subscriber-only client cannot watch the room: Janus tells only
        participants). Raises :class:`CallTimeout`."""
        pred: Callable[[Publisher], bool] = (
            (lambda p: p.display.startswith(match)) if isinstance(match, str) else match
        )
        if self._publishers_changed is None:
            raise CallClosed("connect() first")
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    self._raise_if_dead()
                    changed = self._publishers_changed
                    for p in self._publishers.values():
                        if pred(p) and p.streams:
                            return p
                    await changed.wait()
        except TimeoutError:
            raise CallTimeout("a matching publisher in the room", timeout_s) from None

    async def list_participants(self) -> list[dict[str, Any]]:
        """VideoRoom ``listparticipants`` (a synchronous request): id, display, publisher of everyone."""
        handle = self._pub or await self._publisher_handle()
        body: dict[str, Any] = {"request": "listparticipants", "room": self.room}
        reply = await self._message(handle, body, "list the participants", final={"success", "event"})
        data = _plugin_data(reply, "listparticipants")
        parts = data.get("participants")
        if not isinstance(parts, list):
            raise CallSignallingError("listparticipants without 'participants'", where="listparticipants")
        return [p for p in parts if isinstance(p, dict)]

    async def subscribe(self, feeds: Sequence[int | Publisher | Mapping[str, Any]]) -> str:
        """Subscribe to ``feeds`` on a fresh subscriber handle; return Janus's offer SDP.

        Items: a feed id (all its streams), a :class:`Publisher` (all its streams) or a stream spec
        ``{"feed": id, "mid": "1"}``. Any earlier subscription is detached first, so the caller answers
        on a new RTCPeerConnection and then calls :meth:`start`.
        """
        streams: list[dict[str, Any]] = []
        for item in feeds:
            if isinstance(item, Publisher):
                streams.append({"feed": item.id})
            elif _is_int(item):
                streams.append({"feed": item})
            elif isinstance(item, Mapping) and _is_int(item.get("feed")):
                streams.append(dict(item))
            else:
                raise ValueError(f"subscribe: {item!r} is not a feed id, Publisher or stream spec")
        if not streams:
            raise ValueError("subscribe: no feeds given")
        await self.unsubscribe()
        sub = await self._attach("subscriber")
        self._sub = sub
        body: dict[str, Any] = {
            "request": "join",
            "ptype": "subscriber",
            "room": self.room,
            "streams": streams,
        }
        if self.private_id is not None:
            body["private_id"] = self.private_id
        self._room_auth(body)
        reply = await self._message(sub, body, "subscribe to the clerk's feed")
        data = _plugin_data(reply, "subscribe")
        jsep = reply.get("jsep")
        if data.get("videoroom") != "attached" or not isinstance(jsep, dict) or jsep.get("type") != "offer":
            raise CallSignallingError(
                f"subscribe answered {str(data)[:120]} without an offer", where="subscribe"
            )
        sub.joined = True
        return str(jsep["sdp"])

    async def start(self, answer_sdp: str) -> None:
        """Send the subscriber's answer (``start``); media from Janus flows after ICE/DTLS."""
        _check_sdp(answer_sdp, "start")
        if self._sub is None:
            raise CallClosed("subscribe() first")
        reply = await self._message(
            self._sub,
            {"request": "start"},
            "start the subscription",
            jsep={"type": "answer", "sdp": answer_sdp},
        )
        _plugin_data(reply, "start")
        await self._trickle_completed(self._sub)

    async def unsubscribe(self) -> None:
        """Detach the subscriber handle, if any (its PeerConnection is closed by Janus)."""
        sub, self._sub = self._sub, None
        if sub is not None:
            self._handles.pop(sub.id, None)
            if self._dead is None:
                with contextlib.suppress(CallError):
                    await self._request({"janus": "detach", "handle_id": sub.id}, "detach the subscriber")

    # --- events ------------------------------------------------------------------------------------

    async def next_event(self, timeout_s: float | None = None) -> CallEvent:
        """The next event (raises :class:`CallTimeout` after ``timeout_s``)."""
        try:
            async with asyncio.timeout(timeout_s):
                return await self._events.get()
        except TimeoutError:
            raise CallTimeout("an event", timeout_s or 0.0) from None

    async def events(self) -> AsyncIterator[CallEvent]:
        """Every event, as it comes, until the client is closed (then the iterator ends)."""
        while not self._closed:
            get = asyncio.ensure_future(self._events.get())
            try:
                while not get.done():
                    await asyncio.wait({get}, timeout=0.5)
                    if self._closed and not get.done():
                        get.cancel()
                        return
                yield get.result()
            finally:
                if not get.done():
                    get.cancel()

    def _emit(self, event: CallEvent) -> None:
        if self._events.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._events.get_nowait()
            self.events_dropped += 1
        self._events.put_nowait(event)

    # --- internals: requests -----------------------------------------------------------------------

    def _raise_if_dead(self) -> None:
        if self._closed:
            raise CallClosed("the call client was closed")
        if self._dead is not None:
            raise self._dead

    async def destroy_session(self, session_id: int) -> None:
        """Destroy another Janus session of this kiosk, one left behind when the link dropped (its close
        could not reach the server), so its stale publisher leaves the room now rather than at Janus's
        session timeout. Never raises."""
        if session_id != self.session_id:
            await self._quietly(
                self._request({"janus": "destroy"}, "destroy a stale session", session_id=session_id)
            )

    async def _request(
        self, message: Message, what: str, *, final: set[str] | None = None, session_id: int | None = None
    ) -> Message:
        """Send ``message`` with a fresh transaction; wait for its final reply (default: success/error).
        ``session_id``: another session than this client's (``destroy_session``)."""
        if self._dead is not None:
            raise self._dead
        tx = secrets.token_hex(8)
        message = dict(message, transaction=tx)
        if session_id is not None:
            message["session_id"] = session_id
        elif self.session_id is not None and message.get("janus") != "create":
            message["session_id"] = self.session_id
        if self.token is not None:
            message["token"] = self.token
        if self.apisecret is not None:
            message["apisecret"] = self.apisecret
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[tx] = _Pending(fut, frozenset(final or {"success"}), what)
        try:
            async with asyncio.timeout(self.request_timeout_s):
                await self._transport.send(message)
                return await fut
        except CallError:
            raise
        except TimeoutError:
            raise CallTimeout(what, self.request_timeout_s) from None
        finally:
            self._pending.pop(tx, None)

    async def _message(
        self,
        handle: _Handle,
        body: Message,
        what: str,
        *,
        jsep: Message | None = None,
        final: set[str] | None = None,
    ) -> Message:
        msg: Message = {"janus": "message", "handle_id": handle.id, "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        reply = await self._request(msg, what, final=final or {"event"})
        if "plugindata" in reply:
            data = reply["plugindata"]["data"]
            if _is_int(data.get("error_code")):
                raise CallRefused(what, data["error_code"], str(data.get("error", "")))
        return reply

    async def _attach(self, role: str) -> _Handle:
        reply = await self._request({"janus": "attach", "plugin": VIDEOROOM}, f"attach a {role} handle")
        handle = _Handle(role=role, id=_data_id(reply, "attach"))
        self._handles[handle.id] = handle
        return handle

    async def _publisher_handle(self) -> _Handle:
        self._raise_if_dead()
        if self.session_id is None:
            raise CallClosed("connect() first")
        if self._pub is None:
            self._pub = await self._attach("publisher")
        return self._pub

    def _room_auth(self, body: Message) -> None:
        if self.pin is not None:
            body["pin"] = self.pin
        if self.token is not None:
            body["token"] = self.token

    async def _trickle_completed(self, handle: _Handle) -> None:
        await self._request(
            {"janus": "trickle", "handle_id": handle.id, "candidate": {"completed": True}},
            "end the candidates",
            final={"ack"},
        )

    async def _keepalive(self) -> None:
        """Keep the session alive. An unanswered keepalive is tried again every few seconds: a village
        link that drops for seconds must not end a session the server still holds (it keeps one for 60 s
        without keepalives). The session is given up only when the server says it is gone, or after
        ``keepalive_grace_s`` without an answer."""
        answered = time.monotonic()
        while True:
            failing = time.monotonic() - answered > self.keepalive_s
            await asyncio.sleep(min(self.keepalive_s, 2.0) if failing else self.keepalive_s)
            try:
                await self._request({"janus": "keepalive"}, "keepalive", final={"ack"})
                answered = time.monotonic()
            except CallSessionLost as exc:
                self._set_dead(exc, SessionLost(str(exc)))
                return
            except CallRefused as exc:
                self._set_dead(CallSessionLost(str(exc)), SessionLost(str(exc)))
                return
            except (CallServerUnreachable, CallTimeout) as exc:
                if time.monotonic() - answered < self.keepalive_grace_s:
                    log.info("janus keepalive unanswered, trying again: %s", exc)
                    continue
                self._set_dead(CallServerUnreachable(self.url, str(exc)), ServerGone(str(exc)))
                return
            except CallError as exc:
                log.warning("janus keepalive: %s", exc)

    # --- internals: what the server sends ----------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        try:
            self._dispatch(msg)
        except CallSignallingError as exc:
            self._on_problem(exc)

    def _dispatch(self, msg: Message) -> None:
        kind = msg["janus"]
        tx = msg.get("transaction")
        pending = self._pending.get(tx) if tx is not None else None
        if pending is not None and not pending.future.done():
            if kind == "error":
                err = msg["error"]
                code, reason = int(err["code"]), str(err.get("reason", ""))
                if code == SESSION_NOT_FOUND:
                    pending.future.set_exception(
                        CallSessionLost(f"{pending.what}: {reason} (Janus code {code})")
                    )
                else:
                    pending.future.set_exception(CallRefused(pending.what, code, reason))
                return
            if kind in pending.final:
                pending.future.set_result(msg)
                if kind != "event":
                    return
            elif kind == "ack":
                return
        # Asynchronous events (and the content of plugin replies: a join reply carries publishers).
        sender = msg.get("sender")
        handle = self._handles.get(sender) if sender is not None else None
        role = handle.role if handle is not None else "session"
        if kind == "event" and "plugindata" in msg:
            self._plugin_event(role, msg)
        elif kind == "webrtcup":
            self._emit(WebRtcUp(role))
        elif kind == "media":
            self._emit(
                MediaState(
                    role,
                    str(msg.get("type", "")),
                    _opt_str(msg.get("mid")),
                    bool(msg.get("receiving", False)),
                )
            )
        elif kind == "slowlink":
            lost = msg.get("lost")
            self._emit(
                SlowLink(
                    role,
                    _opt_str(msg.get("mid")),
                    bool(msg.get("uplink", False)),
                    lost if _is_int(lost) else 0,
                )
            )
        elif kind == "hangup":
            self._emit(HangUp(role, str(msg.get("reason", ""))))
        elif kind == "detached" and handle is not None:
            self._handles.pop(handle.id, None)
        elif kind == "timeout":
            self._set_dead(
                CallSessionLost("the server timed the session out"), SessionLost("session timeout")
            )
        elif kind == "error" and tx is None:
            err = msg["error"]
            if err.get("code") == SESSION_NOT_FOUND:
                self._set_dead(
                    CallSessionLost(str(err.get("reason", ""))), SessionLost(str(err.get("reason", "")))
                )

    def _plugin_event(self, role: str, msg: Message) -> None:
        data = msg["plugindata"]["data"]
        if role == "subscriber":
            jsep = msg.get("jsep")
            if data.get("videoroom") == "updated" and isinstance(jsep, dict) and jsep.get("type") == "offer":
                self._emit(SubscriptionUpdated(str(jsep["sdp"])))
            return
        if "publishers" in data or "unpublished" in data or "leaving" in data or "kicked" in data:
            self._update_publishers(data)

    def _update_publishers(self, data: Mapping[str, Any]) -> None:
        changed = False
        if "publishers" in data:
            try:
                pubs = parse_publishers(data["publishers"])
            except CallSignallingError as exc:
                self._on_problem(exc)
                pubs = []
            for p in pubs:
                if p.id == self.publisher_id:
                    continue
                if self._publishers.get(p.id) != p:
                    self._publishers[p.id] = p
                    self._emit(PublisherJoined(p))
                    changed = True
        for key in ("unpublished", "leaving", "kicked"):
            feed = data.get(key)
            if _is_int(feed) and feed in self._publishers:
                del self._publishers[feed]
                self._emit(PublisherLeft(feed, key))
                changed = True
        if changed:
            self._wake_waiters()

    def _on_problem(self, exc: CallSignallingError) -> None:
        if self._closed:
            return  # the long poll of a session being destroyed may end in anything; nobody waits for it
        self.signalling_problems += 1
        log.warning("janus signalling problem: %s", exc.detail)
        self._emit(SignallingProblem(exc.detail))
        # Garbage on the shared channel cannot be tied to one transaction: fail whoever is waiting now,
        # with the real reason, instead of letting them run into a timeout.
        self._fail_pending(exc)

    def _on_lost(self, exc: CallError) -> None:
        self._set_dead(exc, ServerGone(str(exc)))

    def _set_dead(self, exc: CallError, event: CallEvent) -> None:
        if self._dead is not None or self._closed:
            return
        self._dead = exc
        self._emit(event)
        self._fail_pending(exc)
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        if self._publishers_changed is not None:
            self._publishers_changed.set()
            self._publishers_changed = asyncio.Event()

    def _fail_pending(self, exc: CallError) -> None:
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(exc)


def _opt_str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _data_id(reply: Message, what: str) -> int:
    data = reply.get("data")
    if reply.get("janus") != "success" or not isinstance(data, dict) or not _is_int(data.get("id")):
        raise CallSignallingError(f"{what} was answered without data.id", where=what)
    return int(data["id"])


def _plugin_data(reply: Message, what: str) -> dict[str, Any]:
    pd = reply.get("plugindata")
    if not isinstance(pd, dict) or pd.get("plugin") not in (VIDEOROOM, None):
        raise CallSignallingError(f"{what} was answered without VideoRoom plugindata", where=what)
    return dict(pd["data"])
