"""Hostile input against the whole switcher driver, not just its parsers: random reply bytes over a real
socket, and random params into the ``switcher.route`` command. It must never crash or hang, and must
end in a typed error or a valid result."""

from __future__ import annotations

import asyncio
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.switcher.config import SwitcherConfig
from drivers.switcher.driver import Switcher
from drivers.switcher.errors import SwitcherError
from drivers.switcher.simulator import SwitcherSimulator
from kiosk_core.errors import CommandError
from kiosk_core.health import HealthStatus
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
            for _ in range(200):
                if switcher.health().status is HealthStatus.OK:
                    break
                await asyncio.sleep(0.005)
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
