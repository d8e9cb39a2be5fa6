"""A SAM card reader emulator on a real pty, speaking the same frames in the other direction.

The emulator owns a pty pair and publishes its slave under a stable symlink (``port``), the way
``/dev/serial/by-id/...`` names a USB reader: the driver opens that path with pyserial exactly as it would
open the real device. ``unplug()`` closes the pty (the driver's reads fail like a yanked USB adapter) and
removes the link; ``replug()`` makes a new pty behind the same link.

Replies are paced at the configured baud rate (8N1, 10 bits per byte) unless ``pace=False``: a pty alone
moves 1.3 kB in microseconds, which would make any timing measured over it dishonest.

Control API (thread-safe, used by tests, ``kiosk sim`` and demos)::

    present_card("zhang-san"); remove_card(); inject("noise", count=2, command="read"); unplug(); replug()

``control(emulator, action, params)`` maps the same API to names (present/remove/inject/unplug/replug/
samples/status) for ``kiosk sim`` over the local bus.

Faults act on the next ``count`` replies (or only on replies to ``command``: find, select, read,
address, sam): ``noise`` (garbage before the reply),
``bad_checksum``, ``truncated`` (half a reply, then nothing), ``slow`` (reply after ``slow_reply_s``),
``silence`` (no reply), ``read_failed`` (SW3 0x41 instead of the reply).
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import tempfile
import termios
import threading
import time
import tty
from collections import Counter, deque
from pathlib import Path
from typing import Any

from drivers.card_reader import errors as e
from drivers.card_reader.protocol import (
    SW3_CARD_FOUND,
    SW3_OK,
    Command,
    FrameDecoder,
    SamResponse,
    encode_card_blocks,
    encode_sam_id,
    parse_request,
)
from drivers.card_reader.samples import SAMPLES, SampleCard, sample

log = logging.getLogger("drivers.card_reader.simulator")

FAULTS = ("noise", "bad_checksum", "truncated", "slow", "silence", "read_failed")
FAULT_ALIASES = {"checksum": "bad_checksum", "no_reply": "silence", "truncate": "truncated"}
#: ``inject(..., command=)`` targets: faults may wait for a particular command's reply
TARGETS: dict[str, tuple[Command, ...]] = {
    "find": (Command.FIND_CARD,),
    "select": (Command.SELECT_CARD,),
    "read": (Command.READ_TEXT_PHOTO, Command.READ_TEXT_PHOTO_FINGERPRINT),
    "address": (Command.READ_ADDITIONAL_ADDRESS,),
    "sam": (Command.RESET_SAM, Command.SAM_STATUS, Command.SAM_ID),
}
DEFAULT_SAM_ID = "05.01-20241001-0000330803-0012345678"
#: commands that make the SAM talk to the card over RF (``sam_latency_s`` each)
_RF_COMMANDS = (
    Command.FIND_CARD,
    Command.SELECT_CARD,
    Command.READ_TEXT_PHOTO,
    Command.READ_TEXT_PHOTO_FINGERPRINT,
    Command.READ_ADDITIONAL_ADDRESS,
)
_CONTROL_TIMEOUT_S = 3.0


class SamEmulator:
    """One emulated reader. ``start()``/``stop()`` (or ``with``); control methods from any thread."""

    def __init__(
        self,
        *,
        baudrate: int = 115200,
        pace: bool = True,
        slow_reply_s: float = 1.5,
        sam_latency_s: float = 0.0,
        seed: int = 0,
        initial_card: str | None = None,
        link_dir: str | os.PathLike[str] | None = None,
        sam_id: str = DEFAULT_SAM_ID,
        halt_after_read: bool = False,
    ) -> None:
        self.baudrate = baudrate
        #: like readers whose SAM halts a card once read: "no card" until it is lifted and put back
        self.halt_after_read = halt_after_read
        self._halted = False
        self.pace = pace
        self.slow_reply_s = slow_reply_s
        self.sam_latency_s = sam_latency_s
        self.sam_id = sam_id
        self._rng = random.Random(seed)
        self._own_dir = link_dir is None
        self._dir = Path(link_dir) if link_dir is not None else Path(tempfile.mkdtemp(prefix="sam-reader-"))
        self.port = str(self._dir / "ttySAM0")
        self._lock = threading.Lock()
        self._card: SampleCard | None = sample(initial_card) if initial_card else None
        self._selected = False
        self._faults: deque[tuple[str, tuple[Command, ...] | None]] = deque()
        self._raw_replies: deque[bytes] = deque()
        self._want_plugged = True
        self._plugged = False
        self._master = -1
        self._slave = -1
        self._wake_r, self._wake_w = os.pipe()
        self._stop = threading.Event()
        self._changed = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        #: requests received, by command label ("unknown" for others); replies sent, by fault applied
        self.requests: Counter[str] = Counter()
        self.faults_applied: Counter[str] = Counter()

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> SamEmulator:
        if self._thread is None:
            with self._lock:
                self._plug()
            self._thread = threading.Thread(target=self._run, name="sam-emulator", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout=_CONTROL_TIMEOUT_S)
            self._thread = None
        with self._lock:
            self._unplug()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self._own_dir:
            with contextlib.suppress(OSError):
                self._dir.rmdir()

    def __enter__(self) -> SamEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control API -----------------------------------------------------------------------------

    def present_card(self, name: str) -> None:
        card = sample(name)  # KeyError naming the samples for an unknown one
        with self._lock:
            self._card = card
            self._selected = self._halted = False

    def remove_card(self) -> None:
        with self._lock:
            self._card = None
            self._selected = self._halted = False

    def inject(self, fault: str, count: int = 1, *, command: str | None = None) -> None:
        """Spoil the next ``count`` replies (to ``command`` only: find, select, read, address, sam)."""
        fault = FAULT_ALIASES.get(fault, fault)
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; the faults are: {', '.join(FAULTS)}")
        if not 1 <= count <= 1000:
            raise ValueError("count must be 1..1000")
        if command is not None and command not in TARGETS:
            raise ValueError(f"unknown command {command!r}; use one of: {', '.join(TARGETS)}")
        target = TARGETS[command] if command else None
        with self._lock:
            self._faults.extend([(fault, target)] * count)

    def reply_with(self, raw: bytes) -> None:
        """Answer the next request with exactly these bytes (fuzzing the driver)."""
        with self._lock:
            self._raw_replies.append(bytes(raw))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._raw_replies.clear()

    def unplug(self) -> None:
        self._set_plugged(False)

    def replug(self) -> None:
        self._set_plugged(True)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "port": self.port,
                "plugged": self._plugged,
                "card": self._card.key if self._card else None,
                "pending_faults": [f for f, _ in self._faults],
                "baudrate": self.baudrate,
                "pace": self.pace,
            }

    def _set_plugged(self, plugged: bool) -> None:
        with self._changed:
            self._want_plugged = plugged
            if self._thread is None:
                (self._plug if plugged else self._unplug)()
                return
            self._poke()
            if not self._changed.wait_for(lambda: self._plugged == plugged, timeout=_CONTROL_TIMEOUT_S):
                raise RuntimeError("the SAM emulator did not change its plug state in time")

    def _poke(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")

    # --- the pty (call with the lock held) -------------------------------------------------------

    def _plug(self) -> None:
        if self._plugged:
            return
        self._master, self._slave = os.openpty()
        # Raw from the start: a cooked pty would echo the driver's requests back to it.
        tty.setraw(self._slave)
        tmp = self._dir / f".ttySAM0.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(self._slave))
        os.replace(tmp, self.port)
        self._plugged = True
        self._selected = False
        self._changed.notify_all()

    def _unplug(self) -> None:
        if not self._plugged:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.port)
        # Closing both ends hangs the pty up: the driver's next read or write fails like a yanked cable.
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._master = self._slave = -1
        self._plugged = False
        self._changed.notify_all()

    # --- the emulator thread ---------------------------------------------------------------------

    def _run(self) -> None:
        decoder = FrameDecoder()
        while not self._stop.is_set():
            with self._changed:
                if self._want_plugged != self._plugged:
                    (self._plug if self._want_plugged else self._unplug)()
                    decoder.reset()
                master = self._master
            fds = [self._wake_r] + ([master] if master >= 0 else [])
            try:
                ready, _, _ = select.select(fds, [], [], 0.2)
            except (OSError, ValueError):
                continue  # an fd closed under us by stop(): loop and notice
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 512)
                continue
            if master not in ready:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:
                time.sleep(0.05)
                continue
            decoder.feed(data)
            try:
                self._serve(decoder, master)
            except Exception:  # the emulator must outlive any request; a bug here is logged, not fatal
                log.exception("SAM emulator: failed to serve a request")

    def _serve(self, decoder: FrameDecoder, master: int) -> None:
        while True:
            try:
                bodies = list(decoder.frames())
            except e.BadChecksum:
                self._reply(master, SamResponse(0, 0, 0x10).encode())
                continue
            except e.FrameError:
                self._reply(master, SamResponse(0, 0, 0x11).encode())
                continue
            for body in bodies:
                try:
                    command = parse_request(body).command
                except e.FrameError:
                    self._reply(master, SamResponse(0, 0, 0x11).encode(), None)
                    continue
                self._reply(master, self._answer(command), command)
            return

    def _answer(self, command: Command | None, *, wait: bool = True) -> bytes:
        self.requests[command.label if command else "unknown"] += 1
        if wait and command in _RF_COMMANDS:
            self._sleep(self.sam_latency_s)
        with self._lock:
            card, selected = self._card, self._selected
            if command is Command.FIND_CARD and self._halted:
                card = None
            if command is Command.SELECT_CARD and card is not None:
                self._selected = True
            if command in (Command.RESET_SAM, Command.FIND_CARD):
                self._selected = False
            if (
                command in (Command.READ_TEXT_PHOTO, Command.READ_TEXT_PHOTO_FINGERPRINT)
                and card
                and selected
            ):
                self._halted = self.halt_after_read
        match command:
            case None:
                return SamResponse(0, 0, 0x21).encode()
            case Command.RESET_SAM | Command.SAM_STATUS:
                return SamResponse(0, 0, SW3_OK).encode()
            case Command.SAM_ID:
                return SamResponse(0, 0, SW3_OK, encode_sam_id(self.sam_id)).encode()
            case Command.FIND_CARD:
                return SamResponse(0, 0, SW3_CARD_FOUND if card else 0x80, bytes(4)).encode()
            case Command.SELECT_CARD:
                return SamResponse(0, 0, SW3_OK if card else 0x81, bytes(8)).encode()
            case Command.READ_TEXT_PHOTO | Command.READ_TEXT_PHOTO_FINGERPRINT:
                if card is None or not selected:
                    return SamResponse(0, 0, 0x41).encode()
                fp = command is Command.READ_TEXT_PHOTO_FINGERPRINT
                return SamResponse(
                    0, 0, SW3_OK, encode_card_blocks(card.blocks(), with_fingerprint=fp)
                ).encode()
            case Command.READ_ADDITIONAL_ADDRESS:
                if card is None or not selected:
                    return SamResponse(0, 0, 0x41).encode()
                block = card.address_block()
                return SamResponse(0, 0, SW3_OK if block else 0x91, block).encode()
        return SamResponse(0, 0, 0x21).encode()  # pragma: no cover - every Command is matched above

    def _take_fault(self, command: Command | None) -> str | None:
        for i, (fault, target) in enumerate(self._faults):
            if target is None or command in target:
                del self._faults[i]
                return fault
        return None

    def _reply(self, master: int, frame: bytes, command: Command | None) -> None:
        data, delay = self._outgoing(frame, command)
        if data is None:
            return
        if delay and not self._sleep(delay):
            return
        self._send(master, data)

    def _outgoing(
        self, frame: bytes, command: Command | None, *, check_line: bool = True
    ) -> tuple[bytes | None, float]:
        """What goes back for ``frame``, after the faults waiting for ``command``: (bytes or None for
        silence, seconds to wait before sending). Shared by the pty and the USB device."""
        with self._lock:
            raw = self._raw_replies.popleft() if self._raw_replies else None
            fault = self._take_fault(command) if raw is None else None
        if raw is not None:
            self.faults_applied["raw"] += 1
            return raw, 0.0
        if fault is None and check_line and not self._line_speed_ok():
            # A UART at the wrong speed receives and sends garbage of about the right length.
            self.faults_applied["baudrate_mismatch"] += 1
            fault = "garble"
        if fault is None:
            return frame, 0.0
        self.faults_applied[fault] += 1
        log.debug("SAM emulator: injecting %s", fault)
        match fault:
            case "noise":
                # Line garbage, including a broken preamble, before a good reply.
                noise = bytes(self._rng.randrange(256) for _ in range(self._rng.randint(4, 40)))
                return noise + b"\xaa\xaa\x96" + frame, 0.0
            case "bad_checksum":
                return frame[:-1] + bytes([frame[-1] ^ 0x5A]), 0.0
            case "truncated":
                return frame[: max(1, len(frame) // 2)], 0.0
            case "slow":
                return frame, self.slow_reply_s
            case "silence":
                return None, 0.0
            case "read_failed":
                return SamResponse(0, 0, 0x41).encode(), 0.0
            case _:  # "garble"
                return bytes(self._rng.randrange(256) for _ in frame).replace(b"\xaa", b"\x55"), 0.0

    def _line_speed_ok(self) -> bool:
        """Whether the host opened the port at our baud rate: termios settings belong to the tty, so the
        emulator sees on its own slave fd what the driver's pyserial configured."""
        speed = getattr(termios, f"B{self.baudrate}", None)
        try:
            attrs = termios.tcgetattr(self._slave)
        except (termios.error, OSError):
            return True
        return speed is None or attrs[5] == speed

    def _sleep(self, seconds: float) -> bool:
        """Wait, but give up early (False) when stopping or the plug state is to change."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self._stop.is_set() or self._want_plugged != self._plugged:
                return False
            time.sleep(min(left, 0.02))
        return True

    def _send(self, master: int, data: bytes) -> None:
        """Write at the UART's pace: 10 bits per byte at ``baudrate``."""
        start = time.monotonic()
        chunk = 32
        try:
            for i in range(0, len(data), chunk):
                if self.pace:
                    due = start + (i * 10) / self.baudrate
                    if (wait := due - time.monotonic()) > 0:
                        time.sleep(wait)
                os.write(master, data[i : i + chunk])
            if self.pace:
                # The last chunk takes its own wire time too before the reader has all of it.
                due = start + len(data) * 10 / self.baudrate
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
        except OSError as exc:
            log.debug("SAM emulator: reply not delivered (%s)", exc)


