"""The UI's link to the local bus: retained state in, intents out.

``BusLink.run(target)`` is meant to run as the app's exclusive named worker. It owns a
``kiosk_core.localbus.LocalBus`` (which reconnects by itself), subscribes to ``kiosk/local/state/#`` and
reaches the UI only through ``target.post_message``:

- ``StatesChanged``: merged. Incoming states are kept in a dict (latest value per name) and flushed in
  one message per loop turn, so a burst of updates (a peripheral flapping, a replay of retained
  messages after reconnect) costs the UI one refresh, and the pending dict can never hold more than
  one value per state name: that is the back-pressure policy.
- ``BusStatus``: the connection came up or went down (polled; LocalBus has no callback for it).

A state payload that is not a JSON object is logged and ignored (the previous value stays on screen);
an empty retained payload means the state was cleared and is passed on as None.

The clerk's video preview (``kiosk/local/media/call/preview``, QoS 0, not retained, ~4 a second from the
media process) is subscribed for the app's whole life and **filtered cheaply**: while
``preview_session`` is None (no call screen showing a picture) a frame is dropped before it is even
parsed. The subscription is not made and withdrawn with the screen because ``LocalBus`` replays its
subscriptions on every reconnect and has no unsubscribe, and a dropped frame costs less than the
broker round trips of following the screen. Accepted frames are merged like states (only the newest
pending frame is kept, one ``PreviewArrived`` per loop turn). A frame that is not a valid preview of
the call shown (``parse_preview``) is counted in ``preview_rejected`` by reason and logged once per
reason: a broken producer at 4 frames a second must not fill the log.

The document camera's pictures work the same way, on two more topics (docs/ui.md, *The document's
picture*): ``kiosk/local/media/doccam/preview`` (the live picture, parsed only while ``doccam_session``
is set: the capture screen in its ``preview`` phase) and ``kiosk/local/media/doccam/still`` (the photo's
thumbnail with its ``sha256``, parsed only while ``still_session`` is set: any phase of the capture
screen). Each kind has its own size limits (``PictureLimits``) and is merged separately; rejections are
counted in the same ``preview_rejected`` under ``doccam.{reason}`` / ``still.{reason}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

from kiosk_core.localbus import INTENT_PREFIX, PREFIX, STATE_PREFIX, LocalBus, decode_json_object
from kiosk_core.mqtt import Message
from kiosk_ui.messages import BusStatus, Preview, PreviewArrived, StatesChanged

log = logging.getLogger("kiosk.ui.bus")

# Intent names become one topic level: keep them to a safe alphabet.
_INTENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")
MAX_STATE_NAME = 64

PREVIEW_TOPIC = f"{PREFIX}/media/call/preview"
DOCCAM_PREVIEW_TOPIC = f"{PREFIX}/media/doccam/preview"
DOCCAM_STILL_TOPIC = f"{PREFIX}/media/doccam/still"
PREVIEW_MAX_W, PREVIEW_MAX_H = 160, 90
# The largest valid preview: 160x90x3 bytes as base64 (57,600 characters) plus a few short fields.
PREVIEW_MAX_PAYLOAD = 64 * 1024
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class PictureLimits:
    """What one kind of picture may be: its largest size and payload, and whether it names a photo."""

    kind: str
    max_w: int
    max_h: int
    max_payload: int
    sha256: bool = False  # a still: must carry the photo's sha256


CALL_PICTURE = PictureLimits("call", PREVIEW_MAX_W, PREVIEW_MAX_H, PREVIEW_MAX_PAYLOAD)
# 160x160x3 as base64 is 102,400 characters; 240x240x3 is 230,400 (under the bus's 256 KiB).
DOCCAM_PICTURE = PictureLimits("doccam", 160, 160, 112 * 1024)
STILL_PICTURE = PictureLimits("still", 240, 240, 240 * 1024, sha256=True)


class PreviewError(ValueError):
    """A preview frame that cannot be shown; ``reason`` is a short code for the counter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"preview {reason}: {detail}")
        self.reason = reason


def _int_field(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):  # JSON true would pass as 1
        raise PreviewError("field", f"{key} must be an integer, got {type(value).__name__}")
    return value


