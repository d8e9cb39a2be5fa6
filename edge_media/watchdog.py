"""The pipeline watchdog: a pipeline through which no frame has gone for ``stall_s`` is rebuilt.

The selector keeps frames flowing even with every camera gone (the slate), so a silent pipeline means
its own thread is wedged (a codec hang, a driver call that never returns) or died. The watchdog checks
four times per ``stall_s`` and calls ``restart()``; with the default ``stall_s = 1`` a stall is over
within 2 s. Each restart is the event ``media.pipeline.restarted``. Restarts that keep failing are
spaced out (at most one per ``stall_s``, doubling up to 30 s) so a broken encoder cannot spin the CPU.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("kiosk.media.watchdog")


class Watchdog:
    def __init__(
        self,
        *,
        stall_s: float,
        stalled_for: Callable[[], float],
        restart: Callable[[], Awaitable[None]],
        emit: Callable[[str, dict[str, Any]], Awaitable[None] | None],
    ) -> None:
        self.stall_s = stall_s
        self.stalled_for = stalled_for
        self.restart = restart
        self.emit = emit
        self.restarts = 0
        self._backoff = stall_s

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.stall_s / 4)
            stalled = self.stalled_for()
            if stalled <= self.stall_s:
                self._backoff = self.stall_s
                continue
            started = time.monotonic()
            log.error("media pipeline stalled for %.2fs: restarting it", stalled)
            try:
                await self.restart()
                ok = True
            except Exception as exc:  # noqa: BLE001 - retried with backoff
                log.exception("pipeline restart failed")
                ok, stalled = False, stalled
                error = str(exc)
            self.restarts += 1
            data = {
                "stalled_ms": round(stalled * 1000),
                "restart_ms": round((time.monotonic() - started) * 1000),
                "restarts": self.restarts,
                "ok": ok,
            }
            if not ok:
                data["error"] = error
            result = self.emit("media.pipeline.restarted", data)
            if asyncio.iscoroutine(result):
                await result
            await asyncio.sleep(self._backoff)
            self._backoff = min(30.0, self._backoff * 2)
