"""The receipt's QR code drawn in terminal cells with ``segno``.

A terminal cell is about twice as tall as wide, so each cell shows two QR modules stacked with the
half-block characters; the code is drawn dark-on-light (what phone scanners expect) whatever the
theme, with a quiet zone of two modules.
"""

from __future__ import annotations

import segno
from rich.style import Style
from rich.text import Text

from kiosk_core.errors import KioskError

# (top dark, bottom dark) -> character drawn in the dark colour over the light background
_HALF_BLOCKS = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}
MAX_QR_DATA = 512
QUIET_ZONE = 2
_STYLE = Style(color="black", bgcolor="white")


class QrError(KioskError, ValueError):
    code = "ui.qr"


def qr_lines(data: str, *, border: int = QUIET_ZONE) -> list[str]:
    """The QR code of ``data`` as lines of half-block characters (dark modules drawn as ink)."""
    if not data:
        raise QrError("nothing to encode in the receipt QR code")
    if len(data.encode()) > MAX_QR_DATA:
        raise QrError(f"receipt QR data is {len(data.encode())} bytes; at most {MAX_QR_DATA} fit on screen")
    # Error level M, not boosted: a smaller code stays readable on a 30-row screen.
    code = segno.make(data, error="m", boost_error=False, micro=False)
    rows = [[bool(m) for m in row] for row in code.matrix_iter(scale=1, border=border)]
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    return [
        "".join(_HALF_BLOCKS[(top, bottom)] for top, bottom in zip(upper, lower, strict=True))
        for upper, lower in zip(rows[::2], rows[1::2], strict=True)
    ]


def qr_text(data: str) -> Text:
    """A Rich ``Text`` ready for a ``Static``: black modules on white, one line per two module rows."""
    return Text("\n".join(qr_lines(data)), style=_STYLE, no_wrap=True, overflow="crop")


def decode_lines(lines: list[str]) -> list[list[bool]]:
    """Turn drawn lines back into the module matrix (for tests: what is drawn is what was encoded)."""
    inverse = {ch: pair for pair, ch in _HALF_BLOCKS.items()}
    matrix: list[list[bool]] = []
    for line in lines:
        pairs = [inverse[ch] for ch in line]
        matrix.append([top for top, _ in pairs])
        matrix.append([bottom for _, bottom in pairs])
    return matrix
