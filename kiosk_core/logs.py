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

# 18-digit resident ID numbers (17 digits + check digit 0-9/X) and 15-digit first-generation numbers,
# not part of a longer digit run. Shown as the first 4 and last 4 characters: 3308**********123X.
_ID18 = re.compile(r"(?<![0-9A-Za-z])(\d{4})\d{10}(\d{3}[0-9Xx])(?![0-9A-Za-z])")
_ID15 = re.compile(r"(?<![0-9A-Za-z])(\d{4})\d{7}(\d{4})(?![0-9A-Za-z])")
_SECRET = re.compile(
    r"""(?ix)
    (["']?(?:password|passwd|secret|token|pin|private[_-]?key|api[_-]?key)["']?\s*[=:]\s*)
    ("[^"]*"|'[^']*'|[^\s,;}]+)"""
)


def mask_id_number(number: str) -> str:
    """``330803199001011234`` -> ``3308**********1234``; anything shorter than 8 is fully starred."""
    n = number.strip()
    if len(n) < 8:
        return "*" * len(n)
    return n[:4] + "*" * (len(n) - 8) + n[-4:]


def mask(text: str) -> str:
    text = _ID18.sub(lambda m: m.group(1) + "*" * 10 + m.group(2), text)
    text = _ID15.sub(lambda m: m.group(1) + "*" * 7 + m.group(2), text)
    return _SECRET.sub(lambda m: m.group(1) + "***", text)


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
