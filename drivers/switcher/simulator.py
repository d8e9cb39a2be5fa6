"""A switcher simulator per protocol, on a real TCP socket (127.0.0.1) and on a pty for serial.

It answers with the device side of the protocol modules (the same bytes as the hardware) and can be
told to misbehave: ``garbage`` (a corrupted reply), ``silence`` (no reply), ``error`` (the protocol's
error code), ``drop`` (close the connection), ``ignore`` (acknowledge a tie without making it, so only
the read-back catches it), ``slow`` (reply late), ``raw`` (answer given bytes, for fuzzing) and
``notice`` (send an unsolicited notice line before the reply). It can also be unplugged and plugged back.

``set_signal(input, present)`` plugs or pulls a source on an input: an Extron in verbose mode 1 or 3
reports it unprompted on every connection (``Sig 1 0 1 1``, one flag per input); callable from any
thread.

It plays firmware variants (``firmware=[...]``, or ``inject(NAME)`` at run time, which ``kiosk sim fault
switcher NAME`` reaches; ``clear_faults()`` goes back to the firmware it was built with):

========  =======  =====================================================================
kramer    no-ok    set commands answered without " OK" (``~01@VID 2>4``, VS-1616DN-EM)
kramer    av       audio-follows-video mode: ``#VID``/``#AUD`` move both, answer ``~01@AV``
kramer    no-addr  replies without the ``NN@`` address (``~VID 2>4 OK``)
kramer    route    ``#ROUTE`` only; ``#VID``/``#AUD``/``#AV`` answer ``ERR 002``
extron    vrb0-3   the verbose mode a connection starts in (2 and 3 tag read answers)
extron    no-cv    old firmware: ``W3CV`` answers ``E10``, the mode stays as it started
extron    date2    the banner's clock line as ``Fri, Feb 13, 2009, 23:31:30``
========  =======  =====================================================================

    sim = SwitcherSimulator("extron", firmware=["vrb2", "no-cv"])
    host, port = await sim.start_tcp()
    sim.inject("garbage", times=1)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from drivers.switcher.ascii_profile import AsciiMatrixDevice
from drivers.switcher.config import SIM_FIRMWARE, AsciiProfile
from drivers.switcher.extron import ExtronSisDevice
from drivers.switcher.kramer import KramerP3000Device
from drivers.switcher.protocol import DeviceEmulation, Matrix
from kiosk_core.tasks import TaskSet, wait_for

log = logging.getLogger("kiosk.sim.switcher")

FaultKind = Literal["garbage", "silence", "error", "drop", "ignore", "slow", "raw", "notice"]
FAULT_KINDS: tuple[str, ...] = ("garbage", "silence", "error", "drop", "ignore", "slow", "raw", "notice")
# Line noise as a UART or a bad crimp produces it: high bytes, a stray control character.
GARBAGE = b"\xfe\x13Ou\xf0#\x7f\x00\r\n"


@dataclass
class Fault:
    kind: FaultKind
    #: how many replies it spoils (None: until cleared)
    times: int | None = 1
    #: the device error code for ``error`` (None: the protocol's "invalid command")
    code: str | None = None
    #: how late ``slow`` replies are
    delay_s: float = 2.0
    #: exactly what to answer for ``raw`` (fuzzing the driver with hostile replies)
    raw: bytes = b""


class SwitcherSimulator:
    def __init__(
        self,
        protocol: str,
        *,
        inputs: int = 8,
        outputs: int = 4,
        digits: int | None = None,
        profile: AsciiProfile | None = None,
        model: str | None = None,
        firmware: list[str] | tuple[str, ...] = (),
    ) -> None:
        if protocol not in ("extron", "kramer", "ascii"):
            raise ValueError(f"unknown switcher protocol {protocol!r}: extron, kramer or ascii")
        self.protocol = protocol
        for name in firmware:
            self._check_firmware(name)
        self._built_firmware = tuple(firmware)
        #: the firmware variants now played (see the module docstring)
        self.firmware: set[str] = set(firmware)
        self._live: weakref.WeakSet[DeviceEmulation] = weakref.WeakSet()
        self.matrix = Matrix(inputs, outputs)
        self.digits = digits
        self.profile = profile
        self.model = model
        self.faults: deque[Fault] = deque(maxlen=16)
        #: every command received, newest last (bounded), for tests and `kiosk sim` status
        self.received: deque[bytes] = deque(maxlen=200)
        self.plugged = False
        self._server: asyncio.Server | None = None
        self._tcp_port: int | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._pty: tuple[int, int] | None = None
        self._pty_link: Path | None = None
        self._pty_task: asyncio.Task[None] | None = None
        self._tasks = TaskSet("switcher-sim", log)
        #: whether each input (1..inputs, index 0 is input 1) has a source with signal
        self.signals: list[bool] = [True] * inputs
        self._writers: dict[DeviceEmulation, Callable[[bytes], None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- the device ---------------------------------------------------------------------------------

    def _check_firmware(self, name: str) -> None:
        if name not in SIM_FIRMWARE[self.protocol]:
            raise ValueError(
                f"unknown {self.protocol} firmware variant {name!r}: "
                f"one of {', '.join(SIM_FIRMWARE[self.protocol]) or '(none)'}"
            )

    def emulation(self) -> DeviceEmulation:
        """A fresh device side (each connection has its own input buffer, like a real port)."""
        emu: DeviceEmulation
        if self.protocol == "extron":
            emu = ExtronSisDevice(
                self.matrix, digits=self.digits or 2, **({"model": self.model} if self.model else {})
            )
        elif self.protocol == "kramer":
            emu = KramerP3000Device(self.matrix, **({"model": self.model} if self.model else {}))
        else:
            emu = AsciiMatrixDevice(self.matrix, self.profile)
        self._apply_firmware(emu, fresh=True)
        self._live.add(emu)
        return emu

    def _apply_firmware(self, emu: DeviceEmulation, *, fresh: bool) -> None:
        fw = self.firmware
        if isinstance(emu, KramerP3000Device):
            emu.ok, emu.address = "no-ok" not in fw, "no-addr" not in fw
            emu.afv, emu.route_only = "av" in fw, "route" in fw
        elif isinstance(emu, ExtronSisDevice):
            emu.takes_cv = "no-cv" not in fw
            emu.clock = "comma" if "date2" in fw else "rfc"
            modes = [int(name[3]) for name in ("vrb0", "vrb1", "vrb2", "vrb3") if name in fw]
            if modes:
                emu.verbose = modes[-1]
            elif fresh:
                emu.verbose = 0

    def set_firmware(self, name: str) -> None:
        """Play firmware variant ``name`` from now on, on live connections too (a ``vrbN`` replaces
        the other verbose modes)."""
        self._check_firmware(name)
        if name.startswith("vrb"):
            self.firmware -= {"vrb0", "vrb1", "vrb2", "vrb3"}
        self.firmware.add(name)
        for emu in list(self._live):
            self._apply_firmware(emu, fresh=False)

    def inject(
        self,
        kind: str,
        *,
        times: int | None = 1,
        code: str | None = None,
        delay_s: float = 2.0,
        raw: bytes = b"",
    ) -> Fault | None:
        if kind in SIM_FIRMWARE[self.protocol]:
            self.set_firmware(kind)
            return None  # nothing pending: the variant stays until clear_faults()
        if kind not in FAULT_KINDS:
            variants = SIM_FIRMWARE[self.protocol]
            raise ValueError(
                f"unknown switcher fault {kind!r}: one of {', '.join(FAULT_KINDS)}"
                + (f" or a firmware variant: {', '.join(variants)}" if variants else "")
            )
        if times is not None and not 1 <= times <= 1000:
            raise ValueError("times must be 1-1000 (or None: until cleared)")
        fault = Fault(kind, times, code, delay_s, bytes(raw))  # type: ignore[arg-type]
        self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Drop pending faults and go back to the firmware the simulator was built with."""
        self.faults.clear()
        self.firmware = set(self._built_firmware)
        for emu in list(self._live):
            self._apply_firmware(emu, fresh=False)

    def _take_fault(self) -> Fault | None:
        if not self.faults:
            return None
        fault = self.faults[0]
        if fault.times is not None:
            fault.times -= 1
            if fault.times <= 0:
                self.faults.popleft()
        return fault

    async def _respond(
        self, emu: DeviceEmulation, data: bytes, write: Callable[[bytes], Awaitable[None]]
    ) -> bool:
        """Answer received bytes; False when a ``drop`` fault says to hang up."""
        for reply, tie in emu.feed(data):
            fault = self._take_fault()
            kind = fault.kind if fault else None
            if kind == "drop":
                return False
            if kind == "silence":
                continue
            if kind == "error":
                await write(emu.error_reply(fault.code))  # type: ignore[union-attr]
                continue
            if kind == "raw":
                await write(fault.raw)  # type: ignore[union-attr]
                continue
            if kind == "notice":  # the unit reports something on its own just before it answers
                await write(emu.notice())
            if kind == "slow":
                await asyncio.sleep(fault.delay_s)  # type: ignore[union-attr]
            if tie is not None and kind != "ignore":
                self.matrix.apply(tie)
            await write(GARBAGE if kind == "garbage" else reply)
        return True

    def _note(self, data: bytes) -> None:
        self.received.append(data)

    def set_signal(self, input: int, present: bool) -> None:
        """Input ``input`` gains (True) or loses its signal; reported as ``Sig ...`` where the device
        and its verbose mode do that."""
        if not 1 <= input <= len(self.signals):
            raise ValueError(f"input {input} is not 1-{len(self.signals)}")
        self.signals[input - 1] = bool(present)
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is not None and running is not loop:
            loop.call_soon_threadsafe(self._report_signals)
        else:
            self._report_signals()

    def _report_signals(self) -> None:
        for emu, write in list(self._writers.items()):
            report = getattr(emu, "signal_report", None)
            line = report(list(self.signals)) if report else b""
            if line:
                write(line)

    # --- TCP ------------------------------------------------------------------------------------------

    async def start_tcp(self, port: int = 0) -> tuple[str, int]:
        """Listen on 127.0.0.1 (a free port unless given); returns (host, port)."""
        self._loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._serve_client, "127.0.0.1", port or self._tcp_port or 0
        )
        self._tcp_port = self._server.sockets[0].getsockname()[1]
        self.plugged = True
        return "127.0.0.1", self._tcp_port

    @property
    def tcp_port(self) -> int | None:
        return self._tcp_port

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        emu = self.emulation()
        self._writers[emu] = writer.write

        async def write(b: bytes) -> None:
            writer.write(b)
            await writer.drain()

        try:
            await write(emu.banner())
            while True:
                data = await reader.read(1024)
                if not data:
                    break
                self._note(data)
                if not await self._respond(emu, data, write):
                    break
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._writers.pop(emu, None)
            self._clients.discard(writer)
            writer.close()

    async def _stop_tcp(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._clients):
                w.close()
            with contextlib.suppress(Exception):
                await wait_for(self._server.wait_closed(), 2)
            self._server = None

    # --- pty (serial) ---------------------------------------------------------------------------------

    async def start_pty(self, link: str | os.PathLike[str]) -> str:
        """Open a pty and point ``link`` at its slave end (the path a driver opens, stable across
        unplug/replug like a udev symlink); returns the link."""
        self._loop = asyncio.get_running_loop()
        self._pty_link = Path(link)
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._pty = (master, slave)
        tmp = self._pty_link.with_name(self._pty_link.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(os.ttyname(slave), tmp)
        os.replace(tmp, self._pty_link)
        self._pty_task = asyncio.create_task(self._serve_pty(master), name="switcher-sim-pty")
        self.plugged = True
        return str(self._pty_link)

    async def _serve_pty(self, master: int) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=256)

        def readable() -> None:
            try:
                data = os.read(master, 1024)
            except OSError:
                return
            if data and not queue.full():  # a full queue drops input, as a UART overrun would
                queue.put_nowait(data)

        async def write(b: bytes) -> None:
            with contextlib.suppress(OSError):
                os.write(master, b)

        loop.add_reader(master, readable)
        emu = self.emulation()

        def write_now(b: bytes) -> None:
            with contextlib.suppress(OSError):
                os.write(master, b)

        self._writers[emu] = write_now
        try:
            while True:
                data = await queue.get()
                self._note(data)
                if not await self._respond(emu, data, write):
                    # A serial line cannot "hang up": the nearest thing is the adapter dropping off
                    # the bus and coming back, which is what the driver sees after a brown-out.
                    self._spawn(self._bounce_pty())
                    return
        finally:
            self._writers.pop(emu, None)
            with contextlib.suppress(Exception):
                loop.remove_reader(master)

    async def _bounce_pty(self) -> None:
        await self._stop_pty()
        await asyncio.sleep(0.01)
        if self._pty_link is not None:
            await self.start_pty(self._pty_link)

    async def _stop_pty(self, *, remove_link: bool = False) -> None:
        task, self._pty_task = self._pty_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._pty is not None:
            for fd in self._pty:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._pty = None
        if remove_link and self._pty_link is not None:
            with contextlib.suppress(FileNotFoundError):
                self._pty_link.unlink()

    # --- plug -------------------------------------------------------------------------------------------

    async def unplug(self) -> None:
        """The cable is pulled: the TCP port refuses, the serial device node disappears."""
        self.plugged = False
        await self._stop_tcp()
        await self._stop_pty(remove_link=True)

    async def replug(self) -> None:
        if self.plugged:
            return
        if self._tcp_port is not None:
            await self.start_tcp(self._tcp_port)
        if self._pty_link is not None:
            await self.start_pty(self._pty_link)
        self.plugged = True

    async def stop(self) -> None:
        await self.unplug()
        await self._tasks.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(coro)
