"""The serial half of a driver's thin transport, shared by the card reader and the receipt printer.

``SerialPort`` opens a port 8N1 with exclusive access (a second process on the same device corrupts
both), writes, reads whatever arrived within a deadline, and turns every pyserial/termios error into the
driver's own "device missing" error with a message a technician can act on. A subclass says what the
device is called, which error class it raises and how to check it; blocking by design (each driver runs
its transport on its own worker thread).
"""

from __future__ import annotations

import os
import termios
import time
from typing import Protocol

import serial

READ_SLICE_S = 0.02
# What a vanished device raises from pyserial's calls (tcflush raises termios.error, not OSError).
PORT_ERRORS = (serial.SerialException, OSError, termios.error)


class Transport(Protocol):
    """What a driver's protocol layer needs of a byte transport, serial or USB."""

    port: str

    def open(self) -> None: ...
    def close(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def read_some(self, timeout: float) -> bytes:
        """Whatever bytes arrive within ``timeout`` (at least one, or b"" on timeout)."""

    def discard_input(self) -> None: ...


class SerialPort:
    #: The device in words ("card reader"), its config key, and what to check when it is not there.
    noun = "device"
    config_key = "[drivers] port"
    plug_hint = "check that it is plugged in"
    gone_hint = "check its cable"
    #: The driver's "device missing" error (a ``drivers.base`` error class taking one message).
    missing: type[Exception] = OSError
    write_timeout_s = 1.0

    def __init__(self, port: str, baudrate: int) -> None:
        self.port = port
        self.baudrate = baudrate
        self._serial: serial.Serial | None = None

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        if self._serial is not None:
            return
        if not os.path.exists(self.port):
            raise self.missing(
                f"{self.noun} port {self.port} not found: {self.plug_hint}, and that {self.config_key} is right"
            )
        try:
            self._serial = serial.Serial(
                self.port,
                self.baudrate,
                bytesize=8,
                parity="N",
                stopbits=1,
                timeout=READ_SLICE_S,
                write_timeout=self.write_timeout_s,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise self.missing(
                f"cannot open the {self.noun} on {self.port} ({exc}): check the cable, and that no "
                f"other program holds the port"
            ) from None

    def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            try:
                ser.close()
            except PORT_ERRORS:
                pass  # closing a vanished device: nothing left to release

    def gone(self, exc: BaseException | str) -> Exception:
        return self.missing(
            f"the {self.noun} on {self.port} is gone ({exc}): {self.gone_hint}, and that "
            f"{self.config_key} names it"
        )

    def write_timed_out(self) -> Exception:
        """The device took no data within ``write_timeout_s`` (flow control holds it)."""
        return self.gone("it takes no data")

    def _port(self) -> serial.Serial:
        if self._serial is None:
            raise self.missing(f"the {self.noun} on {self.port} is not open")
        return self._serial

    def write(self, data: bytes) -> None:
        try:
            self._port().write(data)
        except serial.SerialTimeoutException:
            raise self.write_timed_out() from None
        except PORT_ERRORS as exc:
            raise self.gone(exc) from None

    def read_some(self, timeout: float) -> bytes:
        """Whatever bytes arrive within ``timeout`` (at least one, or b"" on timeout)."""
        ser = self._port()
        # The port keeps a fixed short read timeout and we loop to the deadline: changing pyserial's
        # timeout per call would rewrite the termios settings on every read.
        deadline = time.monotonic() + timeout
        try:
            while True:
                first = ser.read(1)
                if first:
                    waiting = ser.in_waiting
                    return first + (ser.read(waiting) if waiting else b"")
                if time.monotonic() >= deadline:
                    return b""
        except PORT_ERRORS as exc:
            raise self.gone(exc) from None

    def discard_input(self) -> None:
        try:
            self._port().reset_input_buffer()
        except PORT_ERRORS as exc:
            raise self.gone(exc) from None
