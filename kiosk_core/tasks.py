"""``TaskSet``: the background tasks one part owns. Every failure is logged with its traceback and
counted; ``close()`` cancels and awaits them all. The one helper for this in the firmware."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class TaskSet:
    def __init__(
        self,
        name: str,
        log: logging.Logger | None = None,
        *,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """``on_error`` is called (on the loop) after a task failed and was logged."""
        self.name = name
        self._log = log or logging.getLogger(f"kiosk.{name}")
        self._on_error = on_error
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failures = 0

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str | None = None) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        self.failures += 1
        self._log.error("%s: task %s failed: %r", self.name, task.get_name(), exc, exc_info=exc)
        if self._on_error is not None:
            self._on_error(exc)

    def __len__(self) -> int:
        return len(self._tasks)

    async def close(self) -> None:
        """Cancel every task and wait until all have ended. Idempotent."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def wait_for(aw: Awaitable[T], timeout_s: float | None) -> T:
    """``asyncio.wait_for`` that never loses a cancellation (``None``: no time limit).

    On Python 3.11 (Debian 12's), ``asyncio.wait_for`` returns the result when the awaited thing
    finishes in the same loop turn as the caller is cancelled, and the cancellation is gone
    (CPython gh-86296, fixed in 3.12): a task stopped at that instant runs on, and whoever awaits it
    waits for ever (a media service's event sender did, and its stop hung). ``asyncio.timeout`` has
    no such window. Raises ``TimeoutError`` as ``asyncio.wait_for`` does.
    """
    async with asyncio.timeout(timeout_s):
        return await aw
