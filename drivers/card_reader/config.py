"""``[drivers.card_reader]``: the resident ID card reader's backend, port and timing.

```toml
[drivers.card_reader]
backend = "serial"          # serial | sim | usb
port = "/dev/ttyUSB0"
baudrate = 115200
```

A reader that is not a serial port (SAM frames over USB bulk endpoints)::

```toml
[drivers.card_reader]
backend = "usb"
[drivers.card_reader.usb]
vendor_id = 0x0400
product_id = 0xc35a
```

Every field has a default, so ``[drivers.card_reader]`` alone is a working serial reader on
``/dev/ttyUSB0``. With ``backend = "sim"`` the driver runs the SAM emulator in-process on a pty and
talks to it through the same serial code; ``port`` is then ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from kiosk_core.config import Strict

STANDARD_BAUDRATES = (9600, 19200, 38400, 57600, 115200, 230400)


class CardReaderSimConfig(Strict):
    """Options of the in-process SAM emulator (``backend = "sim"``)."""

    #: sample card on the reader at start (see ``drivers/card_reader/samples.py``), none by default
    initial_card: str | None = None
    #: pace replies at the baud rate like a real UART (a pty alone is instantaneous)
    pace: bool = True
    #: how late a reply comes after ``inject("slow")``
    slow_reply_s: float = Field(default=1.5, ge=0, le=30)
    #: time the emulated SAM takes to talk to the card over RF, per find/select/read command
    sam_latency_s: float = Field(default=0.0, ge=0, le=5)
    #: seed of the fault generator (noise bytes), for reproducible demos
    seed: int = 0
    #: behave like readers that report "no card" once a card has been read, until it is put back
    halt_after_read: bool = False

    @model_validator(mode="after")
    def _known_card(self) -> CardReaderSimConfig:
        if self.initial_card is not None:
            from drivers.card_reader.samples import SAMPLES

            if self.initial_card not in SAMPLES:
                raise ValueError(
                    f"initial_card {self.initial_card!r} is not a sample card; "
                    f"choose one of {', '.join(SAMPLES)}"
                )
        return self


class CardReaderUsbConfig(Strict):
    """A reader that speaks SAM frames over USB bulk endpoints (``backend = "usb"``), found by its ids
    as ``lsusb`` shows them (``ID 0400:c35a``; TOML takes ``0x0400``)."""

    vendor_id: int = Field(ge=0, le=0xFFFF)
    product_id: int = Field(ge=0, le=0xFFFF)
    #: the interface holding the SAM endpoints
    interface: int = Field(default=0, ge=0, le=255)
    #: endpoint addresses; default: the interface's first IN (0x8N) and OUT bulk/interrupt endpoints
    endpoint_in: int | None = Field(default=None, ge=0x81, le=0x8F)
    endpoint_out: int | None = Field(default=None, ge=0x01, le=0x0F)


class CardReaderConfig(Strict):
    backend: Literal["serial", "sim", "usb"] = "serial"
    port: str = "/dev/ttyUSB0"
    baudrate: int = 115200
    #: how often the reader is asked whether a card is present
    poll_interval_s: float = Field(default=0.3, gt=0, le=5)
    #: how long the SAM may take to answer a short command (SAM status/id, find, select); public drivers
    #: wait 0.1-0.3 s, this keeps a margin for slow SAM modules. The reply's wire time is added.
    reply_timeout_s: float = Field(default=1.0, gt=0, le=10)
    #: the same for reading text + photo (30 01): public drivers wait 2 s
    read_timeout_s: float = Field(default=2.0, gt=0, le=20)
    #: the same for reading text + photo + fingerprint (30 10): public drivers wait 3 s
    fingerprint_read_timeout_s: float = Field(default=3.0, gt=0, le=20)
    #: the same for the additional address (30 03): public drivers wait 1.5 s
    address_timeout_s: float = Field(default=1.5, gt=0, le=20)
    #: find + select + read attempts for one presented card before ``card.error``
    read_attempts: int = Field(default=3, ge=1, le=10)
    #: consecutive "no card" answers before ``card.removed`` (debounces a card lifted for a moment)
    removal_misses: int = Field(default=2, ge=1, le=20)
    #: consecutive unanswered polls before the reader is reported missing and the port reopened
    missing_after: int = Field(default=3, ge=1, le=50)
    #: consecutive failing polls (noise, checksums) before health turns degraded
    degraded_after: int = Field(default=3, ge=1, le=50)
    #: reconnect backoff: base * 2^attempt, capped, with jitter
    reconnect_base_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_cap_s: float = Field(default=5.0, gt=0, le=600)
    #: read fingerprints too (command 30 10) - only if the session needs them
    fingerprint: bool = False
    #: also read the additional address record (command 30 03) after each card
    additional_address: bool = False
    #: WLT photo decoder "module:function"; default: an installed vendor plug-in, else none
    photo_decoder: str | None = None
    sim: CardReaderSimConfig = CardReaderSimConfig()
    #: the USB reader's ids and endpoints (``backend = "usb"``)
    usb: CardReaderUsbConfig | None = None

    def reply_timeouts(self) -> dict[str, float]:
        """Per-command SAM time, by ``SamLink`` budget name (``short``, ``read``, ``fingerprint``, ``address``)."""
        return {
            "short": self.reply_timeout_s,
            "read": self.read_timeout_s,
            "fingerprint": self.fingerprint_read_timeout_s,
            "address": self.address_timeout_s,
        }

    @model_validator(mode="after")
    def _check(self) -> CardReaderConfig:
        if self.baudrate not in STANDARD_BAUDRATES:
            raise ValueError(
                f"baudrate {self.baudrate} is not one a SAM reader uses; choose one of "
                f"{', '.join(map(str, STANDARD_BAUDRATES))} (115200 for most readers)"
            )
        if self.reconnect_cap_s < self.reconnect_base_s:
            raise ValueError("reconnect_cap_s must be at least reconnect_base_s")
        if self.backend == "usb" and self.usb is None:
            raise ValueError(
                'backend = "usb" needs [drivers.card_reader.usb] with vendor_id and product_id '
                "(lsusb shows them as ID vvvv:pppp)"
            )
        if self.backend == "serial" and not self.port:
            raise ValueError("port is empty: set the reader's serial device, e.g. /dev/ttyUSB0")
        return self
