"""A thermal receipt printer on a pty: it decodes the ESC/POS it receives, renders each receipt to an
image the way the print head would (384 or 576 dots wide, CJK text from a Debian font, QR symbols
encoded by the printer itself) and answers DLE EOT status requests.

Faults, injected from tests or ``kiosk sim printer fault NAME``:

==========  =====================================================================================
no_paper    the roll is empty: status says paper end, printed data is thrown away (no image)
near_end    the paper-near-end sensor is on: it still prints
cover_open  status says cover open; nothing is printed
offline     switched off or hung: the printer reads and answers nothing at all
==========  =====================================================================================

    with PrinterSimulator(out_dir=tmp_path) as sim:
        ...  # open sim.port with the serial transport
        sim.inject("no_paper")
        sim.receipts[-1].image  # a PIL image of the last cut receipt, saved as receipt-0001.png
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import tempfile
import threading
import tty
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.printer.config import SIM_FAULTS
from drivers.printer.protocol import Command, EscPosDecoder, PrinterStatus

log = logging.getLogger("kiosk.sim.printer")

#: fonts with CJK glyphs on Debian, first found wins (fonts-wqy-zenhei, fonts-noto-cjk, fonts-wqy-microhei)
FONT_PATHS = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)
CELL = 24  # font A: 12 x 24 dots ASCII, 24 x 24 dots for a Chinese character
LINE_GAP = 6
MAX_RECEIPT_ROWS = 4000  # dots of paper at most per receipt (a runaway stream is cut here)
BUFFER_COMMANDS = 10_000  # the receive buffer, in commands; beyond it data is lost (counted)


def find_font() -> str | None:
    return next((p for p in FONT_PATHS if os.path.exists(p)), None)


@dataclass
class PrintedReceipt:
    """One receipt as it came out of the printer: the image, the commands, the text lines and QR data."""

    number: int
    image: Any  # PIL.Image.Image (mode "1": black dots on white)
    commands: list[Command]
    lines: list[str]
    qr_data: list[str]
    path: Path | None = None


@dataclass
class _Paper:
    """The print head's state and what it has put on paper since the last cut."""

    width: int
    font_path: str | None
    align: int = 0
    width_mult: int = 1
    height_mult: int = 1
    bold: bool = False
    qr_module: int = 3
    qr_error: str = "L"
    qr_data: bytes = b""
    line: str = ""
    rows: list[Any] = field(default_factory=list)  # PIL images, one per printed line / symbol
    lines: list[str] = field(default_factory=list)
    qrs: list[str] = field(default_factory=list)
    height: int = 0
    _fonts: dict[int, Any] = field(default_factory=dict)

    def font(self, px: int) -> Any:
        from PIL import ImageFont

        if px not in self._fonts:
            if self.font_path:
                self._fonts[px] = ImageFont.truetype(self.font_path, px)
            else:
                self._fonts[px] = ImageFont.load_default(px)
        return self._fonts[px]

    def _place(self, img: Any) -> None:
        from PIL import Image

        if self.height + img.height > MAX_RECEIPT_ROWS:
            return
        row = Image.new("1", (self.width, img.height), 1)
        x = {0: 0, 1: (self.width - img.width) // 2, 2: self.width - img.width}.get(self.align, 0)
        row.paste(img, (max(0, x), 0))
        self.rows.append(row)
        self.height += img.height

    def print_line(self) -> None:
        """One line in the printer's cells: 12 x 24 dots for a narrow character, 24 x 24 for a wide
        (Chinese) one, times the character size; a line wider than the paper wraps, as the printer does."""
        from PIL import Image, ImageDraw

        text, self.line = self.line, ""
        self.lines.append(text)
        cell_h = CELL * self.height_mult
        font = self.font(CELL)
        rows: list[list[tuple[str, int]]] = [[]]
        used = 0
        for ch in text:
            w = (CELL if unicodedata.east_asian_width(ch) in "WF" else CELL // 2) * self.width_mult
            if used + w > self.width and rows[-1]:
                rows.append([])
                used = 0
            rows[-1].append((ch, w))
            used += w
        for row in rows:
            img = Image.new("1", (max(1, sum(w for _, w in row)), cell_h + LINE_GAP), 1)
            x = 0
            for ch, w in row:
                cell = w // self.width_mult
                advance = max(1, int(font.getlength(ch)))
                glyph = Image.new("1", (max(cell, advance + (1 if self.bold else 0)), CELL), 1)
                draw = ImageDraw.Draw(glyph)
                left = max(0, (cell - advance) // 2)
                draw.text((left, 0), ch, font=font, fill=0)
                if self.bold:  # emphasised: struck twice, one dot apart, as the head does
                    draw.text((left + 1, 0), ch, font=font, fill=0)
                if glyph.width > cell:  # a glyph wider than its cell is squeezed into it
                    glyph = glyph.resize((cell, CELL))
                img.paste(glyph.resize((w, cell_h)), (x, 0))
                x += w
            self._place(img.crop((0, 0, min(img.width, self.width), img.height)))

    def feed(self, lines: int) -> None:
        from PIL import Image

        if self.line:
            self.print_line()
        for _ in range(lines):
            self._place(Image.new("1", (1, CELL + LINE_GAP), 1))

    def print_qr(self) -> None:
        import segno
        from PIL import Image

        data = self.qr_data.decode("utf-8", errors="replace")
        if not data:
            return
        try:
            symbol = segno.make(data, error=self.qr_error, boost_error=False, micro=False)
        except Exception:  # noqa: BLE001 - too much data: a printer prints nothing
            return
        self.qrs.append(data)
        m = self.qr_module
        matrix = list(symbol.matrix_iter(scale=1, border=4))
        n = len(matrix)
        img = Image.new("1", (n * m, n * m), 1)
        px = img.load()
        for y, row in enumerate(matrix):
            for x, dark in enumerate(row):
                if dark:
                    for dy in range(m):
                        for dx in range(m):
                            px[x * m + dx, y * m + dy] = 0
        if img.width <= self.width:
            self._place(img)

    def print_raster(self, width_bytes: int, rows: int, data: bytes) -> None:
        from PIL import Image

        img = Image.frombytes("1", (width_bytes * 8, rows), bytes(b ^ 0xFF for b in data))
        self._place(img.crop((0, 0, min(img.width, self.width), rows)))

    def take(self) -> tuple[Any, list[str], list[str]]:
        from PIL import Image

        if self.line:
            self.print_line()
        image = Image.new("1", (self.width, max(1, self.height)), 1)
        y = 0
        for row in self.rows:
            image.paste(row, (0, y))
            y += row.height
        out = (image, self.lines, self.qrs)
        self.rows, self.lines, self.qrs, self.height = [], [], [], 0
        return out


class PrinterSimulator:
    """One simulated printer. ``start()``/``stop()`` (or ``with``); control methods from any thread."""

    def __init__(
        self,
        *,
        paper_dots: int = 384,
        out_dir: str | os.PathLike[str] | None = None,
        link_dir: str | os.PathLike[str] | None = None,
        fault: str | None = None,
        keep: int = 20,
    ) -> None:
        self.paper_dots = paper_dots
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self._own_dir = link_dir is None
        self._dir = Path(link_dir) if link_dir is not None else Path(tempfile.mkdtemp(prefix="printer-"))
        self.port = str(self._dir / "ttyPRN0")
        self.font_path = find_font()
        self._lock = threading.Lock()
        self._faults: set[str] = set()
        if fault:
            self.inject(fault)
        self._keep = keep
        self.receipts: list[PrintedReceipt] = []
        self.printed = 0
        self.discarded_bytes = 0
        self.status_requests = 0
        self._master = self._slave = -1
        self._wake_r, self._wake_w = os.pipe()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._decoder = EscPosDecoder()
        self._paper = _Paper(paper_dots, self.font_path)
        self._commands: list[Command] = []
        self._printed_event = threading.Condition(self._lock)
        # Real-time status is answered on receipt, ahead of printing (as ESC/POS printers do): the
        # print head works through its buffer on a thread of its own.
        self._buffer: queue.Queue[Command | None] = queue.Queue(maxsize=BUFFER_COMMANDS)
        self._head: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> PrinterSimulator:
        if self._thread is None:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)  # a cooked pty would echo the host's bytes back as "status"
            tmp = self._dir / f".ttyPRN0.{os.getpid()}.tmp"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(os.ttyname(self._slave))
            os.replace(tmp, self.port)
            self._thread = threading.Thread(target=self._run, name="printer-sim", daemon=True)
            self._thread.start()
        self._start_head()
        return self

    def _start_head(self) -> None:
        if self._head is None:
            self._head = threading.Thread(target=self._print_head, name="printer-sim-head", daemon=True)
            self._head.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._head is not None:
            with contextlib.suppress(queue.Full):
                self._buffer.put(None, timeout=1)
            self._head.join(timeout=5)
            self._head = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.port)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                if fd >= 0:
                    os.close(fd)
        self._master = self._slave = self._wake_r = self._wake_w = -1
        if self._own_dir:
            with contextlib.suppress(OSError):
                self._dir.rmdir()

    def __enter__(self) -> PrinterSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control API -----------------------------------------------------------------------------

    def inject(self, fault: str) -> None:
        if fault not in SIM_FAULTS:
            raise ValueError(f"unknown printer fault {fault!r}; the faults are: {', '.join(SIM_FAULTS)}")
        with self._lock:
            self._faults.add(fault)

    def clear(self, fault: str | None = None) -> None:
        with self._lock:
            if fault is None:
                self._faults.clear()
            else:
                self._faults.discard(fault)

    def power_cycle(self) -> None:
        """Switch off and on: whatever half-received command was pending is gone."""
        with self._lock:
            self._decoder.reset()

    @property
    def faults(self) -> list[str]:
        with self._lock:
            return sorted(self._faults)

    def state(self) -> PrinterStatus:
        with self._lock:
            f = self._faults
            return PrinterStatus(
                offline="offline" in f,
                cover_open="cover_open" in f,
                paper_end="no_paper" in f,
                paper_near_end="near_end" in f or "no_paper" in f,
            )

    def wait_printed(self, count: int, timeout: float = 5.0) -> bool:
        """Block until ``count`` receipts have been cut (for tests)."""
        with self._printed_event:
            return self._printed_event.wait_for(lambda: self.printed >= count, timeout=timeout)

    def status(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "paper_dots": self.paper_dots,
            "faults": self.faults,
            "printed": self.printed,
            "out_dir": str(self.out_dir) if self.out_dir else None,
            "last": str(self.receipts[-1].path) if self.receipts and self.receipts[-1].path else None,
            "font": self.font_path,
        }

    # --- the printer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._wake_r, self._master], [], [], 0.2)
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 64)
                continue
            if self._master not in ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                self._stop.wait(0.05)
                continue
            try:
                self.receive(data)
            except Exception:  # the printer must outlive any stream; a bug here is logged, not fatal
                log.exception("printer simulator: failed on received bytes")

    def receive(self, data: bytes) -> bytes:
        """Take bytes from the host; returns (and writes to the pty) the status bytes answered."""
        state = self.state()
        if state.offline:
            self.discarded_bytes += len(data)
            return b""  # switched off: nothing is read, nothing answered
        answers = state.answers()
        reply = bytearray()
        with self._lock:
            commands = self._decoder.feed(data)
        for cmd in commands:
            if cmd.name == "status":
                self.status_requests += 1
                reply.append(answers[cmd.value])
            elif not state.ready:
                self.discarded_bytes += len(cmd.raw)  # stopped: the data is lost, as on the hardware
            else:
                self._start_head()  # fed directly (a USB test device) without start()
                try:
                    self._buffer.put_nowait(cmd)
                except queue.Full:
                    self.discarded_bytes += len(cmd.raw)
        if reply and self._master >= 0:
            with contextlib.suppress(OSError):
                os.write(self._master, bytes(reply))
        return bytes(reply)

    def _print_head(self) -> None:
        while True:
            cmd = self._buffer.get()
            if cmd is None:
                return
            try:
                self._execute(cmd)
            except Exception:  # a rendering bug loses that command, never the printer
                log.exception("printer simulator: failed to print %s", cmd.name)

    def _execute(self, cmd: Command) -> None:
        p = self._paper
        self._commands.append(cmd)
        name, v = cmd.name, cmd.value
        if name == "text":
            p.line += v
        elif name == "lf":
            p.print_line()
        elif name == "init":
            p.align, p.width_mult, p.height_mult, p.bold = 0, 1, 1, False
        elif name == "align":
            p.align = v if v in (0, 1, 2) else (v - 48 if v in (48, 49, 50) else p.align)
        elif name == "size":
            p.width_mult, p.height_mult = v
        elif name == "print_mode":
            p.width_mult, p.height_mult = (2 if v & 0x20 else 1), (2 if v & 0x10 else 1)
        elif name == "bold":
            p.bold = bool(v & 1)
        elif name == "feed":
            p.feed(v)
        elif name == "qr_size":
            p.qr_module = max(1, min(16, v))
        elif name == "qr_error":
            p.qr_error = {48: "L", 49: "M", 50: "Q", 51: "H"}.get(v, p.qr_error)
        elif name == "qr_store":
            p.qr_data = v
        elif name == "qr_print":
            p.print_qr()
        elif name == "raster":
            p.print_raster(*v)
        elif name == "cut":
            self._cut()

    def _cut(self) -> None:
        image, lines, qrs = self._paper.take()
        commands, self._commands = self._commands, []
        number = self.printed + 1
        path = None
        if self.out_dir is not None:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                path = self.out_dir / f"receipt-{number:04d}.png"
                image.save(path)
            except OSError as exc:
                log.warning("printer simulator: cannot save %s: %s", path, exc)
                path = None
        with self._printed_event:
            self.receipts.append(PrintedReceipt(number, image, commands, lines, qrs, path))
            del self.receipts[: -self._keep]
            self.printed = number
            self._printed_event.notify_all()