# --- the same reader on USB bulk endpoints ------------------------------------------------------------

USB_SIM_VENDOR_ID = 0x0400
USB_SIM_PRODUCT_ID = 0xC35A
_ENODEV, _ETIMEDOUT = 19, 110


class _Endpoint:
    def __init__(self, address: int, attributes: int, packet: int) -> None:
        self.bEndpointAddress = address
        self.bmAttributes = attributes
        self.wMaxPacketSize = packet


class _Configuration:
    """``dev.get_active_configuration()``: ``config[(interface, alternate)]`` iterates the endpoints."""

    def __init__(self, endpoints: list[_Endpoint]) -> None:
        self._endpoints = endpoints

    def __getitem__(self, key: tuple[int, int]) -> list[_Endpoint]:
        if key != (0, 0):
            raise KeyError(key)
        return self._endpoints


class SamUsbDevice:
    """A SAM reader in USB bulk mode, with pyusb's ``Device`` interface: ``write(ep, data, timeout)``
    takes request frames, ``read(ep, size, timeout)`` returns the reply at most one packet at a time and
    raises pyusb's own ``USBTimeoutError`` when nothing is there, ``USBError`` (ENODEV) once unplugged.

    Cards, faults (``inject``), raw replies and SAM latency are those of the ``SamEmulator`` it wraps
    (not started: no pty). ``api()`` is the ``UsbApi`` that finds it, for ``UsbTransport(api=...)``.
    Bulk endpoints 0x81 (IN) and 0x02 (OUT), 64-byte packets, as a full-speed device has.
    """

    def __init__(
        self,
        emulator: SamEmulator | None = None,
        *,
        vendor_id: int = USB_SIM_VENDOR_ID,
        product_id: int = USB_SIM_PRODUCT_ID,
        packet: int = 64,
        endpoints: list[tuple[int, int]] | None = None,
        kernel_driver: bool = True,
    ) -> None:
        self.emulator = emulator or SamEmulator(pace=False)
        self.idVendor = vendor_id
        self.idProduct = product_id
        self.packet = packet
        spec = endpoints if endpoints is not None else [(0x81, 0x02), (0x02, 0x02)]
        self._config = _Configuration([_Endpoint(a, t, packet) for a, t in spec])
        self._lock = threading.Lock()
        self._decoder = FrameDecoder()
        self._out: deque[tuple[float, bytes]] = deque()  # (when it may be read, bytes)
        self._plugged = True
        self.kernel_driver_active = kernel_driver
        self.configured = False
        self.claimed: set[int] = set()
        self.disposed = 0
        #: transfers seen, for tests: ("write"|"read", endpoint, byte count)
        self.transfers: list[tuple[str, int, int]] = []

    # --- pyusb's Device ----------------------------------------------------------------------------

    def _check_plugged(self) -> None:
        if not self._plugged:
            import usb.core

            raise usb.core.USBError("No such device (it may have been disconnected)", -4, _ENODEV)

    def is_kernel_driver_active(self, interface: int) -> bool:
        self._check_plugged()
        return self.kernel_driver_active

    def detach_kernel_driver(self, interface: int) -> None:
        self._check_plugged()
        self.kernel_driver_active = False

    def set_configuration(self, configuration: int | None = None) -> None:
        self._check_plugged()
        self.configured = True

    def get_active_configuration(self) -> _Configuration:
        self._check_plugged()
        if not self.configured:
            import usb.core

            raise usb.core.USBError("Configuration not set", None, None)
        return self._config

    def write(self, endpoint: int, data: bytes, timeout: int | None = None) -> int:
        self._check_plugged()
        self.transfers.append(("write", endpoint, len(data)))
        self._decoder.feed(bytes(data))
        emu = self.emulator
        while True:
            try:
                bodies = list(self._decoder.frames())
            except e.BadChecksum:
                self._queue(SamResponse(0, 0, 0x10).encode(), 0.0)
                continue
            except e.FrameError:
                self._queue(SamResponse(0, 0, 0x11).encode(), 0.0)
                continue
            for body in bodies:
                try:
                    command = parse_request(body).command
                except e.FrameError:
                    command = None
                frame = emu._answer(command, wait=False)
                latency = emu.sam_latency_s if command in _RF_COMMANDS else 0.0
                data_out, delay = emu._outgoing(frame, command, check_line=False)
                if data_out is not None:
                    self._queue(data_out, latency + delay)
            return len(data)

    def read(self, endpoint: int, size_or_buffer: int, timeout: int | None = None) -> bytes:
        import usb.core

        self._check_plugged()
        deadline = time.monotonic() + (timeout or 1000) / 1000
        size = min(int(size_or_buffer), self.packet)
        while True:
            with self._lock:
                if self._out and self._out[0][0] <= time.monotonic():
                    when, data = self._out.popleft()
                    chunk, rest = data[:size], data[size:]
                    if rest:
                        self._out.appendleft((when, rest))
                    self.transfers.append(("read", endpoint, len(chunk)))
                    return chunk
            if time.monotonic() >= deadline:
                raise usb.core.USBTimeoutError("Operation timed out", -7, _ETIMEDOUT)
            time.sleep(0.001)
            self._check_plugged()

    def _queue(self, data: bytes, delay: float) -> None:
        with self._lock:
            self._out.append((time.monotonic() + delay, data))

    # --- the bench: unplug, replug, and the adapter that finds the device --------------------------

    def unplug(self) -> None:
        with self._lock:
            self._plugged = False
            self._out.clear()
        self._decoder.reset()

    def replug(self) -> None:
        with self._lock:
            self._plugged = True
            self.configured = False
            self.claimed.clear()
            self.kernel_driver_active = True

    def api(self) -> Any:
        """The ``UsbApi`` a ``UsbTransport`` uses to find this device (None while unplugged)."""
        from drivers.card_reader.transport import UsbApi

        def find(*, idVendor: int, idProduct: int) -> SamUsbDevice | None:  # noqa: N803 - pyusb's names
            if self._plugged and (idVendor, idProduct) == (self.idVendor, self.idProduct):
                return self
            return None

        def claim(dev: SamUsbDevice, interface: int) -> None:
            dev._check_plugged()
            dev.claimed.add(interface)

        def dispose(dev: SamUsbDevice) -> None:
            dev.claimed.clear()
            dev.disposed += 1

        return UsbApi(find, claim, dispose)


def control(emulator: SamEmulator, action: str, params: dict[str, Any]) -> dict[str, Any]:
    """One control action by name, for ``kiosk sim`` over the local bus. ValueError for bad requests."""
    match action:
        case "present":
            name = params.get("card")
            if not isinstance(name, str):
                raise ValueError(f"'card' must be one of: {', '.join(SAMPLES)}")
            try:
                emulator.present_card(name)
            except KeyError as exc:
                raise ValueError(str(exc.args[0])) from None
        case "remove":
            emulator.remove_card()
        case "inject":
            count = params.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool):
                raise ValueError("'count' must be an integer")
            target = params.get("command")
            emulator.inject(
                str(params.get("fault", "")), count, command=str(target) if target is not None else None
            )
        case "unplug":
            emulator.unplug()
        case "replug":
            emulator.replug()
        case "samples":
            return {"samples": {k: s.description for k, s in SAMPLES.items()}}
        case "status":
            pass
        case _:
            raise ValueError(
                f"unknown card reader sim action {action!r}; use present, remove, inject, "
                f"unplug, replug, samples or status"
            )
    return emulator.status()
