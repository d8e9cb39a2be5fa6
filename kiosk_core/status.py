"""The one exception -> status ladder of request/response (fleet commands and local-bus RPC), and
its inverse for callers.

Statuses are the contract's: 400 malformed, 404 unknown, 409 conflicting state, 410 expired, 500
failed, 503 unavailable, 504 no reply. A handler says anything but 200 by raising ``CommandError``.
"""

from __future__ import annotations

import logging
from typing import Any

from kiosk_core.errors import CommandError, KioskError


def error_reply(exc: Exception, *, what: str, log: logging.Logger) -> dict[str, Any]:
    """The reply body for a handler that raised ``exc``. Never raises."""
    if isinstance(exc, CommandError):
        return {"status": exc.status, "error": str(exc), **exc.detail}
    if isinstance(exc, ValueError):
        return {"status": 400, "error": str(exc)}
    if isinstance(exc, KioskError):
        return {"status": 500, "error": str(exc), "code": exc.code}
    # A handler bug answers 500 and is logged with its traceback; the loop that ran it keeps going.
    log.error("%s crashed", what, exc_info=exc)
    return {"status": 500, "error": f"internal error: {type(exc).__name__}"}


def check_reply(reply: dict[str, Any], what: str) -> dict[str, Any]:
    """Return ``reply`` when its status is 2xx, else raise ``CommandError`` with its status and detail."""
    try:
        status = int(reply.get("status", 500))
    except (TypeError, ValueError):
        status = 502
    if status >= 300 or status < 200:
        detail = {k: v for k, v in reply.items() if k not in ("status", "error")}
        raise CommandError(status, str(reply.get("error", f"{what} failed")), **detail)
    return reply
