"""The thin transports: open, write, read what is there, close. pyserial and pyusb errors end here.

``SerialTransport`` is a reader on a serial port (USB-serial adapter, CDC-ACM, RS-232); ``UsbTransport``
one that speaks the same SAM frames over USB bulk endpoints through pyusb (imported lazily: a serial
kiosk does not need libusb). Blocking by design; the driver runs them in its own worker thread.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drivers.card_reader.errors import ReaderMissing, UsbUnavailable
from drivers.serial_port import SerialPort
from drivers.serial_port import Transport as Transport  # the protocol the driver takes, re-exported


class SerialTransport(SerialPort):
    """A card reader on a serial port, 8N1 at ``baudrate``, exclusive access."""

    noun = "card reader"
    config_key = "[drivers.card_reader] port"
    plug_hint = "check that the reader is plugged in (USB)"
    gone_hint = "check that its USB cable is plugged in"
    missing = ReaderMissing

    def __init__(self, port: str, baudrate: int = 115200) -> None:
        super().__init__(port, baudrate)


# --- USB: SAM frames over bulk (or interrupt) endpoints -------------------------------------------

USB_WRITE_TIMEOUT_MS = 1000
_ENDPOINT_IN = 0x80
_TRANSFER_TYPES = {2: "bulk", 3: "interrupt"}  # bmAttributes & 0x03
_DISCARD_READS = 64  # stale packets drained at most before a request


@dataclass(frozen=True)
class UsbApi:
    """The pyusb calls the USB transport makes besides those on the device itself: the thin adapter a
    simulated device stands behind. ``UsbApi.pyusb()`` is the real one."""

    find: Callable[..., Any]
    claim_interface: Callable[[Any, int], None]
    dispose_resources: Callable[[Any], None]

    @classmethod
    def pyusb(cls) -> UsbApi:
        try:
            import usb.core
            import usb.util
        except ImportError as exc:
            raise UsbUnavailable(
                f"USB card readers need pyusb ({exc}): reinstall the kiosk firmware "
                f"(scripts/dev.sh setup), or use a serial reader"
            ) from None
        return cls(usb.core.find, usb.util.claim_interface, usb.util.dispose_resources)


def _usb_errors() -> tuple[type[BaseException], type[BaseException], type[BaseException]]:
    """(USBError, USBTimeoutError, NoBackendError) of pyusb."""
    try:
        import usb.core
    except ImportError as exc:
        raise UsbUnavailable(f"USB card readers need pyusb ({exc}): reinstall the kiosk firmware") from None
    return usb.core.USBError, usb.core.USBTimeoutError, usb.core.NoBackendError


class UsbTransport:
    """A SAM reader on USB that is not a serial port (SAM_V USB mode, many desktop readers): the same
    frames written to a bulk OUT endpoint and read from a bulk (or interrupt) IN endpoint, one packet
    per read so a timeout never drops part of a reply. Endpoints default to the first IN and OUT bulk
    or interrupt endpoints of ``interface``. All pyusb/libusb errors end here."""

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
        self.vendor_id = vendor_id
        self.product_id = product_id
        self.interface = interface
        self._endpoint_in = endpoint_in
        self._endpoint_out = endpoint_out
        self._api = api
        self.port = f"usb:{vendor_id:04x}:{product_id:04x}"
        self._dev: Any = None
        self._ep_in = self._ep_out = 0
        self._packet = 64

    @property
    def is_open(self) -> bool:
        return self._dev is not None

    def open(self) -> None:
        if self._dev is not None:
            return
        api = self._api or UsbApi.pyusb()
        usb_error, _, no_backend = _usb_errors()
        try:
            dev = api.find(idVendor=self.vendor_id, idProduct=self.product_id)
        except no_backend:
            raise UsbUnavailable(
                f"cannot look for the USB card reader {self.port}: libusb-1.0 is not installed "
                f"(apt-get install libusb-1.0-0)"
            ) from None
        except (usb_error, OSError) as exc:
            raise ReaderMissing(
                f"cannot list USB devices to find the card reader {self.port} ({exc})"
            ) from None
        if dev is None:
            raise ReaderMissing(
                f"USB card reader {self.port} not found: check that it is plugged in and that "
                f"[drivers.card_reader.usb] vendor_id/product_id match what lsusb shows"
            )
        try:
            self._claim(api, dev)
        except (UsbUnavailable, ReaderMissing):
            self._dispose(api, dev)
            raise
        except (usb_error, OSError, NotImplementedError, ValueError, KeyError, IndexError) as exc:
            self._dispose(api, dev)
            raise ReaderMissing(f"cannot open the USB card reader {self.port}: {self._hint(exc)}") from None
        self._dev = dev

    def _claim(self, api: UsbApi, dev: Any) -> None:
        usb_error, _, _ = _usb_errors()
        try:
            if dev.is_kernel_driver_active(self.interface):
                # usbhid or a vendor module holds it: the kiosk talks to the reader itself.
                dev.detach_kernel_driver(self.interface)
        except NotImplementedError:
            pass  # backends without kernel drivers
        try:
            config = dev.get_active_configuration()
        except usb_error:
            dev.set_configuration()  # not configured yet
            config = dev.get_active_configuration()
        try:
            alt = config[(self.interface, 0)]
        except (KeyError, IndexError):
            raise UsbUnavailable(
                f"the USB card reader {self.port} has no interface {self.interface}: "
                f"check [drivers.card_reader.usb] interface"
            ) from None
        found_in = found_out = None
        for ep in alt:
            kind = _TRANSFER_TYPES.get(ep.bmAttributes & 0x03)
            if kind is None:
                continue
            if ep.bEndpointAddress & _ENDPOINT_IN:
                if found_in is None or ep.bEndpointAddress == self._endpoint_in:
                    found_in = ep
            elif found_out is None or ep.bEndpointAddress == self._endpoint_out:
                found_out = ep
        if self._endpoint_in is not None and (
            found_in is None or found_in.bEndpointAddress != self._endpoint_in
        ):
            found_in = None
        if self._endpoint_out is not None and (
            found_out is None or found_out.bEndpointAddress != self._endpoint_out
        ):
            found_out = None
        if found_in is None or found_out is None:
            raise UsbUnavailable(
                f"interface {self.interface} of the USB card reader {self.port} has no usable bulk/"
                f"interrupt {'IN' if found_in is None else 'OUT'} endpoint"
                f"{' as configured' if self._endpoint_in or self._endpoint_out else ''}: check "
                f"[drivers.card_reader.usb] endpoint_in/endpoint_out against lsusb -v"
            )
        api.claim_interface(dev, self.interface)
        self._ep_in, self._ep_out = found_in.bEndpointAddress, found_out.bEndpointAddress
        self._packet = max(8, int(getattr(found_in, "wMaxPacketSize", 64) or 64))

    def _hint(self, exc: BaseException) -> str:
        code = getattr(exc, "errno", None)
        if code == errno.EACCES:
            return (
                f"permission denied ({exc}): add a udev rule giving the kiosk user access, e.g. "
                f'SUBSYSTEM=="usb", ATTR{{idVendor}}=="{self.vendor_id:04x}", '
                f'ATTR{{idProduct}}=="{self.product_id:04x}", GROUP="plugdev", MODE="0660"'
            )
        if code == errno.EBUSY:
            return f"the reader is busy ({exc}): another program holds it; stop it"
        if code == errno.ENODEV:
            return f"{exc}: the reader was unplugged; check its USB cable"
        return f"{exc}: check the USB cable and power-cycle the reader"

    @staticmethod
    def _dispose(api: UsbApi, dev: Any) -> None:
        usb_error, _, _ = _usb_errors()
        try:
            api.dispose_resources(dev)
        except (usb_error, OSError):
            pass  # releasing a vanished device: nothing left to release

    def close(self) -> None:
        dev, self._dev = self._dev, None
        if dev is not None:
            self._dispose(self._api or UsbApi.pyusb(), dev)

    def _device(self) -> Any:
        if self._dev is None:
            raise ReaderMissing(f"the USB card reader {self.port} is not open")
        return self._dev

    def _gone(self, exc: BaseException) -> ReaderMissing:
        return ReaderMissing(f"the USB card reader {self.port} stopped answering: {self._hint(exc)}")

    def write(self, data: bytes) -> None:
        dev = self._device()
        usb_error, _, _ = _usb_errors()
        view = memoryview(data)
        try:
            while view:
                sent = dev.write(self._ep_out, bytes(view), USB_WRITE_TIMEOUT_MS)
                if not sent:
                    raise ReaderMissing(f"the USB card reader {self.port} accepts no data: power-cycle it")
                view = view[sent:]
        except (usb_error, OSError) as exc:
            raise self._gone(exc) from None

    def read_some(self, timeout: float) -> bytes:
        dev = self._device()
        usb_error, usb_timeout, _ = _usb_errors()
        # libusb reads 0 ms as "wait forever": never pass it.
        timeout_ms = max(1, int(timeout * 1000))
        try:
            return bytes(dev.read(self._ep_in, self._packet, timeout_ms))
        except usb_timeout:
            return b""
        except (usb_error, OSError) as exc:
            raise self._gone(exc) from None

    def discard_input(self) -> None:
        """Drain packets left from an abandoned exchange (a USB reader has no input buffer to flush)."""
        for _ in range(_DISCARD_READS):
            if not self.read_some(0.001):
                return
