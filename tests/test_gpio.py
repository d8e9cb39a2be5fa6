"""GPIO parts on gpiozero's MockFactory: the help button, presence sensor, status LED, relays, buzzer.

The mock pins are gpiozero's own; the tests drive them the way a finger or a sensor would and read the
output pins' levels, so a wrong pin number, pull or polarity fails here.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.gpio.config import GpioConfig
from drivers.gpio.driver import Gpio, NotSimulated
from drivers.gpio.status_led import FAULT_PATTERN, LedState
from kiosk_core.errors import BadRequest, CommandError
from kiosk_core.health import HealthStatus

pytestmark = pytest.mark.timeout(20)

HOLD_S = 0.3  # a short hold time keeps the tests quick; the default is 3 s


class Collector:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    async def __call__(self, type: str, data: dict) -> None:
        self.events.append((type, data))

    def types(self) -> list[str]:
        return [t for t, _ in self.events]

    async def wait_for(self, type: str, within_s: float = 2.0) -> dict:
        deadline = time.monotonic() + within_s
        while True:
            for t, d in self.events:
                if t == type:
                    return d
            if time.monotonic() > deadline:
                raise AssertionError(f"no {type} event; got {self.types()}")
            await asyncio.sleep(0.01)


@pytest.fixture
async def kiosk_gpio():
    factory = MockFactory()
    gpio = Gpio(GpioConfig(backend="mock", hold_time_s=HOLD_S), pin_factory=factory)
    sink = Collector()
    await gpio.start(sink)
    yield gpio, factory, sink
    await gpio.stop()
    factory.close()


def level(factory: MockFactory, pin: int) -> bool:
    return bool(factory.pin(pin).state)


async def test_starts_ok_with_every_part_named(kiosk_gpio):
    gpio, factory, _ = kiosk_gpio
    health = gpio.health()
    assert health.status is HealthStatus.OK
    for part in (
        "help button GPIO17",
        "LED GPIO27",
        "presence GPIO22",
        "buzzer GPIO25",
        "screen_power GPIO23",
    ):
        assert part in health.reason
    assert gpio.inventory()["pins"]["relay.room_light"] == 24
    assert level(factory, 27) is True  # status LED steady: ready


async def test_short_press_asks_for_staff_and_beeps(kiosk_gpio):
    gpio, factory, sink = kiosk_gpio
    await gpio.press_help(0.05)
    event = await sink.wait_for("button.help.pressed")
    assert event["meaning"] == "asks for staff" and 0.04 <= event["duration_s"] < HOLD_S
    assert "button.help.held" not in sink.types()
    states = [s.state for s in factory.pin(25).states]
    assert True in states  # the buzzer sounded


async def test_holding_enters_technician_mode_without_a_press(kiosk_gpio):
    gpio, _, sink = kiosk_gpio
    await gpio.hold_help()
    event = await sink.wait_for("button.help.held")
    assert event["meaning"] == "technician mode"
    await asyncio.sleep(0.05)
    assert "button.help.pressed" not in sink.types()


async def test_a_real_finger_on_the_mock_pin_works_too(kiosk_gpio):
    _, factory, sink = kiosk_gpio
    pin = factory.pin(17)
    pin.drive_low()
    await asyncio.sleep(0.05)
    pin.drive_high()
    await sink.wait_for("button.help.pressed")


async def test_presence_wakes_the_screen_and_clears(kiosk_gpio):
    gpio, factory, sink = kiosk_gpio
    assert level(factory, 23) is False
    gpio.set_presence(True)
    detected = await sink.wait_for("presence.detected")
    assert detected == {"screen_woken": True, "relay": "screen_power"}
    assert level(factory, 23) is True
    gpio.set_presence(False)
    cleared = await sink.wait_for("presence.cleared")
    assert cleared["present_s"] >= 0


async def test_gpio_set_switches_relays_and_reads_them_back(kiosk_gpio):
    gpio, factory, _ = kiosk_gpio
    handler = gpio.commands()["gpio.set"]
    assert await handler({"output": "room_light", "on": True}) == {"output": "room_light", "on": True}
    assert level(factory, 24) is True
    assert await handler({"output": "room_light", "on": False}) == {"output": "room_light", "on": False}
    assert level(factory, 24) is False
    await handler({"output": "buzzer", "on": True})
    assert level(factory, 25) is True


@pytest.mark.parametrize(
    "params,words",
    [
        (
            {"output": "kettle", "on": True},
            "output must be one of buzzer, room_light, screen_power, status_led",
        ),
        ({"output": "room_light"}, "missing field 'on'"),
        ({"output": "room_light", "on": "yes"}, "on must be true or false"),
        ({"output": "room_light", "on": 1}, "on must be true or false"),
        ({"output": ["room_light"], "on": True}, "output must be a string"),
        ({"output": "room_light", "on": True, "pin": 4}, "unknown field(s) 'pin'"),
    ],
)
async def test_gpio_set_answers_400_naming_the_problem(kiosk_gpio, params, words):
    gpio, factory, _ = kiosk_gpio
    with pytest.raises(BadRequest) as info:
        await gpio.commands()["gpio.set"](params)
    assert info.value.status == 400 and words in str(info.value)
    assert level(factory, 24) is False  # nothing switched


async def test_status_led_patterns_are_told_apart(kiosk_gpio):
    gpio, factory, _ = kiosk_gpio
    pin = factory.pin(27)
    gpio.show_status(LedState.BUSY)
    pin.clear_states()
    await asyncio.sleep(1.1)
    busy = [s for s in pin.states if s.timestamp > 0.3]
    assert len(busy) >= 1 and all(0.4 < s.timestamp < 0.65 for s in busy)  # slow, even blink
    gpio.show_status(LedState.FAULT)
    pin.clear_states()
    await asyncio.sleep(1.5)
    highs = sum(1 for s in pin.states if s.state)
    assert highs >= FAULT_PATTERN.count(1)  # at least one double flash
    assert any(s.timestamp > 0.5 for s in pin.states)  # ...followed by a pause
    gpio.show_status(LedState.READY)
    await asyncio.sleep(0.05)
    assert level(factory, 27) is True
    gpio.show_status("off")
    assert level(factory, 27) is False


async def test_parts_not_fitted_are_absent_and_cannot_be_simulated():
    factory = MockFactory()
    gpio = Gpio(
        GpioConfig(backend="mock", buzzer=-1, presence=-1, relays={}, wake_relay=""), pin_factory=factory
    )
    await gpio.start(Collector())
    try:
        assert gpio.outputs == ["status_led"]
        with pytest.raises(NotSimulated, match="no presence sensor is fitted"):
            gpio.set_presence(True)
    finally:
        await gpio.stop()
        factory.close()


async def test_the_pi_backend_on_a_pc_is_missing_with_advice(monkeypatch):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "lgpio")
    gpio = Gpio(GpioConfig(backend="pi"))
    await gpio.start(Collector())
    health = gpio.health()
    assert health.status is HealthStatus.MISSING
    assert "help button on GPIO17" in health.reason and 'backend = "sim"' in health.reason
    with pytest.raises(NotSimulated, match="real hardware"):
        await gpio.press_help()
    with pytest.raises(CommandError) as info:
        await gpio.commands()["gpio.set"]({"output": "room_light", "on": True})
    assert info.value.status == 503 and "GPIO17" in str(info.value)
    await gpio.stop()


def test_config_rejects_shared_pins_and_unknown_wake_relay():
    with pytest.raises(ValidationError, match="both use GPIO17"):
        GpioConfig(presence=17)
    with pytest.raises(ValidationError, match="wake_relay = 'tv'"):
        GpioConfig(wake_relay="tv")
    with pytest.raises(ValidationError, match="BCM GPIO number 2-27"):
        GpioConfig(buzzer=40)
    with pytest.raises(ValidationError, match="lower_snake_case"):
        GpioConfig(relays={"Room Light": 5})


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def idle_gpio():
    """One set of mock parts for all fuzz examples (building them per example costs ~0.1 s)."""
    factory = MockFactory()
    gpio = Gpio(GpioConfig(backend="mock"), pin_factory=factory)
    asyncio.run(gpio.start(Collector()))
    yield gpio
    asyncio.run(gpio.stop())
    factory.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    params=st.one_of(
        st.dictionaries(
            st.sampled_from(["output", "on", "pin"]),
            st.one_of(JSONISH, st.sampled_from(["room_light", "buzzer", "status_led"])),
            max_size=3,
        ),
        JSONISH,
    )
)
def test_gpio_set_answers_any_params_with_a_result_or_400(idle_gpio, params):
    try:
        reply = asyncio.run(idle_gpio.commands()["gpio.set"](params))
    except BadRequest as exc:
        assert str(exc).startswith("gpio.set: ")
    else:
        assert reply == {"output": params["output"], "on": params["on"]}
