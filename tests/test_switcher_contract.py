"""The switcher contract, run against every protocol's simulator over a real TCP socket and a real pty.

A technician's script: connect, route, check the routing was read back, then break things one at a
time (garbage, silence, error codes, dropped links, a switcher that lies, a pulled cable) and expect a
typed error, a recovery, and health that says what to check.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from switcher_helpers import listen

from drivers.switcher.driver import Switcher
from drivers.switcher.errors import (
    RouteNotVerified,
    RouteOutOfRange,
    SwitcherGarbage,
    SwitcherMissing,
    SwitcherRejected,
    SwitcherTimeout,
)
from drivers.switcher.protocol import Layer
from drivers.switcher.simulator import SwitcherSimulator
from kiosk_core.errors import BadRequest, CommandError
from kiosk_core.health import HealthStatus

pytestmark = pytest.mark.timeout(20)

PROTOCOLS = ["extron", "kramer", "ascii"]
LINKS = ["tcp", "pty"]
# The error code each simulator answers for "busy" (retryable) and "bad value" (not retryable).
BUSY = {"extron": "E22", "kramer": "006", "ascii": None}
BAD = {"extron": "E13", "kramer": "003", "ascii": "02"}


class Rig:
    def __init__(self, sim: SwitcherSimulator, switcher: Switcher, events: list[tuple[str, dict]]):
        self.sim, self.switcher, self.events = sim, switcher, events

    async def wait_health(self, status: HealthStatus, within_s: float = 3.0) -> None:
        deadline = time.monotonic() + within_s
        while self.switcher.health().status is not status:
            if time.monotonic() > deadline:
                raise AssertionError(f"health stayed {self.switcher.health()} (wanted {status})")
            await asyncio.sleep(0.01)

    def commands_received(self) -> list[bytes]:
        return list(self.sim.received)


@pytest.fixture(params=[(p, link) for p in PROTOCOLS for link in LINKS], ids=lambda v: f"{v[0]}-{v[1]}")
async def rig(request, tmp_path: Path):
    protocol, link = request.param
    sim = SwitcherSimulator(protocol, inputs=8, outputs=4)
    cfg = await listen(sim, protocol, link, tmp_path, timeout_s=0.25, poll_interval_s=0.3)
    events: list[tuple[str, dict]] = []

    async def emit(type: str, data: dict) -> None:
        events.append((type, data))

    switcher = Switcher(cfg)
    await switcher.start(emit)
    r = Rig(sim, switcher, events)
    r.protocol, r.link = protocol, link
    await r.wait_health(HealthStatus.OK)
    yield r
    await switcher.stop()
    await sim.stop()


async def test_connects_and_names_the_switcher(rig):
    health = rig.switcher.health()
    assert health.status is HealthStatus.OK
    assert rig.switcher.protocol.title in health.reason
    if rig.protocol != "ascii":  # Extron and Kramer tell their size
        assert "(8x4)" in health.reason
        assert rig.switcher.inventory()["inputs"] == 8


async def test_route_is_made_and_read_back(rig):
    result = await rig.switcher.route(3, 2)
    assert result == {"input": 3, "output": 2, "video": True, "audio": True, "attempts": 1}
    assert rig.sim.matrix.read(2, Layer.VIDEO) == 3 and rig.sim.matrix.read(2, Layer.AUDIO) == 3
    received = rig.commands_received()
    proto = rig.switcher.protocol
    assert proto.query_command(2, Layer.VIDEO) in received and proto.query_command(2, Layer.AUDIO) in received
    assert ("switcher.routed", result) in rig.events


async def test_video_and_audio_break_away(rig):
    await rig.switcher.route(1, 1)
    await rig.switcher.route(5, 1, audio=False)
    await rig.switcher.route(6, 1, video=False)
    assert rig.sim.matrix.read(1, Layer.VIDEO) == 5
    assert rig.sim.matrix.read(1, Layer.AUDIO) == 6


async def test_one_garbled_reply_is_retried(rig):
    rig.sim.inject("garbage", times=1)
    result = await rig.switcher.route(2, 3)
    assert result["attempts"] == 2
    assert rig.switcher.health().status is HealthStatus.OK


async def test_a_switcher_that_only_answers_garbage_fails_typed_and_degraded(rig):
    rig.sim.inject("garbage", times=None)
    with pytest.raises(SwitcherGarbage):
        await rig.switcher.route(2, 3)
    assert rig.switcher.health().status is not HealthStatus.OK
    failed = [d for t, d in rig.events if t == "switcher.failed"]
    assert failed and failed[-1]["code"] == "switcher.garbage" and failed[-1]["attempts"] == 3


async def test_a_silent_switcher_times_out_then_recovers(rig):
    rig.sim.inject("silence", times=None)
    started = time.monotonic()
    # Timeout while connected; missing if the idle check has meanwhile re-opened the link and found
    # the switcher still silent. Either way: "not answering", 503 for a command.
    with pytest.raises((SwitcherTimeout, SwitcherMissing), match="no reply from the switcher|gives no"):
        await rig.switcher.route(4, 1)
    assert rig.switcher.health().status is not HealthStatus.OK
    assert time.monotonic() - started < 3  # bounded: retries x timeout + backoff
    rig.sim.clear_faults()
    await rig.wait_health(HealthStatus.OK, within_s=5)
    assert (await rig.switcher.route(4, 1))["attempts"] == 1


async def test_a_late_reply_is_not_taken_for_the_next_answer(rig):
    rig.sim.inject("slow", times=1, delay_s=0.4)
    result = await rig.switcher.route(7, 2)
    assert result["attempts"] >= 2
    assert rig.sim.matrix.read(2, Layer.VIDEO) == 7


async def test_busy_is_retried_but_a_bad_value_is_not(rig):
    if BUSY[rig.protocol]:
        rig.sim.inject("error", times=1, code=BUSY[rig.protocol])
        assert (await rig.switcher.route(1, 4))["attempts"] == 2
    rig.sim.inject("error", times=None, code=BAD[rig.protocol])
    before = len(rig.commands_received())
    with pytest.raises(SwitcherRejected) as info:
        await rig.switcher.route(2, 4)
    assert len(rig.commands_received()) == before + 1  # one try: repeating a refused request cannot help
    assert BAD[rig.protocol] in info.value.device_code


async def test_a_dropped_connection_is_reopened(rig):
    rig.sim.inject("drop", times=1)
    result = await rig.switcher.route(8, 4)
    assert result["attempts"] >= 2
    assert rig.sim.matrix.read(4, Layer.AUDIO) == 8
    await rig.wait_health(HealthStatus.OK)


async def test_a_switcher_that_acknowledges_but_does_not_switch_is_caught(rig):
    rig.sim.inject("ignore", times=None)
    with pytest.raises(RouteNotVerified, match="reads back"):
        await rig.switcher.route(5, 3)
    rig.sim.clear_faults()
    assert (await rig.switcher.route(5, 3))["input"] == 5


async def test_unplug_makes_it_missing_with_advice_and_replug_brings_it_back(rig):
    await rig.sim.unplug()
    await rig.wait_health(HealthStatus.MISSING)
    reason = rig.switcher.health().reason
    assert ("cable" in reason) and (rig.link == "tcp" or "serial" in reason)
    with pytest.raises(SwitcherMissing):
        await rig.switcher.route(1, 2)
    await rig.sim.replug()
    await rig.wait_health(HealthStatus.OK, within_s=5)
    assert (await rig.switcher.route(1, 2))["attempts"] == 1


async def test_out_of_range_numbers_are_refused(rig):
    if rig.protocol == "ascii":  # a generic matrix does not tell its size: the switcher refuses
        with pytest.raises(SwitcherRejected):
            await rig.switcher.route(9, 1)
        return
    before = len(rig.commands_received())
    with pytest.raises(RouteOutOfRange, match="inputs 1-8"):
        await rig.switcher.route(9, 1)
    assert len(rig.commands_received()) == before  # nothing was sent


async def test_route_command_answers_400_naming_the_problem_and_503_when_unplugged(rig):
    handler = rig.switcher.commands()["switcher.route"]
    assert (await handler({"input": 2, "output": 1}))["input"] == 2
    for params, words in [
        ({"output": 1}, "missing field 'input'"),
        ({"input": "two", "output": 1}, "input must be an integer"),
        ({"input": True, "output": 1}, "input must be an integer"),
        ({"input": 1, "output": 0}, "output must be an integer"),
        ({"input": 1, "output": 1, "video": False, "audio": False}, "at least one"),
        ({"input": 1, "output": 1, "volume": 3}, "unknown field(s) 'volume'"),
    ]:
        with pytest.raises(BadRequest) as info:
            await handler(params)
        assert info.value.status == 400 and words in str(info.value), (params, str(info.value))
    await rig.sim.unplug()
    await rig.wait_health(HealthStatus.MISSING)
    with pytest.raises(CommandError) as info:
        await handler({"input": 2, "output": 1})
    assert info.value.status == 503
