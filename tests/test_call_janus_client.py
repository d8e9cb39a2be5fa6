"""The kiosk's Janus signalling client against a server that is down, a hostile fake and the real Janus.

Hostile answers must end as typed CallErrors within the timeouts, the client must still close cleanly,
and nothing the server sends may crash the reader loops.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.register_assert_rewrite("call_lab")
from call_lab import TimecodeVideoTrack, connect_kiosk  # noqa: E402

from edge_media.call.errors import (  # noqa: E402
    CallError,
    CallRefused,
    CallServerUnreachable,
    CallSessionLost,
    CallSignallingError,
    CallTimeout,
)
from edge_media.call.janus import (  # noqa: E402
    MAX_MESSAGE_BYTES,
    JanusVideoRoom,
    PublisherJoined,
    PublisherLeft,
    ServerGone,
    SessionLost,
    SignallingProblem,
    WebRtcUp,
    parse_message,
)
from kiosk_core.errors import ConfigError  # noqa: E402
from sim.janus import JanusRoom, JanusServer  # noqa: E402

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = pytest.mark.xdist_group("heavy")

pytest_plugins = ["call_lab"]

FAKE_SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a hostile fake Janus (HTTP and WebSocket) --------------------------------------------------------


class FakeJanus:
    """Answers like Janus until the request named in ``hostile`` (a Janus verb or a plugin request),
    which gets ``answer(message) -> raw body`` instead (None: never answer)."""

    def __init__(self, hostile: str, answer: Callable[[dict[str, Any]], str | bytes | None]) -> None:
        self.hostile = hostile
        self.answer = answer
        self.events: asyncio.Queue[str] = asyncio.Queue()
        self.requests: list[dict[str, Any]] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/janus"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def _verb(self, msg: dict[str, Any]) -> str:
        body = msg.get("body")
        return str(body.get("request")) if isinstance(body, dict) else str(msg.get("janus"))

    def _normal(self, msg: dict[str, Any]) -> list[str]:
        """The honest replies: (direct reply, events to push later)."""
        tx = msg.get("transaction")
        verb = self._verb(msg)
        if msg.get("janus") in ("create", "attach"):
            return [json.dumps({"janus": "success", "transaction": tx, "data": {"id": 4242}})]
        if msg.get("janus") in ("keepalive", "trickle"):
            return [json.dumps({"janus": "ack", "transaction": tx})]
        if msg.get("janus") in ("detach", "destroy"):
            return [json.dumps({"janus": "success", "transaction": tx})]
        data: dict[str, Any] = {"videoroom": "event"}
        jsep = None
        if verb == "join":
            data = {"videoroom": "joined", "room": 1234, "id": 77, "private_id": 5, "publishers": []}
        elif verb == "publish":
            data = {"videoroom": "event", "configured": "ok"}
            jsep = {"type": "answer", "sdp": FAKE_SDP}
        event = {
            "janus": "event",
            "sender": 4242,
            "transaction": tx,
            "plugindata": {"plugin": "janus.plugin.videoroom", "data": data},
        }
        if jsep:
            event["jsep"] = jsep
        # An event for a transaction nobody sent comes first: it must be ignored.
        stray = dict(event, transaction="not-ours")
        return [json.dumps({"janus": "ack", "transaction": tx}), json.dumps(stray), json.dumps(event)]

    def _handle(self, msg: dict[str, Any]) -> tuple[str | bytes | None, list[str | bytes]]:
        self.requests.append(msg)
        if self._verb(msg) == self.hostile:
            raw = self.answer(msg)
            if msg.get("janus") == "message":  # a plugin answer arrives as an event after the ack
                return json.dumps({"janus": "ack", "transaction": msg.get("transaction")}), [
                    raw
                ] if raw is not None else []
            return raw, []
        replies = self._normal(msg)
        return replies[0], list(replies[1:])

    async def post(self, request: web.Request) -> web.StreamResponse:
        msg = await request.json()
        direct, later = self._handle(msg)
        for e in later:
            self.events.put_nowait(e if isinstance(e, str) else e.decode())
        if direct is None:
            await asyncio.sleep(3600)
        return web.Response(
            body=direct if isinstance(direct, bytes) else direct.encode(), content_type="application/json"
        )

    async def poll(self, request: web.Request) -> web.StreamResponse:
        try:
            first = await asyncio.wait_for(self.events.get(), 30)
        except TimeoutError:
            return web.json_response({"janus": "keepalive"})
        items = [first]
        while not self.events.empty():
            items.append(self.events.get_nowait())
        # Raw events are spliced into a JSON array as they are (a garbage one spoils the array: fine).
        return web.Response(text="[" + ",".join(items) + "]", content_type="application/json")

    async def ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(protocols=("janus-protocol",), max_msg_size=0)
        await ws.prepare(request)
        async for m in ws:
            if m.type != WSMsgType.TEXT:
                break
            direct, later = self._handle(json.loads(m.data))
            for raw in ([direct] if direct is not None else []) + later:
                if isinstance(raw, bytes):
                    await ws.send_bytes(raw)
                else:
                    await ws.send_str(raw)
        return ws

    async def __aenter__(self) -> FakeJanus:
        app = web.Application()
        app.router.add_post("/janus", self.post)
        app.router.add_post("/janus/{sid}", self.post)
        app.router.add_post("/janus/{sid}/{hid}", self.post)
        app.router.add_get("/janus/{sid}", self.poll)
        app.router.add_get("/ws", self.ws)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def _reply(kind: str) -> Callable[[dict[str, Any]], str | bytes | None]:
    def answer(msg: dict[str, Any]) -> str | bytes | None:
        tx = msg.get("transaction")
        ev = {
            "janus": "event",
            "sender": 4242,
            "transaction": tx,
            "plugindata": {"plugin": "janus.plugin.videoroom"},
        }
        return {
            "not_json": "<html>502 Bad Gateway</html>",
            "array": json.dumps([{"janus": "success", "transaction": tx}]),
            "oversized": json.dumps(
                {"janus": "success", "transaction": tx, "pad": "x" * (MAX_MESSAGE_BYTES + 1)}
            ),
            "no_janus": json.dumps({"transaction": tx, "data": {"id": 1}}),
            "no_data_id": json.dumps({"janus": "success", "transaction": tx}),
            "error": json.dumps(
                {
                    "janus": "error",
                    "transaction": tx,
                    "error": {"code": 403, "reason": "Unauthorized request (wrong or missing secret/token)"},
                }
            ),
            "bad_sdp": json.dumps(
                dict(
                    ev,
                    plugindata={
                        "plugin": "janus.plugin.videoroom",
                        "data": {"videoroom": "event", "configured": "ok"},
                    },
                    jsep={"type": "answer", "sdp": "<script>alert(1)</script>"},
                )
            ),
            "plugin_error": json.dumps(
                dict(
                    ev,
                    plugindata={
                        "plugin": "janus.plugin.videoroom",
                        "data": {
                            "videoroom": "event",
                            "error_code": 433,
                            "error": "Unauthorized (wrong pin)",
                        },
                    },
                )
            ),
            "binary": b"\x00\xff\x00",
            "never": None,
        }[kind]

    return answer


async def _bounded(coro: Awaitable[Any], limit_s: float) -> tuple[Any, float]:
    t0 = time.monotonic()
    async with asyncio.timeout(limit_s):
        result = await coro
    return result, time.monotonic() - t0


# --- the server is down ------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "ws"])
async def test_janus_down_is_unreachable_at_once(scheme: str) -> None:
    """Nobody listens on the port: connect() fails fast with CallServerUnreachable, close() is harmless."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/janus" if scheme == "http" else f"ws://127.0.0.1:{port}"
    room = JanusVideoRoom(url, 1234, "kiosk-test")
    t0 = time.monotonic()
    with pytest.raises(CallServerUnreachable) as info:
        await room.connect()
    assert time.monotonic() - t0 < 1.0
    assert info.value.code == "media.call.server_unreachable" and f"127.0.0.1:{port}" in str(info.value)
    await room.close()
    await room.close()


