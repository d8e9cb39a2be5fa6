"""A wall-clock timestamp drawn into video frames, for glass-to-glass latency through real codecs.

The spec (the clerk page's ``clerk.js`` implements the same; change both or neither):

- a strip at the top of the frame, ``max(8, H // 8)`` rows high, split across the full width into
  :data:`CELLS` (48) equal cells; cell *i* spans columns ``i*W//48`` to ``(i+1)*W//48``;
- cells 0 and 47 are always white (luma :data:`WHITE`, 235): the sync cells;
- cells 1..46 hold 46 bits of an integer milliseconds value (unix ms: ``time.time()*1000``,
  ``Date.now()``), most significant bit first, white = 1, black (luma :data:`BLACK`, 16) = 0;
- every value has at least one 0 bit (:data:`MAX_MS` is 2**46 - 2): the darkest cell is the black level;
- reading: the mean luma of the central half (both axes) of each cell; the threshold is the midpoint
  of the sync cells' mean and the black level (the darkest cell); the code is None when the sync cells
  are not bright (< 128) or the strip is not bimodal (sync and black less than 64 apart, or a data cell
  sits in the undecidable middle band).

46 bits of milliseconds run out in the year 4199. The strip survives VP8/H.264 at low bitrates because
cells are large (a 640-wide frame has 13-pixel cells) and only their centres are read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # PyAV is imported by the helpers that need it only
    import av

CELLS = 48
BITS = CELLS - 2
WHITE = 235
BLACK = 16
# All 46 bits set would leave the strip without a black cell, so no black level to read against;
# unix milliseconds have their top bit clear until the year 4199, so this costs nothing.
MAX_MS = (1 << BITS) - 2


def strip_height(height: int) -> int:
    """Rows the strip covers in a frame ``height`` rows high."""
    return min(height, max(8, height // 8))


def _edges(width: int) -> list[int]:
    return [i * width // CELLS for i in range(CELLS + 1)]


def draw_timecode(y_plane: np.ndarray, ms: int) -> None:
    """Draw ``ms`` (0 ≤ ms ≤ :data:`MAX_MS`) into the top strip of a luma plane (H×W uint8), in place."""
    if y_plane.ndim != 2 or y_plane.dtype != np.uint8:
        raise ValueError("draw_timecode needs a 2-D uint8 luma plane")
    if not 0 <= ms <= MAX_MS:
        raise ValueError(f"timecode {ms} is outside 0..{MAX_MS} ({BITS} bits, not all ones)")
    h, w = y_plane.shape
    if w < CELLS:
        raise ValueError(f"a frame {w} pixels wide cannot hold {CELLS} cells")
    rows = strip_height(h)
    edges = _edges(w)
    for i in range(CELLS):
        if i in (0, CELLS - 1):
            bit = 1
        else:
            bit = (ms >> (BITS - i)) & 1  # cell 1 holds bit 45 (MSB), cell 46 holds bit 0
        y_plane[:rows, edges[i] : edges[i + 1]] = WHITE if bit else BLACK


def cell_means(y_plane: np.ndarray) -> np.ndarray:
    """Mean luma of the central half (both axes) of each of the 48 cells."""
    h, w = y_plane.shape[:2]
    rows = strip_height(h)
    r0, r1 = rows // 4, max(rows // 4 + 1, rows - rows // 4)
    edges = _edges(w)
    out = np.empty(CELLS, dtype=np.float64)
    for i in range(CELLS):
        x0, x1 = edges[i], edges[i + 1]
        q = (x1 - x0) // 4
        c0, c1 = x0 + q, max(x0 + q + 1, x1 - q)
        out[i] = float(y_plane[r0:r1, c0:c1].mean())
    return out


def read_timecode(y_plane: np.ndarray) -> int | None:
    """The milliseconds value drawn by :func:`draw_timecode`, or None if the frame carries none."""
    if y_plane.ndim != 2 or y_plane.shape[1] < CELLS or y_plane.shape[0] < 2:
        return None
    means = cell_means(y_plane)
    sync = (means[0] + means[-1]) / 2
    black = float(means.min())
    if min(means[0], means[-1]) < 128 or sync - black < 64:
        return None
    threshold = (sync + black) / 2
    margin = (sync - black) / 6
    value = 0
    for m in means[1:-1]:
        if abs(m - threshold) < margin:
            return None  # a grey cell: not our strip, or too damaged to trust
        value = (value << 1) | int(m > threshold)
    return value


def draw_timecode_frame(frame: av.VideoFrame, ms: int) -> av.VideoFrame:
    """Draw ``ms`` into a yuv420p frame in place: the strip on Y, neutral chroma (U = V = 128) under it.

    Returns the same frame. Other formats are refused (convert with ``frame.reformat("yuv420p")``).
    """
    if frame.format.name != "yuv420p":
        raise ValueError(f"draw_timecode_frame needs yuv420p, got {frame.format.name}")
    y = _plane_array(frame, 0, frame.height, frame.width)
    draw_timecode(y, ms)
    rows = (strip_height(frame.height) + 1) // 2
    for idx in (1, 2):
        plane = _plane_array(frame, idx, (frame.height + 1) // 2, (frame.width + 1) // 2)
        plane[:rows, :] = 128
    return frame


def read_timecode_frame(frame: av.VideoFrame) -> int | None:
    """Read the timecode of a decoded frame of any pixel format (via its grey image)."""
    if frame.format.name in ("yuv420p", "yuvj420p", "nv12", "gray"):
        y = _plane_array(frame, 0, frame.height, frame.width)
    else:
        y = frame.to_ndarray(format="gray")
    return read_timecode(y)


def _plane_array(frame: av.VideoFrame, index: int, height: int, width: int) -> np.ndarray:
    # A writable view of the plane's own buffer (line_size may exceed width: padding is cut off).
    plane = frame.planes[index]
    buf = np.frombuffer(plane, dtype=np.uint8)
    return buf.reshape(-1, plane.line_size)[:height, :width]
