"""``machine`` for the arbiter on CPython: Pin on a WireBoard, UART on a pty/serial path, a real WDT."""

from __future__ import annotations

import contextlib
import os
import sys
import termios
import threading
import time
import tty
from collections.abc import Mapping
from typing import Any

_board: Any = None
_pins: dict[int, str] = {}
_uarts: dict[int, str] = {}


def configure(board: Any, pins: Mapping[int, str], uarts: Mapping[int, str]) -> None:
    """Which WireBoard line each GPIO number is, and which device path each UART id opens."""
    global _board
    _board = board
    _pins.clear()
    _pins.update({int(k): v for k, v in pins.items()})
    _uarts.clear()
    _uarts.update({int(k): str(v) for k, v in uarts.items()})


class Pin:
    IN = 0
    OUT = 1
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id: int, mode: int = IN, pull: int | None = None, *, value: int | None = None) -> None:
        self.id = id
        self.mode = mode
        self.line = _pins.get(id)
        self._level = 0  # a pin on no line (SPI pins and the like) keeps its level here
        if value is not None and mode == Pin.OUT:
            self.value(value)

    def value(self, v: int | None = None) -> int | None:
        if v is None:
            if self.line is None:
                return self._level
            return _board.driven(self.line) if self.mode == Pin.OUT else _board.get(self.line)
        level = 1 if v else 0
        if self.line is None:
            self._level = level
        elif self.mode == Pin.OUT:
            _board.set(self.line, level)
        return None

    def on(self) -> None:
        self.value(1)

    def off(self) -> None:
        self.value(0)

    def __call__(self, v: int | None = None) -> int | None:
        return self.value(v)


class UART:
    """A serial port on a device path (the switcher simulator's pty): raw 8N1, non-blocking. ``any()``
    and ``read()`` never wait; a port that vanished is opened again on the next call."""

    def __init__(
        self, id: int, baudrate: int = 9600, *, tx: Any = None, rx: Any = None, timeout: int = 0
    ) -> None:
        self.path = _uarts[id]
        self.baudrate = baudrate
        self._fd: int | None = None
        self._buf = b""
        self._retry_at = 0.0
        self._open()

    def _open(self) -> None:
        if self._fd is not None or time.monotonic() < self._retry_at:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            self._retry_at = time.monotonic() + 0.5
            return
        with contextlib.suppress(termios.error):
            tty.setraw(fd)
        self._fd = fd

    def _lost(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
        self._retry_at = time.monotonic() + 0.2

    def _fill(self) -> None:
        self._open()
        if self._fd is None:
            return
        try:
            while len(self._buf) < 4096:
                data = os.read(self._fd, 1024)
                if not data:
                    break
                self._buf += data
        except BlockingIOError:
            pass
        except OSError:
            self._lost()

    def any(self) -> int:
        self._fill()
        return len(self._buf)

    def read(self, n: int | None = None) -> bytes | None:
        self._fill()
        if not self._buf:
            return None
        n = len(self._buf) if n is None else n
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def write(self, data: bytes) -> int | None:
        self._open()
        if self._fd is None:
            raise OSError(5, f"{self.path}: no such port")
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return None
        except OSError:
            self._lost()
            raise

    def deinit(self) -> None:
        self._lost()


class WDT:
    """The watchdog: not fed within ``timeout`` ms, the process exits (a reset); it cannot be stopped."""

    def __init__(self, id: int = 0, timeout: int = 5000) -> None:
        self.timeout_s = timeout / 1000
        self._fed = time.monotonic()
        threading.Thread(target=self._watch, name="wdt", daemon=True).start()

    def feed(self) -> None:
        self._fed = time.monotonic()

    def _watch(self) -> None:
        while True:
            time.sleep(min(0.05, self.timeout_s / 4))
            if time.monotonic() - self._fed > self.timeout_s:
                sys.stderr.write(f"WDT: not fed for {self.timeout_s:.3f} s, reset\n")
                sys.stderr.flush()
                os._exit(3)


class SPI:
    def __init__(self, *args: Any, **kw: Any) -> None:
        pass


def reset() -> None:
    os._exit(3)
