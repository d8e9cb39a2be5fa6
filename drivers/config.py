"""``[drivers.*]``: which peripherals exist, their backend and port. Absent means not fitted.

```toml
[drivers.card_reader]      # drivers/card_reader/config.py
backend = "serial"
[drivers.switcher]         # drivers/switcher/config.py
backend = "tcp"
protocol = "extron"
host = "192.168.1.50"
[drivers.camera.room_main] # drivers/camera/config.py (opened by kiosk-media, not the appliance)
[drivers.doccam]
[drivers.gpio]             # drivers/gpio/config.py
backend = "pi"
[drivers.printer]          # drivers/printer/config.py
backend = "serial"
port = "/dev/ttyUSB1"
```

A section that is present but whose device does not answer is reported ``missing`` in health; a
section that is absent is no device at all (no inventory entry, no commands, no capability).
"""

from __future__ import annotations

from pydantic import Field, field_validator

from drivers.camera.config import CameraConfig, DoccamConfig
from drivers.card_reader.config import CardReaderConfig
from drivers.gpio.config import GpioConfig
from drivers.printer.config import PrinterConfig
from drivers.switcher.config import AsciiProfile, SwitcherConfig
from kiosk_core.config import Strict

__all__ = [
    "AsciiProfile",
    "CameraConfig",
    "CardReaderConfig",
    "DoccamConfig",
    "DriversConfig",
    "GpioConfig",
    "PrinterConfig",
    "SwitcherConfig",
]

CAMERA_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")


class DriversConfig(Strict):
    card_reader: CardReaderConfig | None = None
    switcher: SwitcherConfig | None = None
    camera: dict[str, CameraConfig] = Field(
        default_factory=dict, description="room cameras by name ([drivers.camera.room_main])"
    )
    doccam: DoccamConfig | None = None
    gpio: GpioConfig | None = None
    printer: PrinterConfig | None = None

    @field_validator("camera")
    @classmethod
    def _camera_names(cls, v: dict[str, CameraConfig]) -> dict[str, CameraConfig]:
        for name in v:
            # The name becomes part of peripheral names ("camera.room_main") and local-bus topics.
            if not (1 <= len(name) <= 32 and set(name) <= CAMERA_NAME_CHARS and name[0].isalpha()):
                raise ValueError(f"camera name {name!r} must be 1-32 of a-z 0-9 _, starting with a letter")
        return v