def test_a_url_that_is_no_janus_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="scheme must be https, http, wss or ws"):
        JanusVideoRoom("ftp://county/janus", 1234, "kiosk-test")


# --- hostile answers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error", "text"),
    [
        ("not_json", CallSignallingError, "not JSON"),
        ("array", CallSignallingError, "expected a JSON object"),
        ("oversized", CallSignallingError, "byte limit"),
        ("no_janus", CallSignallingError, "no string field 'janus'"),
        ("no_data_id", CallSignallingError, "without data.id"),
        ("error", CallRefused, "Janus code 403"),
        ("never", CallTimeout, "did not answer create the session within 0.5 s"),
    ],
)
@pytest.mark.parametrize("scheme", ["http", "ws"])
async def test_hostile_answer_to_create_is_a_typed_error(
    scheme: str, kind: str, error: type, text: str
) -> None:
    """Whatever the server answers to the first request, connect() ends with the right CallError
    within the request timeout, and close() still returns at once."""
    async with FakeJanus("create", _reply(kind)) as fake:
        url = fake.http_url if scheme == "http" else fake.ws_url
        room = JanusVideoRoom(url, 1234, "kiosk-test", request_timeout_s=0.5, close_timeout_s=0.5)
        with pytest.raises(error, match=text) as info:
            await _bounded(room.connect(), 3)
        assert isinstance(info.value, CallError)
        if kind == "error":
            assert info.value.janus_code == 403 and "token" in info.value.reason
        _, took = await _bounded(room.close(), 3)
        assert took < 2.0


