"""The document camera's pictures for the kiosk screen: the live preview and the still's thumbnail.

A villager puts a paper under the document camera and must see it to place it, then judge the photo
("照片清楚吗？"). kiosk-media sends the UI two small pictures on the local bus (docs/local-bus.md):

- ``kiosk/local/media/doccam/preview``: the live picture, about 4 a second, at most 96x96 pixels,
  **only while the session state shows the capture screen in its ``preview`` phase**, tagged with that
  session's id;
- ``kiosk/local/media/doccam/still``: once per still, a thumbnail (at most 160x160) made from the same
  cropped frame as the JPEG, tagged with the session id and the JPEG's ``sha256`` (the one the review
  state carries, so the UI shows the thumbnail of exactly the photo under review), published only while
  that session's capture screen shows.

Both are QoS 0 and never retained, so the broker keeps no copy; nothing here logs pixels or keeps a
picture after publishing it. Which session and phase are showing comes from the appliance's retained
``kiosk/local/state/session`` (``screen``, ``session_id``, ``view.phase``), which this class watches:
no new call between the appliance and kiosk-media is needed, and the preview stops by itself when the
capture ends, the session ends, the appliance publishes ``unavailable`` or its state goes stale (no
state for ``3 x heartbeat_s``, the UI's own rule: an appliance that died leaves its last state retained).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from drivers.camera.doccam import Still, make_thumbnail
from kiosk_core.localbus import PREFIX, decode_json_object

if TYPE_CHECKING:
    from drivers.camera.doccam import DocumentCamera
    from kiosk_core.localbus import LocalBus
    from kiosk_core.mqtt import Message

log = logging.getLogger("kiosk.media.doccam")

DOCCAM_PREVIEW_TOPIC = f"{PREFIX}/media/doccam/preview"
DOCCAM_STILL_TOPIC = f"{PREFIX}/media/doccam/still"
PREVIEW_FPS = 4.0
# Pixels each way of a live frame (a 4:3 preview comes as 96x72). Enough to place a paper, and the UI
# redraws it 4 times a second in pure Python: 96x72 costs ~10 ms a frame at 100x30 on the 2-core bench
# machine, 160x120 twice that (the UI accepts up to 160x160). The photo's thumbnail is larger (160,
# drivers.camera.doccam.THUMBNAIL_MAX): it is drawn once and is what the villager judges.
PREVIEW_MAX = 96
FRESH_S = 1.0  # an older frame is not "live" (the camera is reopening for a still, or unplugged)
STALE_HEARTBEATS = 3  # as the UI: no session state for this many heartbeats and the state is stale
DEFAULT_HEARTBEAT_S = 5.0


def capture_shown(state: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(session_id, phase) when ``state`` (the retained session state) shows the capture screen, else
    None. Anything malformed counts as "not capturing": the preview must fail closed."""
    if not isinstance(state, Mapping) or state.get("screen") != "capture":
        return None
    session_id, view = state.get("session_id"), state.get("view")
    phase = view.get("phase") if isinstance(view, Mapping) else None
    if not isinstance(session_id, str) or not session_id or not isinstance(phase, str):
        return None
    return session_id, phase


def picture_payload(session_id: str, w: int, h: int, rgb: bytes, seq: int, **extra: Any) -> dict[str, Any]:
    """The UI's picture message (the same shape as the call's preview, docs/ui.md)."""
    return {
        "session_id": session_id,
        "w": w,
        "h": h,
        "rgb": base64.b64encode(rgb).decode("ascii"),
        "seq": seq,
        **extra,
    }


class DoccamPictures:
    """Watches the session state and publishes the document camera's pictures for the UI.

    ``on_session_state`` is the bus handler of ``kiosk/local/state/session``; ``run()`` is the preview
    loop (a task of the media service); ``publish_still(still)`` is called right after a still."""

    def __init__(
        self,
        bus: LocalBus,
        doccam: DocumentCamera,
        *,
        fps: float = PREVIEW_FPS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.doccam = doccam
        self.interval_s = 1.0 / fps
        self._shown: tuple[str, str] | None = None  # (session_id, phase) of the capture screen showing
        self._fresh_until = 0.0  # clock time after which that state is stale
        self.seq = 0
        self.frames_sent = 0
        self.stills_sent = 0
        self.stills_withheld = 0  # a still taken while no capture screen showed (sent to nobody)
        self._last_arrival = 0.0

    @property
    def shown(self) -> tuple[str, str] | None:
        """(session_id, phase) of the capture screen the session state shows now, or None (also when
        that state is stale)."""
        return self._shown if self.clock() <= self._fresh_until else None

    @property
    def previewing(self) -> str | None:
        """The session whose live preview is being sent now, or None."""
        shown = self.shown
        return shown[0] if shown is not None and shown[1] == "preview" else None

    def on_session_state(self, msg: Message) -> None:
        try:
            state = decode_json_object(msg.payload, "session state") if msg.payload else None
        except ValueError:
            state = None  # unreadable: as if no capture showed (the UI shows "unavailable" too)
        self._shown = capture_shown(state)
        heartbeat = state.get("heartbeat_s") if state else None
        if isinstance(heartbeat, bool) or not isinstance(heartbeat, int | float) or not 0 < heartbeat <= 60:
            heartbeat = DEFAULT_HEARTBEAT_S
        self._fresh_until = self.clock() + STALE_HEARTBEATS * heartbeat

    def stop(self) -> None:
        self._shown = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            session_id = self.previewing
            if session_id is None:
                continue
            captured = self.doccam.preview.latest()
            if (
                captured is None
                or captured.t_arrival == self._last_arrival
                or time.monotonic() - captured.t_arrival > FRESH_S
            ):
                continue
            self._last_arrival = captured.t_arrival
            try:
                small = await asyncio.to_thread(make_thumbnail, captured.frame, PREVIEW_MAX)
            except Exception as exc:  # noqa: BLE001 - a bad frame must not end the preview
                log.warning("document camera preview frame not converted: %s", exc)
                continue
            if self.previewing != session_id:  # the villager pressed "take the picture" meanwhile
                continue
            self.seq += 1
            self.frames_sent += 1
            payload = picture_payload(session_id, small.width, small.height, small.rgb, self.seq)
            self.bus.publish(DOCCAM_PREVIEW_TOPIC, payload, qos=0)

    def publish_still(self, still: Still) -> bool:
        """Send the still's thumbnail to the UI of the session whose capture screen shows; True if sent.

        Nothing is sent (and nothing kept) when no capture screen shows: the photo is for that
        villager's eyes only."""
        thumb = still.thumbnail
        shown = self.shown
        if thumb is None or shown is None:
            self.stills_withheld += 1
            return False
        self.seq += 1
        self.stills_sent += 1
        payload = picture_payload(
            shown[0], thumb.width, thumb.height, thumb.rgb, self.seq, sha256=still.sha256
        )
        self.bus.publish(DOCCAM_STILL_TOPIC, payload, qos=0)
        return True

    def stats(self) -> dict[str, Any]:
        return {
            "previewing": self.previewing is not None,
            "preview_frames": self.frames_sent,
            "stills_shown": self.stills_sent,
            "stills_withheld": self.stills_withheld,
        }
