"""ESC/POS for a thermal receipt printer, both directions, pure (bytes in, values out).

Host side: ``build_receipt(Receipt)`` lays a receipt out with the fixed subset of ESC/POS that Chinese
58/80 mm printers (Xprinter, GPrinter, HPRT, Epson TM-T82 in China) all take:

=================  =============================  ==============================================
``ESC @``          ``1B 40``                      initialise (clears modes, keeps the buffer)
``FS &``/``FS .``  ``1C 26`` / ``1C 2E``          Chinese character mode on / off: text is GB18030
``ESC a n``        ``1B 61 n``                    align 0 left, 1 centre, 2 right
``GS ! n``         ``1D 21 n``                    character size: width (n >> 4) + 1, height (n & 7) + 1
``ESC E n``        ``1B 45 n``                    bold on (1) / off (0)
``GS ( k``         ``1D 28 6B pL pH 31 fn ...``   QR code: 65 model, 67 module size, 69 error level,
                                                  80 store data, 81 print the stored symbol
``GS v 0``         ``1D 76 30 m xL xH yL yH d..``  raster bit image (read by the simulator)
``ESC d n``        ``1B 64 n``                    print and feed n lines
``GS V 66 n``      ``1D 56 42 n``                 feed n dots and cut (partial)
``DLE EOT n``      ``10 04 n``                    real-time status, answered with one byte
=================  =============================  ==============================================

Real-time status (``DLE EOT n``, answered even while the printer is offline): each answer byte has bit 1
and bit 4 set and bits 0 and 7 clear (``b & 0x93 == 0x12``); any other byte is not a status answer.

====  ===============  ====================================================
n     asks             bits
====  ===============  ====================================================
1     printer          3: offline
2     offline cause    2: cover open, 3: feed button, 5: stopped by paper end, 6: error
3     error cause      3: cutter error, 5: unrecoverable error, 6: auto-recoverable error
4     roll paper       2+3: paper near end, 5+6: paper end
====  ===============  ====================================================

Device side (the simulator): ``EscPosDecoder`` turns any byte stream, cut anywhere, into ``Command``
values; garbage becomes ``Unknown`` and never raises, pending bytes stay bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from drivers.printer.errors import ReceiptError, StatusError

ESC, GS, FS, DLE, EOT, LF = 0x1B, 0x1D, 0x1C, 0x10, 0x04, 0x0A
INIT = b"\x1b@"
CHINESE_ON = b"\x1c&"
CHINESE_OFF = b"\x1c."
ENCODING = "gb18030"

ALIGN_LEFT, ALIGN_CENTRE, ALIGN_RIGHT = 0, 1, 2
QR_ERROR_LEVELS = {"L": 48, "M": 49, "Q": 50, "H": 51}
MAX_QR_DATA = 512  # what the receipt needs; the symbol itself holds up to 7089 digits
MAX_FIELD_CHARS = 64


def align(n: int) -> bytes:
    return bytes((ESC, 0x61, n))


def size(width: int = 1, height: int = 1) -> bytes:
    if not (1 <= width <= 8 and 1 <= height <= 8):
        raise ReceiptError(f"character size {width}x{height} is outside 1..8")
    return bytes((GS, 0x21, (width - 1) << 4 | (height - 1)))


def bold(on: bool) -> bytes:
    return bytes((ESC, 0x45, 1 if on else 0))


def feed(lines: int) -> bytes:
    return bytes((ESC, 0x64, max(0, min(255, lines))))


def cut(feed_dots: int = 0) -> bytes:
    return bytes((GS, 0x56, 66, max(0, min(255, feed_dots))))


def text(value: str) -> bytes:
    return value.encode(ENCODING)


def _qr_function(fn: int, params: bytes) -> bytes:
    n = len(params) + 2
    return bytes((GS, 0x28, 0x6B, n & 0xFF, n >> 8, 49, fn)) + params


def qr_code(data: str, *, module_dots: int = 6, error: str = "M") -> bytes:
    """Model 2 QR symbol of ``data`` (UTF-8), stored then printed at the current alignment."""
    raw = data.encode("utf-8")
    if not raw:
        raise ReceiptError("nothing to encode in the receipt's QR code")
    if len(raw) > MAX_QR_DATA:
        raise ReceiptError(f"the QR data is {len(raw)} bytes; at most {MAX_QR_DATA} are printed")
    if not 1 <= module_dots <= 16:
        raise ReceiptError(f"QR module size {module_dots} is outside 1..16 dots")
    return (
        _qr_function(65, b"\x32\x00")  # model 2
        + _qr_function(67, bytes((module_dots,)))
        + _qr_function(69, bytes((QR_ERROR_LEVELS[error],)))
        + _qr_function(80, b"\x30" + raw)
        + _qr_function(81, b"\x30")
    )


def status_request(n: int) -> bytes:
    if n not in (1, 2, 3, 4):
        raise ValueError(f"DLE EOT {n}: n must be 1..4")
    return bytes((DLE, EOT, n))


# --- the receipt ------------------------------------------------------------------------------------


def clean(value: Any, name: str, limit: int = MAX_FIELD_CHARS) -> str:
    """A receipt field as printable text: a ``str`` with no control characters (an ESC or GS in a
    department name must not become a printer command), at most ``limit`` characters."""
    if not isinstance(value, str):
        raise ReceiptError(f"receipt field {name} must be text, got {type(value).__name__}")
    value = "".join(ch if ch.isprintable() else " " for ch in value).strip()
    if len(value) > limit:
        raise ReceiptError(f"receipt field {name} is {len(value)} characters; at most {limit} are printed")
    try:
        value.encode(ENCODING)
    except UnicodeEncodeError:  # lone surrogates: the only text GB18030 cannot carry
        raise ReceiptError(f"receipt field {name} holds characters the printer cannot print") from None
    return value


@dataclass(frozen=True)
class Receipt:
    """What a receipt holds. No personal data beyond ``name_masked`` ("张*"): no ID number, full name,
    address or birth date ever reaches the printer."""

    title: str  # 办事回执 / 预约凭条
    site: str
    item: str
    number_label: str  # 申请编号 / 预约号
    number: str
    date: str
    department: str
    name_masked: str
    qr_url: str
    extra: tuple[tuple[str, str], ...] = ()  # more labelled lines (预约时间)
    footer: str = "微信或手机扫码查询办理进度"

    def checked(self) -> Receipt:
        """The same receipt with every field cleaned; ``ReceiptError`` names the first bad one."""
        fields = {
            name: clean(getattr(self, name), name)
            for name in ("title", "site", "item", "number_label", "number", "date", "department")
        }
        fields["name_masked"] = clean(self.name_masked, "name_masked", 8)
        fields["footer"] = clean(self.footer, "footer")
        fields["qr_url"] = clean(self.qr_url, "qr_url", MAX_QR_DATA)
        if not isinstance(self.extra, tuple) or len(self.extra) > 4:
            raise ReceiptError("receipt extra lines must be a tuple of at most 4 (label, value) pairs")
        extra = tuple((clean(k, "extra label", 16), clean(v, "extra value")) for k, v in self.extra)
        return Receipt(**fields, extra=extra)

    def lines(self) -> list[tuple[str, str]]:
        """The labelled lines in print order."""
        return [
            ("事项", self.item),
            (self.number_label, self.number),
            *self.extra,
            ("部门", self.department),
            ("申请人", self.name_masked),
            ("日期", self.date),
        ]


def build_receipt(receipt: Receipt, *, paper_dots: int = 384, qr_module_dots: int = 6) -> bytes:
    """The ESC/POS bytes of one receipt, from initialise to cut."""
    r = receipt.checked()
    rule = "-" * (paper_dots // 12)  # 12-dot ASCII cells in font A
    out = bytearray(INIT + CHINESE_ON)
    out += align(ALIGN_CENTRE) + size(2, 2) + bold(True) + text(r.title) + b"\n"
    out += size(1, 1) + bold(False) + text(r.site) + b"\n"
    out += align(ALIGN_LEFT) + text(rule) + b"\n"
    for label, value in r.lines():
        out += text(f"{label}：{value}") + b"\n"
    out += text(rule) + b"\n"
    out += align(ALIGN_CENTRE) + qr_code(r.qr_url, module_dots=qr_module_dots) + b"\n"
    out += text(r.footer) + b"\n"
    out += align(ALIGN_LEFT) + feed(3) + cut()
    return bytes(out)


# --- real-time status ---------------------------------------------------------------------------------


def _check(n: int, b: int) -> int:
    if not isinstance(b, int) or not 0 <= b <= 0xFF or b & 0x93 != 0x12:
        raise StatusError(
            f"DLE EOT {n} was answered with {b!r:.8}, not a status byte (bits 1 and 4 set, 0 and 7 clear): "
            "check that the port is the printer's and that its baud rate matches"
        )
    return b


@dataclass(frozen=True)
class PrinterStatus:
    """The printer's state from DLE EOT 1, 2, 4 (and 3 when asked)."""

    offline: bool = False
    cover_open: bool = False
    paper_end: bool = False
    paper_near_end: bool = False
    error: bool = False
    cutter_error: bool = False

    @classmethod
    def from_answers(cls, answers: dict[int, int]) -> PrinterStatus:
        """``{n: byte}`` for the requests that were answered; ``StatusError`` for a byte that is not one."""
        b1 = _check(1, answers[1]) if 1 in answers else 0x12
        b2 = _check(2, answers[2]) if 2 in answers else 0x12
        b3 = _check(3, answers[3]) if 3 in answers else 0x12
        b4 = _check(4, answers[4]) if 4 in answers else 0x12
        return cls(
            offline=bool(b1 & 0x08),
            cover_open=bool(b2 & 0x04),
            paper_end=bool(b4 & 0x60) or bool(b2 & 0x20),
            paper_near_end=bool(b4 & 0x0C),
            error=bool(b2 & 0x40) or bool(b3 & 0x60),
            cutter_error=bool(b3 & 0x08),
        )

    def answers(self) -> dict[int, int]:
        """The bytes a printer in this state answers (the simulator's side)."""
        stopped = self.offline or self.cover_open or self.paper_end or self.error or self.cutter_error
        return {
            1: 0x12 | (0x08 if stopped else 0),
            2: 0x12
            | (0x04 if self.cover_open else 0)
            | (0x20 if self.paper_end else 0)
            | (0x40 if self.error or self.cutter_error else 0),
            3: 0x12 | (0x08 if self.cutter_error else 0) | (0x20 if self.error else 0),
            4: 0x12 | (0x0C if self.paper_near_end else 0) | (0x60 if self.paper_end else 0),
        }

    @property
    def ready(self) -> bool:
        return not (self.offline or self.cover_open or self.paper_end or self.error or self.cutter_error)

    def as_dict(self) -> dict[str, bool]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# --- the device side: a decoder for whatever arrives ------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One decoded ESC/POS command. ``name`` is one of: text, lf, init, chinese, align, size, bold,
    print_mode, feed, cut, qr_model, qr_size, qr_error, qr_store, qr_print, raster, status, code_page,
    unknown."""

    name: str
    value: Any = None
    raw: bytes = field(default=b"", repr=False)


MAX_PENDING = 64 * 1024  # bytes of one unfinished command kept at most (a raster of 576 x 900 dots)
MAX_TEXT = 4096  # text bytes gathered before they are handed on regardless
_ONE_BYTE_ESC = {0x61: "align", 0x45: "bold", 0x64: "feed", 0x74: "code_page", 0x21: "print_mode"}


class EscPosDecoder:
    """Incremental: ``feed(bytes)`` returns the commands completed so far. A command cut between two
    ``feed`` calls is completed by the next one; text stays pending until a control byte ends it."""

    def __init__(self, *, chinese: bool = False) -> None:
        self._buf = bytearray()
        self.chinese = chinese
        self.rejected = 0  # bytes skipped as unknown or oversized

    @property
    def pending(self) -> int:
        return len(self._buf)

    def reset(self) -> None:
        self._buf.clear()

    def feed(self, data: bytes) -> list[Command]:
        self._buf += data
        out: list[Command] = []
        while self._buf:
            taken = self._one(out)
            if taken == 0:  # incomplete: wait for more
                break
            del self._buf[:taken]
        if len(self._buf) > MAX_PENDING:
            # A declared length that never completes: drop it rather than grow without end.
            self.rejected += len(self._buf)
            out.append(Command("unknown", "oversized", bytes(self._buf[:16])))
            self._buf.clear()
        return out

    def _text(self, raw: bytes) -> Command:
        return Command("text", raw.decode(ENCODING if self.chinese else "latin-1", errors="replace"), raw)

    def _unknown(self, out: list[Command], n: int) -> int:
        self.rejected += n
        out.append(Command("unknown", bytes(self._buf[:n]).hex(" "), bytes(self._buf[:n])))
        return n

    def _one(self, out: list[Command]) -> int:
        b = self._buf
        c = b[0]
        if c >= 0x20:
            end = 0
            while end < len(b) and b[end] >= 0x20 and end < MAX_TEXT:
                end += 1
            if end == len(b) and end < MAX_TEXT:
                return 0  # the text may go on in the next chunk
            out.append(self._text(bytes(b[:end])))
            return end
        if c == LF:
            out.append(Command("lf", raw=b"\n"))
            return 1
        if c == 0x0D:
            return 1  # CR: ignored, as printers in LF mode do
        if len(b) < 2:
            return 0
        d = b[1]
        if c == DLE:
            if d != EOT:
                return self._unknown(out, 1)
            if len(b) < 3:
                return 0
            if b[2] not in (1, 2, 3, 4):
                return self._unknown(out, 3)
            out.append(Command("status", b[2], bytes(b[:3])))
            return 3
        if c == FS:
            if d in (0x26, 0x2E):
                self.chinese = d == 0x26
                out.append(Command("chinese", self.chinese, bytes(b[:2])))
                return 2
            return self._unknown(out, 2)
        if c == ESC:
            if d == 0x40:
                self.chinese = False
                out.append(Command("init", raw=bytes(b[:2])))
                return 2
            if d in _ONE_BYTE_ESC:
                if len(b) < 3:
                    return 0
                out.append(Command(_ONE_BYTE_ESC[d], b[2], bytes(b[:3])))
                return 3
            return self._unknown(out, 2)
        if c == GS:
            return self._gs(out)
        return self._unknown(out, 1)

    def _gs(self, out: list[Command]) -> int:
        b = self._buf
        d = b[1]
        if d == 0x21:
            if len(b) < 3:
                return 0
            out.append(Command("size", ((b[2] >> 4) + 1, (b[2] & 7) + 1), bytes(b[:3])))
            return 3
        if d == 0x56:  # GS V m / GS V m n
            if len(b) < 3:
                return 0
            m = b[2]
            if m in (0, 1, 48, 49):
                out.append(Command("cut", 0, bytes(b[:3])))
                return 3
            if m in (65, 66):
                if len(b) < 4:
                    return 0
                out.append(Command("cut", b[3], bytes(b[:4])))
                return 4
            return self._unknown(out, 3)
        if d == 0x28:  # GS ( k pL pH cn fn ...
            if len(b) < 5:
                return 0
            if b[2] != 0x6B:
                return self._unknown(out, 3)
            n = b[3] | b[4] << 8
            total = 5 + n
            if n < 2 or n > MAX_QR_DATA + 3 + 64:
                return self._unknown(out, 5)
            if len(b) < total:
                return 0
            cn, fn, params = b[5], b[6], bytes(b[7:total])
            raw = bytes(b[:total])
            if cn != 49:
                return self._unknown(out, total)
            if fn == 65 and params:
                out.append(Command("qr_model", params[0], raw))
            elif fn == 67 and params:
                out.append(Command("qr_size", params[0], raw))
            elif fn == 69 and params:
                out.append(Command("qr_error", params[0], raw))
            elif fn == 80 and params[:1] == b"\x30":
                out.append(Command("qr_store", params[1:], raw))
            elif fn == 81:
                out.append(Command("qr_print", None, raw))
            else:
                return self._unknown(out, total)
            return total
        if d == 0x76:  # GS v 0 m xL xH yL yH data
            if len(b) < 8:
                return 0
            if b[2] != 0x30:
                return self._unknown(out, 3)
            width_bytes, rows = b[4] | b[5] << 8, b[6] | b[7] << 8
            total = 8 + width_bytes * rows
            if width_bytes == 0 or rows == 0 or width_bytes > 72 or total > MAX_PENDING:
                return self._unknown(out, 8)
            if len(b) < total:
                return 0
            out.append(Command("raster", (width_bytes, rows, bytes(b[8:total])), bytes(b[:8])))
            return total
        return self._unknown(out, 2)