_PUBLISH_CASES = [
    ("bad_sdp", CallSignallingError, "not an SDP"),
    ("plugin_error", CallRefused, "Janus code 433"),
    ("not_json", CallSignallingError, "not JSON"),
    ("never", CallTimeout, "publish the kiosk's media"),
]


@pytest.mark.parametrize(
    ("scheme", "kind", "error", "text"),
    [("http", *c) for c in _PUBLISH_CASES]
    + [("ws", *c) for c in _PUBLISH_CASES]
    # Binary frames exist only on the WebSocket.
    + [("ws", "binary", CallSignallingError, "binary WebSocket frame")],
)
async def test_hostile_answer_to_publish_is_a_typed_error(
    scheme: str, kind: str, error: type, text: str
) -> None:
    """The join works (a stray event with an unknown transaction is ignored on the way), then the
    publish answer is hostile: a typed error, a SignallingProblem event for garbage, and the reader
    survives: a keepalive afterwards still gets its answer."""
    async with FakeJanus("publish", _reply(kind)) as fake:
        url = fake.http_url if scheme == "http" else fake.ws_url
        async with JanusVideoRoom(
            url, 1234, "kiosk-test", request_timeout_s=1.0, close_timeout_s=0.5
        ) as room:
            with pytest.raises(error, match=text):
                await _bounded(room.publish(FAKE_SDP), 4)
            assert room.publisher_id == 77
            if error is CallSignallingError:
                assert isinstance(await room.next_event(2), SignallingProblem)
            reply = await room._request({"janus": "keepalive"}, "keepalive", final={"ack"})
            assert reply["janus"] == "ack"
        assert fake.requests[-1]["janus"] == "destroy"


