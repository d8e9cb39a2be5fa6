"""``[drivers.printer]``: the thermal receipt printer's backend, port, paper and timing.

```toml
[drivers.printer]
backend = "serial"          # serial | usb | sim
port = "/dev/ttyUSB1"
baudrate = 9600
paper_dots = 384            # 58 mm roll: 384 dots; 80 mm roll: 576
```

A USB printer that is not a serial port (printer class, bulk endpoints)::

```toml
[drivers.printer]
backend = "usb"
[drivers.printer.usb]
vendor_id = 0x0416
product_id = 0x5011
```

With ``backend = "sim"`` the driver runs the printer simulator in-process on a pty and talks to it
through the same serial code; each receipt it prints is written as a PNG under ``sim.out_dir``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kiosk_core.config import Strict

PRINTER_BAUDRATES = (9600, 19200, 38400, 57600, 115200)
SIM_FAULTS = ("no_paper", "near_end", "cover_open", "offline")


class PrinterSimConfig(Strict):
    """Options of the in-process printer simulator (``backend = "sim"``)."""

    #: where rendered receipts go (PNG); default: a folder under the kiosk's data_dir
    out_dir: str | None = None
    #: a fault present from the start (no_paper, near_end, cover_open, offline)
    initial_fault: Literal["no_paper", "near_end", "cover_open", "offline"] | None = None


class PrinterUsbConfig(Strict):
    """A USB printer-class device found by its ids as ``lsusb`` shows them (``ID 0416:5011``)."""

    vendor_id: int = Field(ge=0, le=0xFFFF)
    product_id: int = Field(ge=0, le=0xFFFF)
    interface: int = Field(default=0, ge=0, le=255)
    #: endpoint addresses; default: the interface's first bulk IN (0x8N) and OUT endpoints
    endpoint_in: int | None = Field(default=None, ge=0x81, le=0x8F)
    endpoint_out: int | None = Field(default=None, ge=0x01, le=0x0F)


class PrinterConfig(Strict):
    backend: Literal["serial", "usb", "sim"] = "serial"
    port: str = "/dev/ttyUSB1"
    baudrate: int = 9600
    #: printable width in dots: 384 on a 58 mm roll, 576 on an 80 mm roll
    paper_dots: Literal[384, 576] = 384
    #: how long the printer may take to answer one real-time status request (DLE EOT n)
    status_timeout_s: float = Field(default=0.5, gt=0, le=5)
    #: a whole receipt, from the first status check to the last: past this the job is given up
    print_timeout_s: float = Field(default=10.0, gt=0, le=60)
    #: how often the paper and cover are checked between receipts (health)
    poll_interval_s: float = Field(default=5.0, gt=0, le=300)
    #: QR module size in dots (GS ( k function 167): 1..16
    qr_module_dots: int = Field(default=6, ge=1, le=16)
    sim: PrinterSimConfig = PrinterSimConfig()
    usb: PrinterUsbConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> PrinterConfig:
        if self.baudrate not in PRINTER_BAUDRATES:
            raise ValueError(
                f"baudrate {self.baudrate} is not one a receipt printer uses; choose one of "
                f"{', '.join(map(str, PRINTER_BAUDRATES))} (the printer's self-test page shows it)"
            )
        if self.backend == "usb" and self.usb is None:
            raise ValueError(
                'backend = "usb" needs [drivers.printer.usb] with vendor_id and product_id '
                "(lsusb shows them as ID vvvv:pppp)"
            )
        if self.backend == "serial" and not self.port:
            raise ValueError("port is empty: set the printer's serial device, e.g. /dev/ttyUSB1")
        return self
