"""The QR code a technician scans into the platform's registry: the device id and its CSR's fingerprint.

``payload`` is the text in the code; ``half_blocks`` draws it with ▀ ▄ █ (two modules per character
row, so a version-5 code fits a 24-line terminal), for the wizard and the terminal; PNG and SVG are
saved next to the CSR with segno.
"""

from __future__ import annotations

from pathlib import Path

import segno

from kiosk_core.fsutil import write_atomic

SCHEME = "kiosk-csr:v1"


def payload(device_id: str, csr_sha256: str) -> str:
    """``kiosk-csr:v1;id=<device id>;sha256=<hex>``."""
    return f"{SCHEME};id={device_id};sha256={csr_sha256}"


def make(text: str) -> segno.QRCode:
    return segno.make(text, error="l", micro=False)  # boosted to M or better when it fits the same size


def half_blocks(code: segno.QRCode, border: int = 2) -> str:
    """The code as text, dark modules drawn as blocks; meant for dark-on-light reading (a scanner
    also reads the inverse on most phones). Two rows of modules per line."""
    rows = [list(row) for row in code.matrix_iter(border=border)]
    if len(rows) % 2:
        rows.append([0] * len(rows[0]))
    # Light modules are printed as blocks: on a dark terminal that gives dark modules on a light
    # background, the way the code is printed on paper.
    chars = {(0, 0): "█", (0, 1): "▀", (1, 0): "▄", (1, 1): " "}
    lines = []
    for top, bottom in zip(rows[::2], rows[1::2], strict=True):
        lines.append("".join(chars[(bool(a), bool(b))] for a, b in zip(top, bottom, strict=True)))
    return "\n".join(lines)


def save(code: segno.QRCode, stem: Path) -> tuple[Path, Path]:
    """``<stem>.png`` and ``<stem>.svg`` (written atomically); returns both paths."""
    import io

    paths = []
    for kind in ("png", "svg"):
        buf = io.BytesIO()
        code.save(buf, kind=kind, scale=8, border=4)
        path = stem.with_suffix(f".{kind}")
        write_atomic(path, buf.getvalue())
        paths.append(path)
    return paths[0], paths[1]