async def test_garbage_on_the_long_poll_does_not_stop_it() -> None:
    """A non-JSON long-poll answer is reported and the poll goes on: the next event still arrives."""
    async with FakeJanus("none", _reply("never")) as fake:
        async with JanusVideoRoom(fake.http_url, 1234, "kiosk-test", request_timeout_s=2.0) as room:
            fake.events.put_nowait("{{{not json")
            problem = await room.next_event(3)
            assert isinstance(problem, SignallingProblem) and "not JSON" in problem.detail
            fake.events.put_nowait(
                json.dumps(
                    {
                        "janus": "event",
                        "sender": 4242,
                        "plugindata": {
                            "plugin": "janus.plugin.videoroom",
                            "data": {
                                "videoroom": "event",
                                "publishers": [
                                    {
                                        "id": 9,
                                        "display": "clerk-1",
                                        "streams": [{"type": "video", "mid": "0"}],
                                    }
                                ],
                            },
                        },
                    }
                )
            )
            joined = await room.next_event(3)
            assert isinstance(joined, PublisherJoined) and joined.publisher.display == "clerk-1"


def test_client_sdp_must_be_sdp() -> None:
    room = JanusVideoRoom("http://127.0.0.1:1/janus", 1234, "kiosk-test")
    with pytest.raises(ValueError, match="not an SDP"):
        asyncio.run(room.publish("hello"))


# --- the parser never raises anything but CallSignallingError ----------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_janusish = st.fixed_dictionaries(
    {
        "janus": st.sampled_from(
            ["success", "error", "event", "ack", "webrtcup", "media", "hangup", "timeout"]
        )
        | _json
    },
    optional={
        "transaction": _json,
        "session_id": _json,
        "sender": _json,
        "error": _json,
        "plugindata": st.fixed_dictionaries({}, optional={"plugin": _json, "data": _json}) | _json,
        "jsep": st.fixed_dictionaries(
            {},
            optional={
                "type": st.sampled_from(["offer", "answer"]) | _json,
                "sdp": st.text(max_size=20) | _json,
            },
        )
        | _json,
        "data": _json,
    },
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200), st.text(max_size=200), _janusish.map(json.dumps), _json.map(json.dumps)
    ),
    st.booleans(),
)
def test_parse_message_accepts_or_raises_signalling_error(raw: str | bytes, batch: bool) -> None:
    try:
        messages = parse_message(raw, allow_batch=batch)
    except CallSignallingError:
        return
    for m in messages:
        assert isinstance(m, dict) and isinstance(m["janus"], str)
        if "jsep" in m:
            assert m["jsep"]["sdp"].startswith("v=0")


@settings(max_examples=200, deadline=None)
@given(_janusish)
def test_dispatch_survives_any_valid_looking_message(message: dict[str, Any]) -> None:
    """Whatever passes the parser, the client's dispatcher turns into events or ignores; it never raises."""

    async def run() -> None:
        room = JanusVideoRoom("http://127.0.0.1:1/janus", 1234, "kiosk-test")
        room._publishers_changed = asyncio.Event()
        try:
            parsed = parse_message(json.dumps(message))
        except CallSignallingError:
            return
        for m in parsed:
            room._on_message(m)
        await room.close()

    asyncio.run(run())


# --- the real Janus ----------------------------------------------------------------------------------


@pytest.fixture
def janus_with_pin(call_netns) -> AsyncIterator[JanusServer]:
    server = JanusServer(
        netns=call_netns,
        ice_enforce=call_netns.media_if,
        rooms=[JanusRoom(1234, pin="2468"), JanusRoom(5678)],
    )
    with server:
        yield server


@pytest.mark.parametrize("scheme", ["http", "ws"])
async def test_wrong_pin_and_unknown_room_are_refused_with_janus_codes(
    call_netns, janus_with_pin, scheme: str
) -> None:
    url = janus_with_pin.http_url if scheme == "http" else janus_with_pin.ws_url
    with call_netns.entered():
        async with JanusVideoRoom(url, 1234, "kiosk-test", pin="1111") as room:
            with pytest.raises(CallRefused) as info:
                await room.publish(FAKE_SDP)
            assert info.value.janus_code == 433 and "pin" in str(info.value)
        async with JanusVideoRoom(url, 999, "kiosk-test") as room:
            with pytest.raises(CallRefused) as info:
                await room.publish(FAKE_SDP)
            assert info.value.janus_code == 426 and "room number" in str(info.value)
        # The right pin gets in (Janus then judges the SDP: a real offer is in the lab tests).
        async with JanusVideoRoom(url, 1234, "kiosk-test", pin="2468") as room:
            await room.list_participants()


