"""``Gpio``: the kiosk's GPIO parts as one peripheral, on gpiozero with the pin factory chosen by config.

- help button: a short press emits ``button.help.pressed`` (the villager asks for staff); holding it
  ``hold_time_s`` (3 s) emits ``button.help.held`` (technician mode) and no press;
- presence sensor: ``presence.detected`` (and the wake relay, usually screen power, goes on) /
  ``presence.cleared``;
- status LED (``StatusLed``), relays and buzzer: ``gpio.set {output, on}``.

gpiozero calls back from its own threads; every callback is handed to the event loop with
``call_soon_threadsafe`` before anything else happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from drivers.base import EventSink, Peripheral
from drivers.gpio.config import GpioConfig
from drivers.gpio.status_led import LedState, StatusLed
from kiosk_core.commands import CommandSpec, Params, by_name, shown
from kiosk_core.errors import BadRequest, CommandError, DeviceMissing, DriverError, KioskError
from kiosk_core.health import Health, HealthStatus
from kiosk_core.tasks import TaskSet

log = logging.getLogger("kiosk.drivers.gpio")


class GpioSetParams(Params):
    output: str = Field(max_length=64)
    on: bool


class GpioError(DriverError):
    code = "gpio.error"


class GpioUnavailable(GpioError, DeviceMissing):
    """No usable pin factory (not a Pi, lgpio missing) or a pin that cannot be claimed."""

    code = "gpio.unavailable"


class NotSimulated(GpioError, RuntimeError):
    code = "gpio.not_simulated"


def make_pin_factory(backend: str, config: GpioConfig | None = None) -> Any:
    """The gpiozero pin factory for a backend: MockFactory for mock/sim, a ``WirePinFactory`` for wire
    (its ``wire_file`` and ``wire_pins`` from ``config``), gpiozero's default otherwise (``None``:
    gpiozero picks lgpio on a Pi, or what ``GPIOZERO_PIN_FACTORY`` says)."""
    if backend == "wire":
        from drivers.gpio.wire_pins import WireBoard, WireBoardError, WirePinFactory

        if config is None or not config.wire_file:
            raise GpioUnavailable('backend "wire" needs [drivers.gpio] wire_file')
        try:
            board = WireBoard.open(config.wire_file)
            return WirePinFactory(board, {int(k): v for k, v in config.wire_pins.items()})
        except (OSError, WireBoardError) as exc:
            raise GpioUnavailable(f"wire file {config.wire_file}: {exc}") from exc
    if backend in ("mock", "sim"):
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    return None


class Gpio(Peripheral):
    kind = "gpio"

    def __init__(self, config: GpioConfig, *, name: str = "gpio", pin_factory: Any = None) -> None:
        super().__init__(name, model="gpiozero", backend=config.backend)
        self.config = config
        self._factory = pin_factory
        self._emit: EventSink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._health = Health(HealthStatus.MISSING, "not started")
        self._tasks = TaskSet("gpio", log)
        self.button: Any = None
        self.presence: Any = None
        self.led: StatusLed | None = None
        self.buzzer: Any = None
        self.relays: dict[str, Any] = {}
        self._pressed_at: float | None = None
        self._held = False
        self._present_since: float | None = None

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self, emit: EventSink) -> None:
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        if self.button is not None or self.led is not None or self.relays:
            return
        try:
            self._open()
        except GpioError as exc:
            self._close_devices()
            self._health = Health(HealthStatus.MISSING, exc.message)
            log.warning("%s missing: %s", self.name, exc.message)
            return
        self._health = Health(HealthStatus.OK, self._describe())
        if self.led is not None:
            self.led.show(LedState.READY)

    def _open(self) -> None:
        from gpiozero import LED, Button, Buzzer, DigitalInputDevice, OutputDevice
        from gpiozero.exc import GPIOZeroError

        cfg = self.config
        if self._factory is None:
            self._factory = make_pin_factory(cfg.backend, cfg)
        kw = {"pin_factory": self._factory}
        part = "pin factory"
        try:
            if cfg.help_button is not None:
                part = f"help button on GPIO{cfg.help_button}"
                self.button = Button(
                    cfg.help_button,
                    pull_up=cfg.button_pull_up,
                    bounce_time=cfg.bounce_time_s,
                    hold_time=cfg.hold_time_s,
                    **kw,
                )
                self.button.when_pressed = lambda: self._from_thread(self._on_press)
                self.button.when_held = lambda: self._from_thread(self._on_held)
                self.button.when_released = lambda: self._from_thread(self._on_release)
            if cfg.presence is not None:
                part = f"presence sensor on GPIO{cfg.presence}"
                self.presence = DigitalInputDevice(
                    cfg.presence, pull_up=not cfg.presence_active_high, bounce_time=cfg.bounce_time_s, **kw
                )
                self.presence.when_activated = lambda: self._from_thread(self._on_presence, True)
                self.presence.when_deactivated = lambda: self._from_thread(self._on_presence, False)
            if cfg.status_led is not None:
                part = f"status LED on GPIO{cfg.status_led}"
                self.led = StatusLed(LED(cfg.status_led, **kw))
            if cfg.buzzer is not None:
                part = f"buzzer on GPIO{cfg.buzzer}"
                self.buzzer = Buzzer(cfg.buzzer, **kw)
            for name, pin in cfg.relays.items():
                part = f"relay {name} on GPIO{pin}"
                self.relays[name] = OutputDevice(
                    pin, active_high=cfg.relay_active_high, initial_value=False, **kw
                )
        except (GPIOZeroError, OSError, ImportError, RuntimeError) as exc:
            # On a PC there is no GPIO chip; on a Pi, lgpio may be missing or a pin already taken.
            raise GpioUnavailable(
                f"cannot open the {part}: {exc}; on a Raspberry Pi install lgpio and check "
                "that no other program uses the pin; elsewhere set [drivers.gpio] backend = "
                '"sim"',
                device=self.name,
            ) from None

    def _describe(self) -> str:
        cfg = self.config
        parts = [
            f"{label} GPIO{pin}"
            for label, pin in (
                ("help button", cfg.help_button),
                ("LED", cfg.status_led),
                ("presence", cfg.presence),
                ("buzzer", cfg.buzzer),
            )
            if pin is not None
        ]
        parts += [f"{name} GPIO{pin}" for name, pin in cfg.relays.items()]
        kind = "mock pins" if cfg.backend in ("mock", "sim") else "pins"
        return f"{', '.join(parts) or 'nothing fitted'} ({kind})"

    def _close_devices(self) -> None:
        devices = [self.button, self.presence, self.buzzer, *self.relays.values()]
        if self.led is not None:
            with contextlib.suppress(Exception):
                self.led.led.source = None
            devices.append(self.led.led)
        for dev in devices:
            if dev is not None:
                with contextlib.suppress(Exception):
                    dev.close()
        self.button = self.presence = self.buzzer = self.led = None
        self.relays = {}

    async def stop(self) -> None:
        self._close_devices()
        await self._tasks.close()
        self._health = Health(HealthStatus.MISSING, "stopped")

    def health(self) -> Health:
        return self._health

    def inventory(self) -> dict[str, Any]:
        inv = super().inventory()
        cfg = self.config
        inv["pins"] = {
            "help_button": cfg.help_button,
            "status_led": cfg.status_led,
            "presence": cfg.presence,
            "buzzer": cfg.buzzer,
            **{f"relay.{n}": p for n, p in cfg.relays.items()},
        }
        return inv

    # --- events from gpiozero threads --------------------------------------------------------------

    def _from_thread(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _post(self, type: str, data: dict[str, Any]) -> None:
        if self._emit is None:
            return
        self._tasks.spawn(self._emit_safely(type, data), name=f"gpio-{type}")

    async def _emit_safely(self, type: str, data: dict[str, Any]) -> None:
        assert self._emit is not None
        try:
            await self._emit(type, data)
        except KioskError as exc:
            log.error("%s: could not record %s: %s", self.name, type, exc)

    def _on_press(self) -> None:
        self._pressed_at = time.monotonic()
        self._held = False

    def _on_held(self) -> None:
        self._held = True
        self._post("button.help.held", {"meaning": "technician mode", "hold_time_s": self.config.hold_time_s})

    def _on_release(self) -> None:
        started, self._pressed_at = self._pressed_at, None
        if self._held or started is None:
            self._held = False
            return
        self._post(
            "button.help.pressed",
            {"meaning": "asks for staff", "duration_s": round(time.monotonic() - started, 3)},
        )
        if self.buzzer is not None:
            self.buzzer.beep(on_time=0.1, off_time=0.1, n=1, background=True)  # the villager hears it worked

    def _on_presence(self, present: bool) -> None:
        if present:
            self._present_since = time.monotonic()
            woken = None
            relay = self.relays.get(self.config.wake_relay or "")
            if relay is not None:
                woken = self.config.wake_relay
                relay.on()
            self._post("presence.detected", {"screen_woken": woken is not None, "relay": woken})
        else:
            since, self._present_since = self._present_since, None
            self._post(
                "presence.cleared", {"present_s": round(time.monotonic() - since, 3) if since else None}
            )

    # --- outputs -----------------------------------------------------------------------------------

    @property
    def outputs(self) -> list[str]:
        names = list(self.relays)
        if self.buzzer is not None:
            names.append("buzzer")
        if self.led is not None:
            names.append("status_led")
        return names

    def beep(self, times: int = 2) -> bool:
        """Beep ``times`` short beeps in the background (a reminder); False when no buzzer is fitted."""
        if self.buzzer is None:
            return False
        self.buzzer.beep(on_time=0.15, off_time=0.15, n=max(1, min(times, 5)), background=True)
        return True

    def show_status(self, state: LedState | str) -> None:
        """Set the status LED (ready / busy / fault / off); a kiosk without one ignores it."""
        if self.led is not None:
            self.led.show(LedState(state))

    def set_output(self, output: str, on: bool) -> bool:
        """Switch a relay, the buzzer or the status LED (on = ready); returns the state read back."""
        if output == "status_led" and self.led is not None:
            self.led.show(LedState.READY if on else LedState.OFF)
            return self.led.state is LedState.READY
        device = self.buzzer if output == "buzzer" else self.relays.get(output)
        if device is None:
            raise BadRequest(
                f"gpio.set: no output {output!r}; fitted: {', '.join(self.outputs) or 'none'}", field="output"
            )
        device.on() if on else device.off()
        return bool(device.is_active)

    def commands(self) -> Mapping[str, CommandSpec]:
        return by_name(
            CommandSpec(
                name="gpio.set",
                summary="switch a fitted relay or the buzzer on or off; answers the level read back",
                params=GpioSetParams,
                handler=self.set_command,
                personal=False,
                process="appliance",
            )
        )

    async def set_command(self, params: GpioSetParams) -> dict[str, Any]:
        if self._health.status is HealthStatus.MISSING:
            raise CommandError(503, f"gpio.set: {self._health.reason}")
        # Which outputs exist is this kiosk's wiring, not the model's.
        output = params.output
        if output not in self.outputs:
            raise BadRequest(
                f"gpio.set: output must be one of {', '.join(sorted(self.outputs))}, got {shown(output)}",
                field="output",
            )
        return {"output": output, "on": self.set_output(output, params.on)}

    # --- simulation (mock and sim backends only) ---------------------------------------------------

    def _mock_pin(self, device: Any, what: str) -> Any:
        if self.config.backend not in ("mock", "sim"):
            raise NotSimulated(
                f'the {what} is real hardware (backend = "{self.config.backend}"): it cannot be simulated',
                device=self.name,
            )
        if device is None:
            raise NotSimulated(f"no {what} is fitted ([drivers.gpio] has no pin for it)", device=self.name)
        return device.pin

    async def press_help(self, duration_s: float = 0.2) -> None:
        """Press and release the help button, as a finger would."""
        pin = self._mock_pin(self.button, "help button")
        down, up = (
            (pin.drive_low, pin.drive_high) if self.config.button_pull_up else (pin.drive_high, pin.drive_low)
        )
        down()
        await asyncio.sleep(duration_s)
        up()
        await asyncio.sleep(0)  # let the release callback reach the loop

    async def hold_help(self) -> None:
        """Hold the help button past the hold time, then let go."""
        await self.press_help(self.config.hold_time_s + 0.3)

    def set_presence(self, present: bool) -> None:
        pin = self._mock_pin(self.presence, "presence sensor")
        active, idle = (
            (pin.drive_high, pin.drive_low)
            if self.config.presence_active_high
            else (pin.drive_low, pin.drive_high)
        )
        active() if present else idle()
