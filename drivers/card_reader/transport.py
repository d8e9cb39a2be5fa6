"""The thin serial transport: open, write, read what is there, close. pyserial errors end here.

Blocking by design; the driver runs it in its own worker thread.
"""

from __future__ import annotations

import os
import termios
import time
from typing import Protocol

import serial

from drivers.card_reader.errors import ReaderMissing

READ_SLICE_S = 0.02
# What a vanished device raises from pyserial's calls (tcflush raises termios.error, not OSError).
_PORT_ERRORS = (serial.SerialException, OSError, termios.error)


class Transport(Protocol):
    port: str

    def open(self) -> None: ...
    def close(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def read_some(self, timeout: float) -> bytes:
        """Whatever bytes arrive within ``timeout`` (at least one, or b"" on timeout)."""

    def discard_input(self) -> None: ...


def _unplugged_hint(port: str) -> str:
    return (
        f"the card reader on {port} is gone: check that its USB cable is plugged in "
        f"and that [drivers.card_reader] port names it"
    )


class SerialTransport:
    """8N1 at ``baudrate``, exclusive access (a second process on the same reader corrupts both)."""

    def __init__(self, port: str, baudrate: int = 115200) -> None:
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
            raise ReaderMissing(
                f"card reader port {self.port} not found: check that the reader is plugged "
                f"in (USB) and that [drivers.card_reader] port is right"
            )
        try:
            self._serial = serial.Serial(
                self.port,
                self.baudrate,
                bytesize=8,
                parity="N",
                stopbits=1,
                timeout=READ_SLICE_S,
                write_timeout=1.0,
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise ReaderMissing(
                f"cannot open the card reader on {self.port} ({exc}): check the cable, and "
                f"that no other program holds the port"
            ) from None

    def close(self) -> None:
        ser, self._serial = self._serial, None
        if ser is not None:
            try:
                ser.close()
            except _PORT_ERRORS:
                pass  # closing a vanished device: nothing left to release

    def _port(self) -> serial.Serial:
        if self._serial is None:
            raise ReaderMissing(f"the card reader on {self.port} is not open")
        return self._serial

    def write(self, data: bytes) -> None:
        try:
            self._port().write(data)
        except _PORT_ERRORS as exc:
            raise ReaderMissing(f"{_unplugged_hint(self.port)} ({exc})") from None

    def read_some(self, timeout: float) -> bytes:
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
        except _PORT_ERRORS as exc:
            raise ReaderMissing(f"{_unplugged_hint(self.port)} ({exc})") from None

    def discard_input(self) -> None:
        try:
            self._port().reset_input_buffer()
        except _PORT_ERRORS as exc:
            raise ReaderMissing(f"{_unplugged_hint(self.port)} ({exc})") from None