def parse_preview(payload: bytes, limits: PictureLimits = CALL_PICTURE) -> Preview:
    """Check one picture payload (``{"session_id", "w", "h", "rgb", "seq"}``, a still also ``sha256``)
    and decode its pixels.

    Raises ``PreviewError`` for anything else: oversized, not a JSON object (or nested too deep, see
    ``decode_json_object``), a missing or ill-typed field, a size over the kind's limit (160x90 for the
    call), base64 that is not canonical, or a pixel count that is not ``w * h * 3`` bytes. Sizes are
    checked before the base64 is decoded, so a hostile payload costs no more than its JSON parse."""
    try:
        obj = decode_json_object(payload, limits.kind, max_bytes=limits.max_payload)
    except ValueError as exc:
        raise PreviewError("json", str(exc)) from None
    session_id = obj.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise PreviewError("field", "session_id must be a non-empty string")
    w, h, seq = _int_field(obj, "w"), _int_field(obj, "h"), _int_field(obj, "seq")
    sha256 = obj.get("sha256")
    if limits.sha256 and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
        raise PreviewError("field", "sha256 must be 64 lowercase hex digits")
    if not (0 < w <= limits.max_w and 0 < h <= limits.max_h):
        raise PreviewError("size", f"{w}x{h} is not within 1x1..{limits.max_w}x{limits.max_h}")
    rgb = obj.get("rgb")
    if not isinstance(rgb, str):
        raise PreviewError("field", "rgb must be a base64 string")
    expected = w * h * 3
    if len(rgb) != 4 * -(-expected // 3):
        raise PreviewError("pixels", f"{len(rgb)} base64 characters cannot hold {w}x{h}x3 = {expected} bytes")
    try:
        data = base64.b64decode(rgb, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PreviewError("base64", str(exc)) from None
    if len(data) != expected:  # padding can still shorten it by one or two bytes
        raise PreviewError("pixels", f"{len(data)} bytes for {w}x{h}x3 = {expected}")
    return Preview(session_id, w, h, data, seq, limits.kind, sha256 if limits.sha256 else None)


class MessageTarget(Protocol):
    def post_message(self, message: Any) -> bool: ...


class BusLink:
    """One UI's connection to the local bus. ``send_intent`` is safe to call whether or not connected."""

    def __init__(self, host: str, port: int, *, poll_s: float = 0.1) -> None:
        self.bus = LocalBus(host, port, name="kiosk-ui")
        self.poll_s = poll_s
        self._target: MessageTarget | None = None
        self._pending: dict[str, dict[str, Any] | None] = {}
        self._flush_scheduled = False
        self.rejected = 0
        # The session whose call screen shows the clerk's picture now (set by the app), else None.
        self.preview_session: str | None = None
        self.preview_rejected: Counter[str] = Counter()
        # The session whose capture screen shows the document camera's live picture (phase preview),
        # and the one whose capture screen waits for or shows the photo (any phase); set by the app.
        self.doccam_session: str | None = None
        self.still_session: str | None = None
        self.previews_dropped = 0  # frames that arrived while no picture was showing (not an error)
        self._pending_previews: dict[str, Preview] = {}  # kind -> the newest accepted, not yet posted
        self._preview_scheduled = False

    async def run(self, target: MessageTarget) -> None:
        """Connect, relay until cancelled, then disconnect. Never raises for a missing broker."""
        self._target = target
        self.bus.subscribe(f"{STATE_PREFIX}/#", self._on_state)
        # QoS 0 like the producer: a late frame is worth less than the next one.
        self.bus.subscribe(PREVIEW_TOPIC, self._on_preview, qos=0)
        self.bus.subscribe(DOCCAM_PREVIEW_TOPIC, self._on_doccam_preview, qos=0)
        self.bus.subscribe(DOCCAM_STILL_TOPIC, self._on_doccam_still, qos=0)
        await self.bus.start(wait_s=None)
        connected: bool | None = None
        try:
            while True:
                now = self.bus.connected
                if now != connected:
                    connected = now
                    target.post_message(BusStatus(connected=now))
                await asyncio.sleep(self.poll_s)
        finally:
            await self.bus.stop()

    def send_intent(self, name: str, data: dict[str, Any] | None = None) -> bool:
        """Publish ``kiosk/local/intent/{name}`` (QoS 1). Returns False if the bus is down (dropped)."""
        if not name or not set(name) <= _INTENT_CHARS:
            raise ValueError(f"intent name {name!r} must be lowercase letters, digits, '_', '.', '-'")
        if not self.bus.connected:
            log.warning("local bus down: intent %s not sent", name)
            return False
        self.bus.publish(f"{INTENT_PREFIX}/{name}", data or {}, qos=1)
        return True

    # --- incoming ----------------------------------------------------------------------------------

    def _on_state(self, msg: Message) -> None:
        name = msg.topic[len(STATE_PREFIX) + 1 :]
        if not name or len(name) > MAX_STATE_NAME:
            self.rejected += 1
            log.warning("ignored state on unexpected topic %r", msg.topic[:200])
            return
        if not msg.payload:
            state = None
        else:
            try:
                state = decode_json_object(msg.payload, f"state {name}")
            except ValueError as exc:
                self.rejected += 1
                log.warning("ignored unreadable %s", exc)
                return
        self._pending[name] = state
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        if pending and self._target is not None:
            self._target.post_message(StatesChanged(states=pending))

    def _on_preview(self, msg: Message) -> None:
        self._take_picture(msg, CALL_PICTURE, self.preview_session)

    def _on_doccam_preview(self, msg: Message) -> None:
        self._take_picture(msg, DOCCAM_PICTURE, self.doccam_session)

    def _on_doccam_still(self, msg: Message) -> None:
        self._take_picture(msg, STILL_PICTURE, self.still_session)

    def _take_picture(self, msg: Message, limits: PictureLimits, wanted: str | None) -> None:
        if wanted is None:
            self.previews_dropped += 1
            return
        try:
            preview = parse_preview(msg.payload, limits)
            if preview.session_id != wanted:
                raise PreviewError("session", f"{preview.session_id[:40]!r} is not the session shown")
        except PreviewError as exc:
            # The call's reasons stay bare (as they always were); the document camera's are prefixed.
            key = exc.reason if limits is CALL_PICTURE else f"{limits.kind}.{exc.reason}"
            self.preview_rejected[key] += 1
            if self.preview_rejected[key] == 1:
                log.warning("ignored %s (%s picture; further ones are only counted)", exc, limits.kind)
            return
        self._pending_previews[limits.kind] = preview
        if not self._preview_scheduled:
            self._preview_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_preview)

    def _flush_preview(self) -> None:
        self._preview_scheduled = False
        pending, self._pending_previews = self._pending_previews, {}
        if self._target is not None:
            for preview in pending.values():
                self._target.post_message(PreviewArrived(preview))
