"""``[drivers.gpio]``: the help button, status LED, presence sensor, relays and buzzer on the Pi header.

Pins are BCM numbers (GPIO17 is 17, header pin 11). TOML has no null, so ``-1`` says a part is not
fitted (``buzzer = -1``); a relay that is not fitted is simply not listed.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kiosk_core.config import Strict

BCM_PINS = range(2, 28)  # GPIO2..GPIO27 on the 40-pin header (0/1 are the HAT EEPROM bus)
OUTPUT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
RESERVED_OUTPUTS = ("buzzer", "status_led")


class GpioConfig(Strict):
    backend: Literal["pi", "mock", "sim", "wire"] = Field(
        "pi",
        description="pi: gpiozero's default pin factory (lgpio on a Pi); mock: gpiozero's MockFactory, "
        "pins driven by tests; sim: MockFactory driven by `kiosk sim`; wire: the pins in `wire_pins` "
        "are lines of the shared-memory `wire_file` (the failover pair's simulated wires), the rest mock",
    )
    wire_file: str | None = Field(
        None, description='backend "wire": the WireBoard file (drivers/gpio/wire_pins.py), e.g. /dev/shm/room'
    )
    wire_pins: dict[str, str] = Field(
        default_factory=dict,
        description='backend "wire": BCM number (a string key) -> line name, e.g. { "5" = "hb.main" }',
    )
    help_button: int | None = Field(17, description="BCM pin of the help button (to ground, pull-up on)")
    status_led: int | None = 27
    presence: int | None = Field(22, description="BCM pin of the presence (PIR/radar) sensor output")
    buzzer: int | None = 25
    relays: dict[str, int] = Field(
        default_factory=lambda: {"screen_power": 23, "room_light": 24},
        description="name -> BCM pin of each relay",
    )
    hold_time_s: float = Field(
        3.0, ge=0.1, le=30, description="holding help this long enters technician mode"
    )
    bounce_time_s: float | None = Field(None, gt=0, le=1, description="ignore contact bounce this long")
    button_pull_up: bool = True
    presence_active_high: bool = True
    relay_active_high: bool = True
    wake_relay: str | None = Field(
        "screen_power", description='relay switched on when presence is detected ("" for none)'
    )

    @field_validator("wake_relay")
    @classmethod
    def _no_wake(cls, v: str | None) -> str | None:
        return v or None

    @field_validator("help_button", "status_led", "presence", "buzzer")
    @classmethod
    def _pin(cls, v: int | None) -> int | None:
        if v == -1:
            return None
        if v is not None and v not in BCM_PINS:
            raise ValueError("must be a BCM GPIO number 2-27 (or -1: not fitted)")
        return v

    @field_validator("relays")
    @classmethod
    def _relays(cls, v: dict[str, int]) -> dict[str, int]:
        for name, pin in v.items():
            if not OUTPUT_NAME.match(name) or name in RESERVED_OUTPUTS:
                raise ValueError(f"relay name {name!r} must be lower_snake_case (and not buzzer/status_led)")
            if pin not in BCM_PINS:
                raise ValueError(f"relay {name}: pin {pin} must be a BCM GPIO number 2-27")
        return v

    @field_validator("wire_pins")
    @classmethod
    def _wire_pins(cls, v: dict[str, str]) -> dict[str, str]:
        for key, line in v.items():
            if not key.isdigit() or int(key) not in BCM_PINS:
                raise ValueError(f"wire_pins key {key!r} must be a BCM GPIO number 2-27 (as a string)")
            if not line or len(line) > 64:
                raise ValueError(f"wire_pins[{key!r}] must name a line (1-64 characters)")
        return v

    @model_validator(mode="after")
    def _wire(self) -> GpioConfig:
        if self.backend == "wire" and not self.wire_file:
            raise ValueError('backend "wire" needs wire_file (the WireBoard file)')
        if self.backend != "wire" and (self.wire_file or self.wire_pins):
            raise ValueError('wire_file and wire_pins belong to backend "wire"')
        return self

    @model_validator(mode="after")
    def _distinct(self) -> GpioConfig:
        used: dict[int, str] = {}
        named = [
            ("help_button", self.help_button),
            ("status_led", self.status_led),
            ("presence", self.presence),
            ("buzzer", self.buzzer),
        ] + [(f"relays.{n}", p) for n, p in self.relays.items()]
        for name, pin in named:
            if pin is None:
                continue
            if pin in used:
                raise ValueError(f"{name} and {used[pin]} both use GPIO{pin}")
            used[pin] = name
        if self.wake_relay is not None and self.wake_relay not in self.relays:
            raise ValueError(
                f"wake_relay = {self.wake_relay!r} is not one of the relays "
                f"({', '.join(self.relays) or 'none configured'})"
            )
        return self
