"""Named wires between processes: lines as bytes in a shared-memory file, and a gpiozero pin factory on it.

This is a simulator backend beside the GPIO driver (``[drivers.gpio] backend = "wire"``): the failover
pair's heartbeat, lease and fence lines (docs/failover.md) join a terminal's gpiozero devices to the
arbiter's ``machine.Pin`` stand-in (sim/micropython) in another process, as copper would.

File layout (``WireBoard``): ``b"KWB1"``, a little-endian u16 header length, the header (JSON: the line
names in order), then two bytes per line: the level its driver writes (0/1) and the force byte (0: not
forced, 1: reads 0, 2: reads 1; a stuck or broken wire, set by a test harness). Single-byte writes to a
shared mapping are atomic, so readers never see a torn level.

    board = WireBoard.create("/dev/shm/room", ["hb.main", "lease.main"])
    factory = WirePinFactory(WireBoard.open("/dev/shm/room"), pins={5: "hb.main", 6: "lease.main"})
    hb = DigitalOutputDevice(5, pin_factory=factory)      # another process sees hb.main toggle
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPin

MAGIC = b"KWB1"
POLL_S = 0.001  # how often a wire pin's input is sampled for edges (a real GPIO edge IRQ is faster)


class WireBoardError(ValueError):
    """A wire file that is not one, or a line name it does not have."""


class WireBoard:
    """The lines of a shared-memory wire file. ``get``/``set``/``force``/``release`` are safe from any
    thread or process; ``close()`` is idempotent."""

    def __init__(self, path: Path, names: list[str], mm: mmap.mmap, base: int, fd: int) -> None:
        self.path = path
        self.names = list(names)
        self._index = {n: base + 2 * i for i, n in enumerate(names)}
        self._mm: mmap.mmap | None = mm
        self._fd = fd

    @classmethod
    def create(cls, path: str | os.PathLike[str], names: Iterable[str]) -> WireBoard:
        """A new wire file (replacing one there) with every line at 0 and none forced."""
        names = list(names)
        if len(set(names)) != len(names) or not names:
            raise WireBoardError("line names must be distinct and at least one")
        header = json.dumps(names).encode()
        blob = MAGIC + struct.pack("<H", len(header)) + header + bytes(2 * len(names))
        path = Path(path)
        tmp = path.with_name(path.name + ".new")
        tmp.write_bytes(blob)
        os.replace(tmp, path)
        return cls.open(path)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> WireBoard:
        path = Path(path)
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size)
        except (OSError, ValueError):
            os.close(fd)
            raise
        if mm[:4] != MAGIC:
            mm.close()
            os.close(fd)
            raise WireBoardError(f"{path} is not a wire file (no {MAGIC!r} at its start)")
        (hlen,) = struct.unpack("<H", mm[4:6])
        names = json.loads(bytes(mm[6 : 6 + hlen]))
        return cls(path, names, mm, 6 + hlen, fd)

    def _at(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise WireBoardError(
                f"no line {name!r} in {self.path} (it has {', '.join(self.names)})"
            ) from None

    def _map(self) -> mmap.mmap:
        if self._mm is None:
            raise WireBoardError(f"wire file {self.path} is closed")
        return self._mm

    def get(self, name: str) -> int:
        """What the line reads: its forced level if forced, else what its driver writes."""
        mm, at = self._map(), self._at(name)
        forced = mm[at + 1]
        return forced - 1 if forced else mm[at]

    def driven(self, name: str) -> int:
        """What the line's driver writes, forced or not."""
        return self._map()[self._at(name)]

    def set(self, name: str, level: int) -> None:
        self._map()[self._at(name)] = 1 if level else 0

    def force(self, name: str, level: int) -> None:
        """The line reads ``level`` whatever its driver writes, until ``release``."""
        self._map()[self._at(name) + 1] = 2 if level else 1

    def release(self, name: str) -> None:
        self._map()[self._at(name) + 1] = 0

    def close(self) -> None:
        mm, self._mm = self._mm, None
        if mm is not None:
            mm.close()
            os.close(self._fd)

    def __enter__(self) -> WireBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WirePin(MockPin):
    """A gpiozero mock pin joined to a wire line: as an output it writes the line, as an input it
    reads it (edges reach ``when_changed`` from the factory's poller). A pin with no line is a plain
    ``MockPin``."""

    def __init__(self, factory: WirePinFactory, info: Any) -> None:
        self.line = factory.line_of(info)
        self._board = factory.board
        super().__init__(factory, info)
        if self.line is not None:
            self._state = bool(self._board.get(self.line))
            factory._watch(self)

    def close(self) -> None:
        factory = self.factory
        if isinstance(factory, WirePinFactory):
            factory._unwatch(self)
        super().close()

    def _get_state(self) -> bool:
        if self.line is not None and self._function == "input":
            return bool(self._board.get(self.line))
        return self._state

    def _change_state(self, value: bool) -> bool:
        if self.line is not None and self._function == "output":
            self._board.set(self.line, value)
        return super()._change_state(value)

    def _set_pull(self, value: str) -> None:
        if self.line is None:
            super()._set_pull(value)
            return
        # the wire's level is set by the other end; the pull only says what an open line would read
        self._pull = value

    def _set_function(self, value: str) -> None:
        if self.line is None:
            super()._set_function(value)
            return
        if value not in ("input", "output"):
            super()._set_function(value)  # raises gpiozero's PinInvalidFunction
        self._function = value
        if value == "input":
            self._state = bool(self._board.get(self.line))

    def _poll(self) -> None:
        if self._function != "input":
            return
        level = bool(self._board.get(self.line))
        if level != self._state:
            (self.drive_high if level else self.drive_low)()


class WirePinFactory(MockFactory):
    """gpiozero's MockFactory whose pins ``pins = {bcm: line_name}`` live on a ``WireBoard``; one
    daemon thread samples the input pins every millisecond for edges. ``close()`` stops it."""

    def __init__(self, board: WireBoard, pins: Mapping[int | str, str], **kw: Any) -> None:
        super().__init__(pin_class=WirePin, **kw)
        self.board = board
        self.lines = {int(k): v for k, v in pins.items()}
        for line in self.lines.values():
            board._at(line)  # an unknown line name fails here, naming the file
        self._watched: set[WirePin] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def line_of(self, info: Any) -> str | None:
        for name in getattr(info, "names", ()) or (info.name,):
            text = str(name)
            if text.startswith("GPIO") and text[4:].isdigit() and int(text[4:]) in self.lines:
                return self.lines[int(text[4:])]
        return None

    def _watch(self, pin: WirePin) -> None:
        with self._lock:
            self._watched.add(pin)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wire-pins", daemon=True)
                self._thread.start()

    def _unwatch(self, pin: WirePin) -> None:
        with self._lock:
            self._watched.discard(pin)

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pins = list(self._watched)
            for pin in pins:
                try:
                    pin._poll()
                except Exception:  # noqa: BLE001 - a closed board or a callback's bug must not end polling
                    pass
            time.sleep(POLL_S)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1)
        super().close()