async def test_both_transports_against_janus_publish_and_see_each_other(call_netns, janus) -> None:
    """A kiosk on the WebSocket transport publishes (ICE and DTLS come up: webrtcup); a watcher on the
    HTTP long-poll sees it join and leave, and Janus forgets the kiosk once its client closed."""
    with call_netns.entered():
        async with JanusVideoRoom(janus.http_url, 1234, "watcher", request_timeout_s=5) as watcher:
            await watcher.join()
            call = await connect_kiosk(janus.ws_url, tracks=[TimecodeVideoTrack(160, 120)], subscribe_to=None)
            try:
                feed = await watcher.wait_publisher("kiosk-test", 10)
                assert [s.kind for s in feed.streams] == ["video"] and feed.id == call.room.publisher_id
                await _event(call.room, lambda e: isinstance(e, WebRtcUp) and e.handle == "publisher", 10)
                names = {p.get("display"): p.get("publisher") for p in await watcher.list_participants()}
                assert names.get("kiosk-test") is True
            finally:
                await call.close()
            left = await _event(watcher, lambda e: isinstance(e, PublisherLeft) and e.feed_id == feed.id, 10)
            assert left.reason in ("leaving", "unpublished")
            assert "kiosk-test" not in {p.get("display") for p in await watcher.list_participants()}


async def _event(room: JanusVideoRoom, match: Callable[[Any], bool], timeout_s: float) -> Any:
    async with asyncio.timeout(timeout_s):
        while True:
            event = await room.next_event()
            if match(event):
                return event


@pytest.mark.parametrize("scheme", ["http", "ws"])
async def test_janus_killed_mid_call_is_server_gone_and_close_is_quiet(
    call_netns, janus, scheme: str
) -> None:
    """The media server dies (SIGKILL): the client reports ServerGone, later requests fail with
    CallServerUnreachable, and close() returns quickly without raising."""
    url = janus.http_url if scheme == "http" else janus.ws_url
    with call_netns.entered():
        room = JanusVideoRoom(url, 1234, "kiosk-test", request_timeout_s=2, close_timeout_s=0.5)
        await room.connect()
        await room.join()
        janus.kill()
        gone = await _event(room, lambda e: isinstance(e, ServerGone), 5)
        assert "cannot be reached" in gone.reason
        with pytest.raises(CallServerUnreachable):
            await room.list_participants()
        _, took = await _bounded(room.close(), 3)
        assert took < 1.0


@pytest.fixture
def janus_short_sessions(call_netns) -> AsyncIterator[JanusServer]:
    with JanusServer(netns=call_netns, ice_enforce=call_netns.media_if, session_timeout_s=1) as server:
        yield server


async def test_session_timeout_on_the_server_is_session_lost(call_netns, janus_short_sessions) -> None:
    """Janus times out a session that sends no keepalive: the client says SessionLost and refuses
    further requests with CallSessionLost; with keepalives a session outlives the server's timeout."""
    with call_netns.entered():
        kept = JanusVideoRoom(janus_short_sessions.ws_url, 1234, "kept", keepalive_s=0.3)
        lost = JanusVideoRoom(janus_short_sessions.ws_url, 1234, "lost", keepalive_s=3600)
        async with kept, lost:
            await _event(lost, lambda e: isinstance(e, SessionLost), 8)
            with pytest.raises(CallSessionLost):
                await lost.join()
            await kept.join()
            assert kept.connected and not lost.connected
