"""Hostile input against the whole switcher driver, not just its parsers: random reply bytes over a real
socket, and random params into the ``switcher.route`` command. It must never crash or hang, and must
end in a typed error or a valid result."""

from __future__ import annotations

import asyncio
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from switcher_helpers import until_ok

from drivers.switcher.config import SwitcherConfig
from drivers.switcher.driver import Switcher
from drivers.switcher.errors import SwitcherError
from drivers.switcher.protocol import Layer
from drivers.switcher.simulator import SwitcherSimulator
from kiosk_core.errors import CommandError
from tests.test_switcher_protocols import REPLY

FAST = dict(
    timeout_s=0.05, connect_timeout_s=0.5, retries=2, backoff_s=0.01, reconnect_cap_s=0.05, poll_interval_s=60
)


async def _noop(type: str, data: dict) -> None:
    return None


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    protocol=st.sampled_from(["extron", "kramer", "ascii"]),
    replies=st.lists(REPLY.map(lambda b: b + b"\r\n"), min_size=1, max_size=5),
    input_=st.integers(0, 8),
    output=st.integers(1, 4),
)
def test_the_driver_survives_any_reply_bytes(protocol, replies, input_, output):
    async def scenario() -> None:
        sim = SwitcherSimulator(protocol)
        host, port = await sim.start_tcp()
        switcher = Switcher(SwitcherConfig(backend="tcp", protocol=protocol, host=host, port=port, **FAST))
        try:
            await switcher.start(_noop)
            await until_ok(switcher, 200)
            for raw in replies:
                sim.inject("raw", raw=raw)
            started = time.monotonic()
            try:
                result = await switcher.route(input_, output)
            except SwitcherError as exc:
                assert exc.message and exc.code.startswith("switcher.")
            else:
                assert result["input"] == input_ and result["output"] == output
            assert time.monotonic() - started < 3
        finally:
            await switcher.stop()
            await sim.stop()

    asyncio.run(asyncio.wait_for(scenario(), 15))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    params=st.one_of(
        st.dictionaries(st.sampled_from(["input", "output", "video", "audio", "extra"]), JSONISH, max_size=5),
        JSONISH,
    )
)
def test_switcher_route_command_answers_any_params_with_a_status(params):
    async def scenario() -> None:
        # Port 9 on loopback refuses: well-formed requests end in 503, never in a stray exception.
        switcher = Switcher(SwitcherConfig(backend="tcp", host="127.0.0.1", port=9, **{**FAST, "retries": 1}))
        try:
            reply = await switcher.commands()["switcher.route"](params)
        except CommandError as exc:
            assert exc.status in (400, 500, 503) and str(exc).startswith("switcher.route")
        else:
            raise AssertionError(f"a refused port cannot route: {reply}")
        finally:
            await switcher.stop()

    asyncio.run(scenario())


# --- the firmware variants' reply forms (see tests/test_switcher_variants.py for their references) ----

VARIANT_FIRMWARE = {
    "kramer": [(), ("no-ok",), ("av",), ("no-addr",), ("route",), ("route", "no-ok", "no-addr")],
    "extron": [(), ("vrb0", "no-cv"), ("vrb1", "no-cv"), ("vrb2", "no-cv"), ("date2",)],
}
# Kramer P3000: no OK, AV in audio-follows-video mode, no address, #ROUTE, the start message, the long
# error form; Extron SIS: tagged reads, notices, the comma banner clock, Vrb, E18.
VARIANT_REPLIES = [
    b"~01@VID 2>4",
    b"~01@AV 1>2 OK",
    b"~01@AV 1>2",
    b"~VID 1>2 OK",
    b"~AUD 3>2",
    b"~01@ROUTE 1,2,3",
    b"~01@ROUTE 2,2,3 OK",
    b"~01@VID 9>1 ERR 003",
    b"~VID ERR 002",
    b"Kramer Electronics LTD., VS-84UT, Version 1.05",
    b"Out2 In1 Vid",
    b"Out02 In07 Aud",
    b"HplgO02",
    b"HplgO02*1",
    b"02Vmt1",
    b"Vmt02*1",
    b"Fri, Feb 13, 2009, 23:31:30",
    b"Vrb3",
    b"E18",
    b"E10",
]


@st.composite
def variant_reply(draw):
    base = bytearray(draw(st.sampled_from(VARIANT_REPLIES)))
    for _ in range(draw(st.integers(0, 3))):
        if not base:
            break
        pos = draw(st.integers(0, len(base) - 1))
        if draw(st.booleans()):
            base[pos] = draw(st.sampled_from(b"0123456789~@>, *OKERRVIDAUDOutIn\xff\x00"))
        else:
            del base[pos]
    return bytes(base)


@st.composite
def variant_rig(draw):
    protocol = draw(st.sampled_from(sorted(VARIANT_FIRMWARE)))
    return protocol, draw(st.sampled_from(VARIANT_FIRMWARE[protocol]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rig=variant_rig(),
    replies=st.lists(variant_reply().map(lambda b: b + b"\r\n"), min_size=1, max_size=5),
    input_=st.integers(0, 8),
    output=st.integers(1, 4),
)
def test_variant_reply_forms_end_typed_and_the_read_loop_keeps_going(rig, replies, input_, output):
    protocol, firmware = rig

    async def scenario() -> None:
        sim = SwitcherSimulator(protocol, firmware=list(firmware))
        host, port = await sim.start_tcp()
        cfg = SwitcherConfig(
            backend="tcp",
            protocol=protocol,
            host=host,
            port=port,
            **{**FAST, "timeout_s": 0.15, "retries": 3},
        )
        switcher = Switcher(cfg)
        try:
            await switcher.start(_noop)
            await until_ok(switcher, 400)
            for raw in replies:
                sim.inject("raw", raw=raw)
            try:
                result = await switcher.route(input_, output)
            except SwitcherError as exc:
                assert exc.message and exc.code.startswith("switcher.")
            else:
                assert result["input"] == input_ and result["output"] == output
            # Whatever came, the link and its reader are still alive: the next route just works.
            sim.clear_faults()
            assert (await switcher.route(1, 1))["input"] == 1
            assert sim.matrix.read(1, Layer.VIDEO) == 1
        finally:
            await switcher.stop()
            await sim.stop()

    asyncio.run(asyncio.wait_for(scenario(), 20))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rig=variant_rig(),
    routes=st.lists(st.tuples(st.integers(0, 8), st.integers(1, 4)), min_size=1, max_size=4),
)
def test_notices_between_every_command_and_answer_never_cost_an_attempt(rig, routes):
    protocol, firmware = rig

    async def scenario() -> None:
        sim = SwitcherSimulator(protocol, firmware=list(firmware))
        host, port = await sim.start_tcp()
        cfg = SwitcherConfig(
            backend="tcp", protocol=protocol, host=host, port=port, **{**FAST, "timeout_s": 0.3}
        )
        switcher = Switcher(cfg)
        try:
            await switcher.start(_noop)
            await until_ok(switcher, 400)
            sim.inject("notice", times=None)
            for input_, output in routes:
                assert (await switcher.route(input_, output))["attempts"] == 1
        finally:
            await switcher.stop()
            await sim.stop()

    asyncio.run(asyncio.wait_for(scenario(), 20))
