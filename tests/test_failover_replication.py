"""The pair link between the two terminals (appliance/failover/replication.py): two real TCP ends on
loopback, HMAC-signed JSON lines, and what a hostile peer on the LAN can and cannot do."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.failover.replication import MAX_LINE, MAX_REFUSED, PairLink, Refused, decode, encode

KEY = secrets.token_bytes(32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def state(**kw: Any) -> dict[str, Any]:
    return {"type": "state", "epoch": 3, "role": "active", "healthy": True, "session": None, **kw}


async def until(check, timeout_s: float = 5.0, what: str = "condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Pair:
    def __init__(self, key_a: bytes = KEY, key_b: bytes = KEY) -> None:
        pa, pb = free_port(), free_port()
        self.got_a: list[dict[str, Any]] = []
        self.got_b: list[dict[str, Any]] = []
        self.a = PairLink(
            key=key_a,
            device_id="kiosk-main",
            listen=("127.0.0.1", pa),
            peer=("127.0.0.1", pb),
            on_message=self.got_a.append,
        )
        self.b = PairLink(
            key=key_b,
            device_id="kiosk-backup",
            listen=("127.0.0.1", pb),
            peer=("127.0.0.1", pa),
            on_message=self.got_b.append,
        )

    async def __aenter__(self) -> Pair:
        await self.a.start()
        await self.b.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.a.stop()
        await self.b.stop()


async def test_state_goes_both_ways_signed_and_in_order() -> None:
    async with Pair() as p:
        for n in range(5):
            p.a.send(state(n=n))
        p.b.send(state(role="standby", epoch=3))
        await until(lambda: len(p.got_b) == 5 and p.got_a, what="both directions")
        assert [m["n"] for m in p.got_b] == list(range(5))
        assert [m["seq"] for m in p.got_b] == [1, 2, 3, 4, 5]
        assert {m["from"] for m in p.got_b} == {"kiosk-main"}
        assert p.got_a[0]["role"] == "standby"


async def test_a_wrong_pair_key_is_refused_and_nothing_is_accepted() -> None:
    async with Pair(key_b=secrets.token_bytes(32)) as p:
        p.a.send(state())
        await until(lambda: p.b.refused or p.a.refused, what="a refusal")
        await asyncio.sleep(0.2)
        assert not p.got_b and not p.got_a
        assert not p.a.connected  # a's hello check fails on b's hello: never up


async def test_the_link_comes_back_after_the_peer_restarts() -> None:
    async with Pair() as p:
        p.a.send(state(n=1))
        await until(lambda: p.got_b, what="first message")
        await p.b.stop()
        p.a.send(state(n=2))
        await asyncio.sleep(0.3)
        await p.b.start()
        await until(lambda: any(m.get("n") == 2 for m in p.got_b), what="the message queued while down")


async def test_a_line_too_large_for_the_peer_is_not_sent_and_the_link_stays_up() -> None:
    async with Pair() as p:
        p.a.send(state(blob="x" * MAX_LINE))
        p.a.send(state(n=2))
        await until(lambda: p.got_b, what="the next line")
        assert [m["n"] for m in p.got_b] == [2] and p.a.too_large == 1
        assert [m["seq"] for m in p.got_b] == [1]


async def raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """A hostile client: connects to the accepting side and reads its hello."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=MAX_LINE * 2)
    hello = decode(KEY, await reader.readuntil(b"\n"))
    return reader, writer, hello["nonce"]


def line(body: dict[str, Any], key: bytes = KEY) -> bytes:
    return encode(key, {"v": 1, "from": "kiosk-backup", **body})


async def test_garbage_replays_and_forgeries_are_refused_and_the_connection_survives() -> None:
    async with Pair() as p:
        reader, writer, nonce = await raw(p.a.port)
        good = line({**state(n=1), "seq": 1, "to": nonce})
        for bad in (
            b"not json at all\n",
            b"\xff\xfe\x00\n",
            b'{"body": {}, "mac": "00"}\n',
            b"[1, 2, 3]\n",
            b'{"body": {"v": 1}, "mac": NaN}\n',
            b"[" * 5000 + b"\n",
            line({**state(n=666), "seq": 1, "to": nonce}, key=secrets.token_bytes(32)),  # wrong key
            line({**state(), "seq": 1, "to": "0" * 32}),  # recorded on another connection
            line({**state(), "seq": 1, "to": nonce, "type": "reboot"}),  # signed, unknown type
            line({**state(), "seq": 1, "to": nonce, "epoch": -1}),
            line({**state(), "seq": 1, "to": nonce, "from": "kiosk-main"}),  # our own id reflected
        ):
            writer.write(bad)
        writer.write(good)
        writer.write(good)  # a replay on the same connection
        await writer.drain()
        await until(lambda: p.got_a, what="the good line")
        await asyncio.sleep(0.1)
        assert [m["n"] for m in p.got_a] == [1]
        reasons = dict(p.a.refused)
        assert sum(reasons.values()) == 12, reasons
        assert any("bad mac" in r for r in reasons)
        assert any("replay" in r for r in reasons)
        writer.write(line({**state(n=2), "seq": 2, "to": nonce}))
        await writer.drain()
        await until(lambda: len(p.got_a) == 2, what="the connection still taking lines")
        writer.close()


async def test_an_oversized_line_drops_the_connection_and_the_peer_reconnects() -> None:
    async with Pair() as p:
        reader, writer, nonce = await raw(p.a.port)
        writer.write(b"x" * (MAX_LINE + 10) + b"\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by a
        # the real peer's own link is untouched
        p.b.send(state(role="standby"))
        await until(lambda: p.got_a, what="b still heard")


async def test_a_flood_of_refused_lines_drops_the_connection() -> None:
    async with Pair() as p:
        reader, writer, _ = await raw(p.a.port)
        writer.write(b"{}\n" * (MAX_REFUSED + 5))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert sum(p.a.refused.values()) == MAX_REFUSED


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_are_refused_with_a_reason_never_a_crash(data: bytes) -> None:
    with pytest.raises(Refused) as err:
        decode(KEY, data)
    assert err.value.reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=10), json_values, max_size=8))
def test_signed_bodies_of_any_shape_are_accepted_only_when_well_formed(body: dict[str, Any]) -> None:
    """Even with the right key (a peer with a bug), a body of the wrong shape is refused by reason."""
    try:
        out = decode(KEY, encode(KEY, body))
    except Refused as exc:
        assert exc.reason
    else:
        assert out == json.loads(json.dumps(body))
        assert out["type"] in ("hello", "state", "yield")


async def test_hostile_lines_over_the_socket_never_take_the_link_down() -> None:
    """Random lines from a stranger on the LAN, then the real peer: still heard."""
    async with Pair() as p:
        rng = secrets.SystemRandom()
        for _ in range(5):
            reader, writer, _ = await raw(p.a.port)
            for _ in range(10):
                writer.write(
                    bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))).replace(b"\n", b"")
                    + b"\n"
                )
            await writer.drain()
            writer.close()
        p.b.send(state(role="standby", n=9))
        await until(lambda: any(m.get("n") == 9 for m in p.got_a), what="the real peer")
        assert not p.got_a[:-1] or all(m["from"] == "kiosk-backup" for m in p.got_a)
