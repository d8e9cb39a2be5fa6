"""Thin line-oriented transports for switchers: TCP (asyncio streams) and serial (pyserial on the loop).

A transport moves bytes and cuts them into lines; it knows nothing of any protocol. Socket and serial
exceptions are translated here into ``SwitcherMissing`` / ``SwitcherTimeout`` / ``SwitcherGarbage``
with the port named and a hint for the technician.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable

from drivers.switcher.errors import SwitcherGarbage, SwitcherMissing, SwitcherTimeout
from drivers.switcher.protocol import MAX_LINE, shorten
from kiosk_core.tasks import wait_for


class LineBuffer:
    """Cuts a byte stream into lines at CR or LF (empty lines dropped), bounded in memory.

    A line longer than ``max_line`` is reported once as ``SwitcherGarbage`` and its bytes are skipped up
    to the next line end, so one burst of noise cannot grow the buffer or hide the next good reply.
    """

    def __init__(self, max_line: int = MAX_LINE, max_lines: int = 64) -> None:
        self.max_line = max_line
        self._partial = bytearray()
        self._lines: deque[bytes | SwitcherGarbage] = deque(maxlen=max_lines)
        self._skipping = False

    def feed(self, data: bytes) -> None:
        for chunk in _split_keep(data):
            if chunk in (b"\r", b"\n"):
                if self._partial and not self._skipping:
                    self._lines.append(bytes(self._partial))
                self._partial.clear()
                self._skipping = False
                continue
            if self._skipping:
                continue
            self._partial += chunk
            if len(self._partial) > self.max_line:
                self._lines.append(
                    SwitcherGarbage(
                        f"reply longer than {self.max_line} bytes without a line end: {shorten(bytes(self._partial))}"
                    )
                )
                self._partial.clear()
                self._skipping = True

    def next_line(self) -> bytes | None:
        """The next complete line, or None. Raises the garbage error recorded for an oversized line."""
        if not self._lines:
            return None
        item = self._lines.popleft()
        if isinstance(item, SwitcherGarbage):
            raise item
        return item

    def clear(self) -> None:
        self._partial.clear()
        self._lines.clear()
        self._skipping = False


def _split_keep(data: bytes) -> list[bytes]:
    """``b"ab\\r\\ncd"`` -> ``[b"ab", b"\\r", b"\\n", b"cd"]``."""
    out, start = [], 0
    for i, byte in enumerate(data):
        if byte in (10, 13):
            if i > start:
                out.append(data[start:i])
            out.append(data[i : i + 1])
            start = i + 1
    if start < len(data):
        out.append(data[start:])
    return out


def _serial_problem(text: str) -> str:
    """pyserial's open() error as the few cases a technician can tell apart."""
    if "No such file" in text or "Errno 2]" in text:
        return "port not present"
    if "Permission denied" in text:
        return "permission denied (add the kiosk user to the dialout group)"
    if "Resource temporarily unavailable" in text or "lock" in text.lower() or "busy" in text.lower():
        return "port in use by another program"
    return text


