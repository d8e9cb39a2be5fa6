"""Run micropython-lib's own ``umqtt/simple.py`` on CPython: load it from a checkout and point its
``socket`` at ``mpsocket`` (MicroPython's read/write sockets). Nothing of it is copied into the repo."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from sim.micropython import mpsocket


def load(path: str | Path) -> Any:
    """The ``umqtt.simple`` module from ``path`` (the file, or a micropython-lib checkout)."""
    p = Path(path)
    if p.is_dir():
        p = p / "micropython" / "umqtt.simple" / "umqtt" / "simple.py"
    spec = importlib.util.spec_from_file_location("umqtt_real_simple", p)
    if spec is None or spec.loader is None:
        raise ImportError(f"no umqtt/simple.py at {p}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.socket = mpsocket  # its functions look the name up when called
    return mod
