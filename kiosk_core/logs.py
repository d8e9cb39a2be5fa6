"""Structured, journald-friendly logs with personal data and secrets masked.

One line per record: ``<priority>logger: message`` under systemd (``JOURNAL_STREAM`` set, so journald
picks the level from the prefix), ``time level logger: message`` on a terminal. Masking runs on the
final text, so no handler or format string can leak an ID number. The last ``tail_lines`` masked lines
are kept in memory for the ``collect_logs`` command.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import sys
from typing import Any

# GB 11643 resident ID numbers: 18 characters (17 digits + a MOD 11-2 check character 0-9/X) and the
# 15-digit first-generation numbers, not part of a longer run of digits or letters (so an order number
# inside "SO330803199001011234" is left alone, "身份证330803199001011234。" is not).
_ID18 = re.compile(r"(?<![A-Za-z\d])\d{17}[\dXx](?![A-Za-z\d])")
_ID15 = re.compile(r"(?<![A-Za-z\d])\d{15}(?![A-Za-z\d])")
_SECRET = re.compile(
    r"""(?ix)
    (["']?(?:password|passwd|secret|token|pin|private[_-]?key|api[_-]?key)["']?\s*[=:]\s*)
    ("[^"]*"|'[^']*'|[^\s,;}]+)"""
)


_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))  # 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2


def check_digit(first17: str) -> str:
    """The 18th character of a citizen identity number (GB 11643-1999, ISO 7064 MOD 11-2)."""
    if len(first17) != 17 or not first17.isascii() or not first17.isdigit():
        raise ValueError("the check digit needs exactly 17 ASCII digits")
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    value = (12 - total % 11) % 11
    return "X" if value == 10 else str(value)


def has_valid_check_digit(number: str) -> bool:
    return (
        len(number) == 18
        and number[:17].isascii()
        and number[:17].isdigit()
        and number[17] == check_digit(number[:17])
    )


def mask_id_number(number: str) -> str:
    """``330803199003071234`` -> ``3308**********1234``: the only form of a number fit for logs and
    events. Eight characters or fewer are starred entirely."""
    if len(number) <= 8:
        return "*" * len(number)
    return number[:4] + "*" * (len(number) - 8) + number[-4:]


def _ascii_digits(run: str) -> str:
    # Full-width digits (an IME's ０-９) are digits too: 0-9 and X for the checks below.
    return "".join("X" if c in "Xx" else str(int(c)) for c in run)


def _is_id18(run: str) -> bool:
    return has_valid_check_digit(_ascii_digits(run))


def _is_id15(run: str) -> bool:
    # First generation (before 1999): 6-digit region (province 1-8), YYMMDD, 3-digit sequence. There
    # is no check digit, so the region and a plausible month and day tell it from other numbers.
    n = _ascii_digits(run)
    return "1" <= n[0] <= "8" and "01" <= n[8:10] <= "12" and "01" <= n[10:12] <= "31"


def mask_id_numbers(text: str, *, checked: bool = True) -> str:
    """Mask every resident ID number in ``text`` (``3308**********123X``).

    ``checked`` (for events): only what is an ID number: 18 characters with a valid GB 11643 check
    character, or 15 digits with a region and a birth date that could be real; an order or phone
    number that merely has the length is left alone. ``checked=False`` (for logs) masks every run of
    that shape: a log line is read by people, and a mistyped ID number in it is still personal data.
    """

    def sub18(m: re.Match[str]) -> str:
        return mask_id_number(m[0]) if not checked or _is_id18(m[0]) else m[0]

    def sub15(m: re.Match[str]) -> str:
        return mask_id_number(m[0]) if not checked or _is_id15(m[0]) else m[0]

    return _ID15.sub(sub15, _ID18.sub(sub18, text))


def mask_id_numbers_in(value: Any) -> Any:
    """A copy of a JSON-like value with ``mask_id_numbers`` applied to every string in it, dict keys
    included, at any depth; an integer that is an ID number becomes its masked string. What leaves the
    device in an event passes through here once (``appliance.daemon``)."""
    if isinstance(value, str):
        return mask_id_numbers(value)
    if isinstance(value, dict):
        return {mask_id_numbers_in(k): mask_id_numbers_in(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_id_numbers_in(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and 10**14 <= value < 10**18:
        text = str(value)
        masked = mask_id_numbers(text)
        return value if masked == text else masked
    return value


def mask(text: str) -> str:
    """A log line with ID numbers (any of that shape) and secrets masked."""
    return _SECRET.sub(lambda m: m.group(1) + "***", mask_id_numbers(text, checked=False))


_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class MaskingFormatter(logging.Formatter):
    def __init__(self, journald: bool) -> None:
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.exc_info:
            msg += "\n" + self.formatException(record.exc_info)
        msg = mask(msg)
        if self.journald:
            prio = _PRIORITY.get(record.levelno, 6)
            return "\n".join(f"<{prio}>{record.name}: {line}" for line in msg.splitlines() or [""])
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        return f"{stamp}.{int(record.msecs):03d} {record.levelname:<7} {record.name}: {msg}"


class TailHandler(logging.Handler):
    """Keeps the last N formatted (masked) lines for ``collect_logs``."""

    def __init__(self, lines: int) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)
        self.setFormatter(MaskingFormatter(journald=False))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)

    def tail(self, n: int, max_bytes: int) -> tuple[list[str], bool]:
        out: list[str] = []
        size = 0
        for line in reversed(self.lines):
            if len(out) >= n or size + len(line) > max_bytes:
                return list(reversed(out)), True
            out.append(line)
            size += len(line) + 1
        return list(reversed(out)), False


def setup(level: str = "INFO", tail_lines: int = 2000, stream=None) -> TailHandler:  # noqa: ANN001
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_kiosk", False):
            root.removeHandler(h)
    out = logging.StreamHandler(stream or sys.stdout)
    out.setFormatter(MaskingFormatter(journald=bool(os.environ.get("JOURNAL_STREAM"))))
    tail = TailHandler(tail_lines)
    for h in (out, tail):
        h._kiosk = True  # type: ignore[attr-defined]
        root.addHandler(h)
    root.setLevel(level)
    # Our own INFO is useful; libraries' INFO is noise on a kiosk.
    for noisy in ("asyncio", "textual", "libav"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return tail
