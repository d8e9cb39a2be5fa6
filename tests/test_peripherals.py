"""The Peripherals subsystem: built from [drivers.*], driven through its commands and the `sim` service.

A small in-test Context stands in for the daemon (it collects events, retained state and RPC
services); the last test puts the `sim` service on a real local bus and drives it with `kiosk sim`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from appliance import config as kconfig
from appliance.peripherals import Peripherals
from kiosk_core.errors import BadRequest, CommandError
from kiosk_core.health import HealthStatus
from kiosk_core.localbus import LocalBus
from sim.mosquitto import Mosquitto
from tests.conftest import write_config

pytestmark = pytest.mark.timeout(30)

DRIVERS = """
[drivers.switcher]
backend = "sim"
protocol = "extron"
timeout_s = 0.3
backoff_s = 0.05
reconnect_cap_s = 0.2
poll_interval_s = 0.5

[drivers.gpio]
backend = "sim"
hold_time_s = 0.3
"""

CARD_READER = """
[drivers.card_reader]
backend = "sim"
reconnect_base_s = 0.1
reconnect_cap_s = 0.3
"""


class TestContext:
    """What the daemon lends a subsystem, reduced to lists a test can read."""

    __test__ = False

    def __init__(self, config: kconfig.KioskConfig, data_dir: Path) -> None:
        self.config = config
        self.data_dir = data_dir
        self.log = logging.getLogger("test.peripherals")
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.states: dict[str, list[dict[str, Any] | None]] = {}
        self.rpc: dict[str, Mapping[str, Any]] = {}
        self.bus: LocalBus | None = None
        self.listeners: list[tuple[str, Any]] = []

    async def emit(self, type: str, data: dict[str, Any], *, durable: bool = True) -> None:
        self.events.append((type, data))

    def listen(self, prefix: str, listener: Any) -> None:
        self.listeners.append((prefix, listener))

    async def deliver(self, type: str, data: dict[str, Any]) -> None:
        """An event from another subsystem, as the daemon hands it to listeners."""
        for prefix, listener in self.listeners:
            if type.startswith(prefix):
                result = listener(type, data)
                if asyncio.iscoroutine(result):
                    await result

    def publish_state(self, name: str, state: dict[str, Any] | None) -> None:
        self.states.setdefault(name, []).append(state)

    def publish_local(
        self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False
    ) -> None:
        pass

    def subscribe_local(self, topic_filter: str, handler: Any) -> None:
        pass

    def register_rpc(self, service: str, handlers: Mapping[str, Any]) -> None:
        self.rpc[service] = handlers
        if self.bus is not None:
            self.bus.serve(service, handlers)

    async def call_rpc(
        self, service: str, method: str, params: dict[str, Any], timeout_s: float = 5.0
    ) -> dict:
        raise CommandError(503, "no other processes in this test")

    def types(self) -> list[str]:
        return [t for t, _ in self.events]

    async def wait_event(self, type: str, within_s: float = 3.0) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            for t, d in self.events:
                if t == type:
                    return d
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {type} event; got {self.types()}")


def load(tmp_path: Path, extra: str, bus_port: int = 1883) -> tuple[Path, kconfig.KioskConfig]:
    path = write_config(
        tmp_path / "kiosk.toml", bus_port=bus_port, fleet_port=1883, data_dir=tmp_path / "data", extra=extra
    )
    return path, kconfig.load(path)


async def wait_health(subsystem: Peripherals, name: str, status: HealthStatus, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while subsystem.health()[name].status is not status:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} stayed {subsystem.health()[name]} (wanted {status})")
        await asyncio.sleep(0.02)


@pytest.fixture
async def peripherals(tmp_path: Path):
    _, cfg = load(tmp_path, DRIVERS)
    ctx = TestContext(cfg, tmp_path)
    subsystem = Peripherals(ctx)
    await subsystem.start()
    await wait_health(subsystem, "switcher", HealthStatus.OK)
    yield subsystem, ctx
    await subsystem.stop()


async def test_a_kiosk_without_driver_sections_has_no_peripherals(tmp_path: Path):
    _, cfg = load(tmp_path, "")
    ctx = TestContext(cfg, tmp_path)
    subsystem = Peripherals(ctx)
    await subsystem.start()
    try:
        assert subsystem.inventory() == [] and subsystem.commands() == {} and subsystem.capabilities() == []
        assert ctx.states["peripherals"][-1] == {"peripherals": [], "ok": True}
    finally:
        await subsystem.stop()


async def test_inventory_capabilities_and_commands_follow_the_config(peripherals):
    subsystem, _ = peripherals
    kinds = {item["name"]: item["kind"] for item in subsystem.inventory()}
    assert kinds == {"switcher": "switcher", "gpio": "gpio"}
    assert set(subsystem.commands()) == {"switcher.route", "gpio.set"}
    assert subsystem.capabilities() == ["gpio", "gpio.set", "sim", "switcher", "switcher.route"]
    assert subsystem.telemetry() == {"switcher": "ok", "gpio": "ok"}


async def test_switcher_route_command_routes_and_validates(peripherals):
    subsystem, ctx = peripherals
    route = subsystem.commands()["switcher.route"]
    reply = await route({"input": 2, "output": 1})
    assert reply["input"] == 2 and reply["attempts"] == 1
    assert ("switcher.routed", reply) in ctx.events
    for params, words in [
        ({}, "missing field 'input'"),
        ({"input": 9, "output": 1}, "this switcher has 8 inputs"),
        ({"input": 1, "output": "1"}, "output must be an integer"),
        ([1, 2], "params must be a JSON object"),
    ]:
        with pytest.raises(BadRequest) as info:
            await route(params)
        assert words in str(info.value) and info.value.status == 400


async def test_sim_button_and_presence_become_events(peripherals):
    subsystem, ctx = peripherals
    sim = ctx.rpc["sim"]
    assert await sim["button"]({"action": "press"}) == {"button": "help", "action": "press"}
    await ctx.wait_event("button.help.pressed")
    await sim["button"]({"action": "hold"})
    await ctx.wait_event("button.help.held")
    await sim["presence"]({})
    assert (await ctx.wait_event("presence.detected"))["screen_woken"] is True
    await sim["presence"]({"action": "cleared"})
    await ctx.wait_event("presence.cleared")
    with pytest.raises(BadRequest, match="sim.button: action must be one of 'hold' or 'press', got 'smash'"):
        await sim["button"]({"action": "smash"})


async def test_switcher_unplug_is_missing_published_and_shown_on_the_led_then_replug_recovers(peripherals):
    subsystem, ctx = peripherals
    sim = ctx.rpc["sim"]
    gpio = subsystem.devices["gpio"]
    await sim["unplug"]({"device": "switcher"})
    await wait_health(subsystem, "switcher", HealthStatus.MISSING)
    await asyncio.sleep(0.6)  # one health watch period
    published = ctx.states["peripherals"][-1]
    switcher = next(p for p in published["peripherals"] if p["name"] == "switcher")
    assert switcher["health"]["status"] == "missing" and published["ok"] is False
    assert "check the network cable" in switcher["health"]["reason"]
    assert gpio.led.state == "fault"
    with pytest.raises(CommandError) as info:
        await subsystem.commands()["switcher.route"]({"input": 1, "output": 1})
    assert info.value.status == 503
    await sim["replug"]({"device": "switcher"})
    await wait_health(subsystem, "switcher", HealthStatus.OK)
    await asyncio.sleep(0.6)
    assert ctx.states["peripherals"][-1]["ok"] is True and gpio.led.state == "ready"


async def test_status_led_blinks_busy_during_a_villagers_session(peripherals):
    subsystem, ctx = peripherals
    led = subsystem.devices["gpio"].led
    for _ in range(100):  # the LED follows health within one watch period after start
        if led.state == "ready":
            break
        await asyncio.sleep(0.02)
    assert led.state == "ready"
    await ctx.deliver("session.started", {"session_id": "s1"})
    assert led.state == "busy"
    await ctx.deliver("session.ended", {"session_id": "s1"})
    assert led.state == "ready"


async def test_sim_switcher_faults_reach_the_wire(peripherals):
    subsystem, ctx = peripherals
    sim = ctx.rpc["sim"]
    await sim["fault"]({"device": "switcher", "fault": "error", "code": "E22", "count": 1})
    assert (await subsystem.commands()["switcher.route"]({"input": 3, "output": 2}))["attempts"] == 2
    with pytest.raises(ValueError, match="unknown switcher fault 'gremlins'"):
        await sim["fault"]({"device": "switcher", "fault": "gremlins"})
    with pytest.raises(
        BadRequest,
        match="sim.fault: device must be one of 'card_reader', 'switcher' or 'printer', got 'toaster'",
    ):
        await sim["fault"]({"device": "toaster", "fault": "noise"})
    status = await sim["status"]({})
    assert status["switcher"]["plugged"] is True and status["switcher"]["ties"]["video"]["2"] == 3


async def test_sim_on_a_device_that_is_not_fitted_is_404(peripherals):
    _, ctx = peripherals
    with pytest.raises(CommandError) as info:
        await ctx.rpc["sim"]["card"]({"action": "remove"})
    assert info.value.status == 404 and "no card_reader is fitted" in str(info.value)


async def test_real_hardware_is_not_simulated(tmp_path: Path):
    _, cfg = load(
        tmp_path,
        '[drivers.switcher]\nbackend = "tcp"\nhost = "127.0.0.1"\nport = 9\nconnect_timeout_s = 0.2\n',
    )
    ctx = TestContext(cfg, tmp_path)
    subsystem = Peripherals(ctx)
    await subsystem.start()
    try:
        await wait_health(subsystem, "switcher", HealthStatus.MISSING)
        with pytest.raises(CommandError) as info:
            await ctx.rpc["sim"]["unplug"]({"device": "switcher"})
        assert info.value.status == 409
    finally:
        await subsystem.stop()


async def test_card_reader_sim_present_read_unplug_replug(tmp_path: Path):
    _, cfg = load(tmp_path, CARD_READER)
    ctx = TestContext(cfg, tmp_path)
    subsystem = Peripherals(ctx)
    await subsystem.start()
    try:
        await wait_health(subsystem, "card_reader", HealthStatus.OK)
        sim = ctx.rpc["sim"]
        await sim["card"]({"action": "present", "card": "zhang-san"})
        read = await ctx.wait_event("card.read", within_s=5)
        assert "*" in str(read)  # the number travels masked
        await sim["unplug"]({"device": "card_reader"})
        await wait_health(subsystem, "card_reader", HealthStatus.MISSING)
        await sim["replug"]({"device": "card_reader"})
        await wait_health(subsystem, "card_reader", HealthStatus.OK)
    finally:
        await subsystem.stop()


async def test_kiosk_sim_cli_drives_the_running_kiosk_over_the_local_bus(
    tmp_path: Path, bus_broker: Mosquitto
):
    from kiosk_cli import main as cli

    path, cfg = load(tmp_path, DRIVERS, bus_port=bus_broker.port)
    ctx = TestContext(cfg, tmp_path)
    ctx.bus = LocalBus("127.0.0.1", bus_broker.port, name="test-appliance")
    await ctx.bus.start()
    subsystem = Peripherals(ctx)
    await subsystem.start()
    try:
        await asyncio.sleep(0.2)  # let the bus subscription for the sim service settle
        rc = await asyncio.to_thread(cli.main, ["--config", str(path), "sim", "button", "press"])
        assert rc == 0
        await ctx.wait_event("button.help.pressed")
        rc = await asyncio.to_thread(
            cli.main, ["--config", str(path), "sim", "fault", "switcher", "gremlins"]
        )
        assert rc == 1
        rc = await asyncio.to_thread(cli.main, ["--config", str(path), "sim", "unplug", "switcher"])
        assert rc == 0
        await wait_health(subsystem, "switcher", HealthStatus.MISSING)
    finally:
        await subsystem.stop()
        await ctx.bus.stop()


def test_sim_subcommands_can_be_added_by_other_parts():
    from kiosk_cli import main as cli
    from sim import hardware_cli as drivers_cli

    seen: list[str] = []

    def hook(add):
        parser = add("test-bench", "a part added by another helper")
        parser.set_defaults(func=lambda args: seen.append("bench") or 0)

    drivers_cli.on_sim_register(hook)
    try:
        assert cli.main(["sim", "test-bench"]) == 0
        assert cli.main(["sim", "test-bench"]) == 0  # a second parser build gets it too
        assert seen == ["bench", "bench"]
    finally:
        drivers_cli._hooks.remove(hook)
