"""Which H.264/H.265 encoder this board can use, from what the board itself reports.

No Raspberry Pi has a hardware HEVC (H.265) encoder: the Pi 4's HEVC block decodes only. The Pi 4
(and 3) encodes H.264 in hardware through the ``bcm2835-codec-encode`` V4L2 memory-to-memory device
(``/dev/video11``; FFmpeg's ``h264_v4l2m2m``). The Pi 5 has no video encoder at all: it encodes in
software (``libx264``) on its faster cores. So ``encoder = "auto"`` is:

- H.264: ``h264_v4l2m2m`` when a ``bcm2835-codec-encode`` node exists (sysfs name of a
  ``/dev/videoN``; without sysfs, ``/dev/video11`` on a board whose device-tree model is a
  Raspberry Pi other than a Pi 5) and the FFmpeg build has that encoder; else ``libx264``;
- H.265: ``libx265``, always.

The model is read from ``/proc/device-tree/model`` or ``/sys/firmware/devicetree/base/model``
(NUL-terminated). The roots are parameters so a test can build a board.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

M2M_ENCODER = "bcm2835-codec-encode"
PI_ENCODER_NODE = "video11"


@dataclass(frozen=True, slots=True)
class Board:
    model: str  # "Raspberry Pi 4 Model B Rev 1.4", "" when the board does not say
    h264_m2m: bool  # a V4L2 memory-to-memory H.264 encoder is there


def read_board(root: Path = Path("/")) -> Board:
    model = ""
    for place in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        try:
            model = (root / place).read_bytes().split(b"\0", 1)[0].decode("utf-8", "replace").strip()
        except OSError:
            continue
        if model:
            break
    classes = root / "sys" / "class" / "video4linux"
    names: list[str] = []
    try:
        for node in classes.iterdir():
            try:
                names.append((node / "name").read_text(encoding="utf-8", errors="replace").strip())
            except OSError:
                continue
    except OSError:
        pass
    if names:
        m2m = M2M_ENCODER in names
    else:  # no sysfs (a container): trust the Pi's fixed node number, never on a Pi 5
        is_pi = model.startswith("Raspberry Pi") and not model.startswith("Raspberry Pi 5")
        m2m = is_pi and (root / "dev" / PI_ENCODER_NODE).exists()
    return Board(model, m2m)


def auto_encoder(codec: str, board: Board, available: frozenset[str] | set[str]) -> str:
    """The encoder ``encoder = "auto"`` means for ``codec`` ("h264" | "h265") on ``board``."""
    if codec == "h264" and board.h264_m2m and "h264_v4l2m2m" in available:
        return "h264_v4l2m2m"
    return "libx264" if codec == "h264" else "libx265"


@functools.cache
def choose_encoder(codec: str) -> str:
    """``auto_encoder`` for this machine (read once per process)."""
    import av

    return auto_encoder(codec, read_board(), frozenset(av.codecs_available))
