"""``network`` for the arbiter on CPython: the wired W5500 is the host's own network, always up."""

from __future__ import annotations

from typing import Any


class WIZNET5K:
    def __init__(self, *args: Any, **kw: Any) -> None:
        self._active = False

    def active(self, on: bool | None = None) -> bool | None:
        if on is None:
            return self._active
        self._active = bool(on)
        return None

    def isconnected(self) -> bool:
        return self._active

    def ifconfig(self, cfg: Any = None) -> tuple[str, str, str, str] | None:
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1") if cfg is None else None