class LineTransport(ABC):
    """One connection to one switcher. ``on_lost`` is called (once per connection) when it drops."""

    #: "tcp 192.168.1.50:23" / "serial /dev/ttyUSB1", for messages
    where: str = ""
    #: what a technician should check when the switcher cannot be reached
    hint: str = ""

    def __init__(self) -> None:
        self._lines = LineBuffer()
        self._data = asyncio.Event()
        self._lost: str | None = "not connected"
        self.on_lost: Callable[[str], None] | None = None

    @property
    def is_open(self) -> bool:
        return self._lost is None

    @abstractmethod
    async def open(self, timeout_s: float) -> None:
        """Connect; raise ``SwitcherMissing`` saying where and what to check."""

    @abstractmethod
    async def _close(self) -> None: ...

    @abstractmethod
    async def _write(self, data: bytes) -> None: ...

    async def close(self) -> None:
        """Idempotent."""
        self._lost = self._lost or "closed"
        await self._close()

    def _received(self, data: bytes) -> None:
        self._lines.feed(data)
        self._data.set()

    def _connection_lost(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
            self._data.set()
            if self.on_lost is not None:
                self.on_lost(why)

    def _opened(self) -> None:
        self._lines.clear()
        self._lost = None

    def missing(self, why: str) -> SwitcherMissing:
        return SwitcherMissing(f"switcher at {self.where}: {why}: {self.hint}", device="switcher")

    def discard_input(self) -> None:
        """Forget everything received so far (late answers to an earlier, timed-out command)."""
        self._lines.clear()
        self._data.clear()

    async def write(self, data: bytes) -> None:
        if self._lost is not None:
            raise self.missing(self._lost)
        await self._write(data)

    async def read_line(self, timeout_s: float) -> bytes:
        """The next non-empty line; ``SwitcherTimeout`` after ``timeout_s``, ``SwitcherMissing`` if it drops."""
        deadline = time.monotonic() + timeout_s
        while True:
            line = self._lines.next_line()
            if line is not None:
                return line
            if self._lost is not None:
                raise self.missing(self._lost)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SwitcherTimeout(
                    f"no reply from the switcher at {self.where} within {timeout_s:g} s: {self.hint}",
                    device="switcher",
                )
            self._data.clear()
            with contextlib.suppress(TimeoutError):
                await wait_for(self._data.wait(), remaining)


class TcpTransport(LineTransport):
    """A switcher's control port over TCP (Extron 23, Kramer 5000), via asyncio streams."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self.host, self.port = host, port
        self.where = f"tcp {host}:{port}"
        self.hint = "check the network cable, the switcher's power and its IP address"
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None

    async def open(self, timeout_s: float) -> None:
        await self.close()
        try:
            reader, writer = await wait_for(asyncio.open_connection(self.host, self.port), timeout_s)
        except TimeoutError:
            raise self.missing(f"no connection within {timeout_s:g} s") from None
        except OSError as exc:
            raise self.missing(exc.strerror or str(exc)) from None
        self._writer = writer
        self._opened()
        self._reader_task = asyncio.create_task(self._pump(reader), name=f"switcher-read-{self.where}")

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(4096)
                if not data:
                    self._connection_lost("the switcher closed the connection")
                    return
                self._received(data)
        except OSError as exc:
            self._connection_lost(exc.strerror or str(exc))

    async def _write(self, data: bytes) -> None:
        assert self._writer is not None
        try:
            self._writer.write(data)
            await wait_for(self._writer.drain(), 5)
        except (OSError, TimeoutError) as exc:
            self._connection_lost(f"cannot send: {exc}")
            raise self.missing(self._lost or "cannot send") from None

    async def _close(self) -> None:
        task, self._reader_task = self._reader_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await wait_for(writer.wait_closed(), 1)


class SerialTransport(LineTransport):
    """A switcher's RS-232 port through pyserial, read from the event loop (no thread per port)."""

    def __init__(self, port: str, baudrate: int) -> None:
        super().__init__()
        self.port, self.baudrate = port, baudrate
        self.where = f"serial {port}"
        self.hint = "check the RS-232/USB cable, the switcher's power and its baud rate"
        self._serial = None
        self._fd: int | None = None

    async def open(self, timeout_s: float) -> None:
        import serial  # pyserial; imported here so TCP-only kiosks do not need it at start

        await self.close()
        try:
            # exclusive: a second program on the same port would interleave commands with ours.
            ser = serial.Serial(self.port, self.baudrate, timeout=0, exclusive=True)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise self.missing(_serial_problem(str(exc))) from None
        self._serial = ser
        self._fd = ser.fileno()
        os.set_blocking(self._fd, False)
        self._opened()
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO: the USB adapter was pulled (or the simulator's pty closed).
            self._stop_reading()
            self._connection_lost("port vanished (unplugged?)" if exc.errno == errno.EIO else str(exc))
            return
        if not data:
            self._stop_reading()
            self._connection_lost("port vanished (unplugged?)")
            return
        self._received(data)

    def _stop_reading(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._fd)

    async def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        deadline = time.monotonic() + 2.0
        while view:
            try:
                n = os.write(self._fd, view)
                view = view[n:]
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SwitcherTimeout(
                        f"cannot send to {self.where}: output stays full", device="switcher"
                    ) from None
                await asyncio.sleep(0.005)
            except OSError as exc:
                self._stop_reading()
                self._connection_lost(f"cannot send: {exc.strerror or exc}")
                raise self.missing(self._lost or "cannot send") from None

    async def _close(self) -> None:
        self._stop_reading()
        ser, self._serial, self._fd = self._serial, None, None
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.close()
