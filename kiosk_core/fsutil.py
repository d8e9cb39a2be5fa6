"""Crash-safe file writes: what the firmware stores survives ``kill -9`` and a power cut whole or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (the directory entry itself)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, mode: int | None = None, uid: int = -1, gid: int = -1) -> None:
    """``path`` holds all of ``data`` or its previous content, even after a power cut.

    Temp file in the same directory, fsync, rename over, fsync of the directory; the temp file is
    removed if anything fails on the way. The file is mkstemp's 0600 and the caller's owner unless
    ``mode`` / ``uid`` / ``gid`` (-1: unchanged) say otherwise; they are set before the rename, so the
    path never shows a half-made file nor one with the wrong mode (``/etc/passwd``, a key).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if uid != -1 or gid != -1:
                os.fchown(f.fileno(), uid, gid)
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
