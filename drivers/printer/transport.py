"""The thin transports of the receipt printer: open, write, read what is there, close.

``SerialTransport`` is a printer on a serial port (RS-232, a USB-serial adapter, CDC-ACM);
``UsbTransport`` a USB printer-class device whose bulk OUT endpoint takes ESC/POS and whose bulk IN
endpoint returns status bytes, through pyusb (imported lazily) behind ``UsbApi``. Blocking by design:
the driver runs them on its own worker thread. pyserial and pyusb errors end here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.printer.errors import PrinterMissing, PrinterOffline, UsbUnavailable
from drivers.serial_port import SerialPort
from drivers.serial_port import Transport as Transport  # the protocol the driver takes, re-exported

WRITE_TIMEOUT_S = 5.0


def _gone(port: str, exc: BaseException | str) -> PrinterMissing:
    """A printer that vanished (unplugged, switched off), on a serial port or USB."""
    return PrinterMissing(
        f"the receipt printer on {port} is gone ({exc}): check its cable and power, "
        f"and that [drivers.printer] port names it"
    )


class SerialTransport(SerialPort):
    """A receipt printer on a serial port, 8N1 at ``baudrate``, exclusive access."""

    noun = "receipt printer"
    config_key = "[drivers.printer] port"
    plug_hint = "check that the printer is plugged in and switched on"
    gone_hint = "check its cable and power"
    missing = PrinterMissing
    write_timeout_s = WRITE_TIMEOUT_S

    def __init__(self, port: str, baudrate: int = 9600) -> None:
        super().__init__(port, baudrate)

    def gone(self, exc: BaseException | str) -> Exception:
        return _gone(self.port, exc)

    def write_timed_out(self) -> Exception:
        return PrinterOffline(
            f"the receipt printer on {self.port} takes no data (flow control holds it): "
            "check that it is switched on and not jammed"
        )


# --- USB printer class ----------------------------------------------------------------------------

_ENDPOINT_IN = 0x80
_BULK = 2
USB_WRITE_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class UsbApi:
    """The pyusb calls made besides those on the device object: the adapter a test device stands
    behind. ``UsbApi.pyusb()`` is the real one."""

    find: Callable[..., Any]
    claim_interface: Callable[[Any, int], None]
    dispose_resources: Callable[[Any], None]
    errors: tuple[type[BaseException], type[BaseException]]  # (USBError, USBTimeoutError)

    @classmethod
    def pyusb(cls) -> UsbApi:
        try:
            import usb.core
            import usb.util
        except ImportError as exc:
            raise UsbUnavailable(
                f"USB receipt printers need pyusb ({exc}): reinstall the kiosk firmware "
                "(scripts/dev.sh setup), or use the printer's serial port"
            ) from None
        return cls(
            usb.core.find,
            usb.util.claim_interface,
            usb.util.dispose_resources,
            (usb.core.USBError, usb.core.USBTimeoutError),
        )


class UsbTransport:
    """ESC/POS to a bulk OUT endpoint, status bytes from a bulk IN endpoint of ``interface``."""

    def __init__(
        self,
        vendor_id: int,
        product_id: int,
        *,
        interface: int = 0,
        endpoint_in: int | None = None,
        endpoint_out: int | None = None,
        api: UsbApi | None = None,
    ) -> None:
        self.vendor_id, self.product_id, self.interface = vendor_id, product_id, interface
        self._want_in, self._want_out = endpoint_in, endpoint_out
        self._api = api
        self.port = f"usb:{vendor_id:04x}:{product_id:04x}"
        self._dev: Any = None
        self._ep_in = self._ep_out = 0
        self._packet = 64

    @property
    def is_open(self) -> bool:
        return self._dev is not None

    def _errors(self) -> tuple[type[BaseException], type[BaseException]]:
        return (self._api or UsbApi.pyusb()).errors

    def open(self) -> None:
        if self._dev is not None:
            return
        api = self._api = self._api or UsbApi.pyusb()
        usb_error = api.errors[0]
        try:
            dev = api.find(idVendor=self.vendor_id, idProduct=self.product_id)
        except usb_error as exc:
            raise PrinterMissing(f"cannot look for the USB receipt printer {self.port}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - pyusb's NoBackendError: libusb itself is missing
            raise UsbUnavailable(f"USB needs libusb-1.0 ({exc}): install libusb-1.0-0") from None
        if dev is None:
            raise PrinterMissing(
                f"no USB receipt printer {self.port}: check its cable and power (lsusb should list "
                f"ID {self.vendor_id:04x}:{self.product_id:04x})"
            )
        try:
            if dev.is_kernel_driver_active(self.interface):
                dev.detach_kernel_driver(self.interface)  # usblp holds printer-class devices
            dev.set_configuration()
            cfg = dev.get_active_configuration()
            intf = cfg[(self.interface, 0)]
            ins = [e.bEndpointAddress for e in intf if e.bEndpointAddress & _ENDPOINT_IN]
            outs = [e.bEndpointAddress for e in intf if not e.bEndpointAddress & _ENDPOINT_IN]
            packets = {e.bEndpointAddress: e.wMaxPacketSize for e in intf}
            api.claim_interface(dev, self.interface)
        except usb_error as exc:
            raise PrinterMissing(f"cannot claim the USB receipt printer {self.port}: {exc}") from None
        ep_in = self._want_in or (ins[0] if ins else 0)
        ep_out = self._want_out or (outs[0] if outs else 0)
        if not ep_out or ep_out not in packets or (ep_in and ep_in not in packets):
            api.dispose_resources(dev)
            raise UsbUnavailable(
                f"USB receipt printer {self.port} interface {self.interface} has no usable bulk OUT "
                f"endpoint (found in {[hex(e) for e in ins]}, out {[hex(e) for e in outs]})"
            )
        self._dev, self._ep_in, self._ep_out = dev, ep_in, ep_out
        self._packet = packets.get(ep_in, 64) if ep_in else 64

    def close(self) -> None:
        dev, self._dev = self._dev, None
        if dev is not None and self._api is not None:
            try:
                self._api.dispose_resources(dev)
            except Exception:  # noqa: BLE001 - a vanished device: nothing to release
                pass

    def _device(self) -> Any:
        if self._dev is None:
            raise PrinterMissing(f"the USB receipt printer {self.port} is not open")
        return self._dev

    def write(self, data: bytes) -> None:
        dev = self._device()
        usb_error, usb_timeout = self._errors()
        try:
            dev.write(self._ep_out, data, USB_WRITE_TIMEOUT_MS)
        except usb_timeout:
            raise PrinterOffline(
                f"the USB receipt printer {self.port} takes no data: is it jammed?"
            ) from None
        except usb_error as exc:
            raise _gone(self.port, exc) from None

    def read_some(self, timeout: float) -> bytes:
        dev = self._device()
        if not self._ep_in:
            time.sleep(timeout)  # a write-only printer: status is never answered
            return b""
        usb_error, usb_timeout = self._errors()
        try:
            return bytes(dev.read(self._ep_in, self._packet, max(1, int(timeout * 1000))))
        except usb_timeout:
            return b""
        except usb_error as exc:
            raise _gone(self.port, exc) from None

    def discard_input(self) -> None:
        if not self._ep_in:
            return
        for _ in range(16):
            if not self.read_some(0.001):
                return
