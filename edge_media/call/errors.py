"""Errors of the video call (all ``MediaError``), raised by the signalling client and the call session.

Foreign errors (aiohttp, json, asyncio timeouts) are translated once, in ``edge_media.call.janus``;
callers catch these and nothing else. Every message says what the technician can check.
"""

from __future__ import annotations

from kiosk_core.errors import MediaError


class CallError(MediaError):
    """Sub-root for everything about the call with the clerk."""

    code = "media.call"


class CallServerUnreachable(CallError, ConnectionError):
    """The county's media server cannot be reached (refused, DNS, TLS, reset, 5xx), or went away."""

    code = "media.call.server_unreachable"

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(
            f"the county media server at {url} cannot be reached: {detail}; check the kiosk's network "
            "link, the server address in the call settings and that the server is running"
        )
        self.url = url
        self.detail = detail


class CallSignallingError(CallError, ValueError):
    """The server sent something that is not valid Janus signalling (garbage JSON, a missing field,
    an SDP that is not SDP, an oversized message, an unexpected HTTP status)."""

    code = "media.call.signalling"

    def __init__(self, detail: str, *, where: str = "") -> None:
        at = f" ({where})" if where else ""
        super().__init__(
            f"the media server's answer is not valid Janus signalling{at}: {detail}; check that the "
            "call URL points at a Janus API (…/janus or the WebSocket port) of a supported version"
        )
        self.detail = detail
        self.where = where


class CallTimeout(CallError, TimeoutError):
    """A request got no answer in time."""

    code = "media.call.timeout"

    def __init__(self, what: str, timeout_s: float) -> None:
        super().__init__(
            f"the media server did not answer {what} within {timeout_s:g} s; the link may be very slow or "
            "the server overloaded"
        )
        self.what = what
        self.timeout_s = timeout_s


class CallRefused(CallError):
    """Janus answered with an error: wrong pin, no such room, unauthorized, room full, ...

    ``janus_code`` and ``reason`` are Janus's own (core codes 4xx like 403 unauthorized, VideoRoom codes
    like 426 no such room, 433 unauthorized/wrong pin, 432 room full).
    """

    code = "media.call.refused"

    def __init__(self, what: str, janus_code: int, reason: str) -> None:
        hint = _HINTS.get(
            janus_code, "check the call settings (room, pin, token) against the county's server"
        )
        super().__init__(f"the media server refused {what}: {reason} (Janus code {janus_code}); {hint}")
        self.what = what
        self.janus_code = janus_code
        self.reason = reason


class CallSessionLost(CallError):
    """The Janus session is gone (timed out on the server, or destroyed); a new ``connect()`` is needed."""

    code = "media.call.session_lost"


class CallClosed(CallError):
    """The client was closed (or never connected) and cannot be used for this request."""

    code = "media.call.closed"


_HINTS = {
    403: "the kiosk's call token was refused: check the token in the call settings",
    426: "the room does not exist on the server: check the room number in the call settings",
    433: "the room's pin was refused: check the pin in the call settings",
    432: "the room is full: too many publishers in the room",
    458: "the server forgot the session (it timed out): reconnect",
}
