"""Errors of the receipt printer, hung under ``kiosk_core.errors.DriverError``.

The printer's own states (no paper, cover open, offline) are errors of a print job: the session shows
the villager where else to get the receipt, the platform sees the code in ``printer.failed`` and in
health. No message carries what was on the receipt.
"""

from __future__ import annotations

from kiosk_core.errors import DeviceMissing, DeviceTimeout, DriverError, ProtocolError

DEVICE = "printer"


class PrinterError(DriverError):
    """Root of every receipt printer error."""

    code = "printer.error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message, device=DEVICE, code=code)


class PrinterMissing(PrinterError, DeviceMissing):
    """The port cannot be opened or vanished (cable pulled, printer switched off)."""

    code = "printer.missing"


class PrinterOffline(PrinterError, DeviceTimeout):
    """The printer does not answer a real-time status request (DLE EOT) in time."""

    code = "printer.offline"


class PaperOut(PrinterError):
    """The roll is empty (paper-end sensor)."""

    code = "printer.no_paper"


class CoverOpen(PrinterError):
    """The paper cover is open."""

    code = "printer.cover_open"


class PrinterFault(PrinterError):
    """The printer reports an error of its own (cutter jam, head too hot, unrecoverable error)."""

    code = "printer.fault"


class StatusError(PrinterError, ProtocolError):
    """A status byte that is not a DLE EOT answer (its fixed bits are wrong): line noise or a wrong port."""

    code = "printer.status"


class ReceiptError(PrinterError, ValueError):
    """A receipt that cannot be printed as given (too long, a field of the wrong type)."""

    code = "printer.receipt"


class UsbUnavailable(PrinterError):
    """pyusb/libusb-1.0 is missing, or the configured interface has no usable endpoints."""

    code = "printer.usb_unavailable"
