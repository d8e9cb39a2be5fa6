"""The "signal lost" slate: what the encoders get when every camera is gone.

Drawn once per output size (dark blue field, "SIGNAL LOST" in a built-in 5x7 font), so recording
and stream go on and a viewer sees at once that the room camera is out, not that the stream died.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import av

# 5x7 glyphs, one string per row, '#' = ink.
FONT = {
    "S": (" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "),
    "I": ("#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "#####"),
    "G": (" ####", "#    ", "#    ", "#  ##", "#   #", "#   #", " ####"),
    "N": ("#   #", "##  #", "# # #", "#  ##", "#   #", "#   #", "#   #"),
    "A": (" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"),
    "L": ("#    ", "#    ", "#    ", "#    ", "#    ", "#    ", "#####"),
    "O": (" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "),
    "T": ("#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "),
    " ": ("     ",) * 7,
}
TEXT = "SIGNAL LOST"
BACKGROUND = (41, 240, 110)  # Y, U, V of a dark blue (BT.601 studio range)
INK = 235


def _luma(width: int, height: int, line: int) -> bytes:
    y = bytearray([BACKGROUND[0]]) * (line * height)
    cols = len(TEXT) * 6 - 1
    scale = max(1, min(width * 6 // 10 // cols, height // 4 // 7))
    x0 = (width - cols * scale) // 2
    y0 = (height - 7 * scale) // 2
    for i, ch in enumerate(TEXT):
        for r, row in enumerate(FONT[ch]):
            for c, px in enumerate(row):
                if px != "#":
                    continue
                for dy in range(scale):
                    start = (y0 + r * scale + dy) * line + x0 + (i * 6 + c) * scale
                    y[start : start + scale] = bytes([INK]) * scale
    return bytes(y)


@functools.lru_cache(maxsize=4)
def slate_frame(width: int, height: int) -> av.VideoFrame:
    """A yuv420p slate of ``width`` x ``height`` (cached: the same picture every time)."""
    from av.video.frame import VideoFrame

    frame = VideoFrame(width, height, "yuv420p")
    y, u, v = frame.planes
    y.update(_luma(width, height, y.line_size))
    u.update(bytes([BACKGROUND[1]]) * u.buffer_size)
    v.update(bytes([BACKGROUND[2]]) * v.buffer_size)
    return frame
