"""kiosk-media's pictures of the document camera for the kiosk screen, over a real local mosquitto.

The media process runs in this loop with the synthetic document camera (its "page" pattern: a light
page on a dark desk); the bench plays the appliance by publishing the retained session state, and
listens on the two picture topics the way the UI does, parsing with the UI's own strict parser.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from session_helpers import HandClock

from edge_media.doccam_pictures import DOCCAM_PREVIEW_TOPIC, DOCCAM_STILL_TOPIC, DoccamPictures, capture_shown
from kiosk_core.localbus import STATE_PREFIX, LocalBus, dumps
from kiosk_core.mqtt import Message
from kiosk_ui.bus import DOCCAM_PICTURE, STILL_PICTURE, parse_preview
from sim.mosquitto import Mosquitto
from tests.test_media_service import MEDIA, running_media

SESSION = "s-5d1e0a7c9b2f4e61"
SESSION_TOPIC = f"{STATE_PREFIX}/session"


def session_state(screen: str, phase: str | None = None, session_id: str | None = SESSION) -> dict[str, Any]:
    view: dict[str, Any] = {"phase": phase, "doc": {"doc_id": "income_proof"}} if phase else {}
    return {"v": 1, "screen": screen, "session_id": session_id, "view": view, "actions": []}


def pixel(rgb: bytes, w: int, x: int, y: int) -> tuple[int, int, int]:
    i = (y * w + x) * 3
    return rgb[i], rgb[i + 1], rgb[i + 2]


async def settle(seconds: float) -> None:
    await asyncio.sleep(seconds)


@pytest.mark.timeout(60)
async def test_the_live_preview_flows_only_while_the_capture_screen_previews_and_the_photo_follows(
    tmp_path: Path, bus_broker: Mosquitto
) -> None:
    async with running_media(tmp_path, bus_broker.port, MEDIA, wait_audio=False) as (service, bench):
        frames: list[Message] = []
        stills: list[Message] = []
        bench.bus.subscribe(DOCCAM_PREVIEW_TOPIC, frames.append, qos=0)
        bench.bus.subscribe(DOCCAM_STILL_TOPIC, stills.append, qos=0)
        await bench.wait_for(
            lambda: bench.state.get("sources", {}).get("doccam", {}).get("health", {}).get("status") == "ok"
        )

        def appliance_shows(state: dict[str, Any]) -> None:
            bench.bus.publish(SESSION_TOPIC, state, qos=1, retain=True)

        # The checklist: no capture screen, no picture.
        appliance_shows(session_state("documents"))
        await settle(1.0)
        assert frames == []

        # The villager opens the capture screen: live frames of that session, a few a second.
        appliance_shows(session_state("capture", "preview"))
        await bench.wait_for(lambda: len(frames) >= 3, within_s=5)
        start, first = asyncio.get_running_loop().time(), len(frames)
        await settle(1.5)
        rate = (len(frames) - first) / (asyncio.get_running_loop().time() - start)
        assert 1.5 <= rate <= 5.5, rate  # about 4 a second
        for msg in frames:
            assert not msg.retain and msg.qos == 0
            frame = parse_preview(msg.payload, DOCCAM_PICTURE)  # the UI's own strict rules
            assert (frame.session_id, frame.w, frame.h) == (SESSION, 96, 72)  # 320x240 shrunk
        frame = parse_preview(frames[-1].payload, DOCCAM_PICTURE)
        assert min(pixel(frame.rgb, frame.w, 48, 36)) > 200  # the page in the middle
        assert max(pixel(frame.rgb, frame.w, 2, 2)) < 90  # the desk in the corner
        assert service.state()["sources"]["doccam"]["previewing"] is True

        # "Take the picture": the live frames stop; the photo's thumbnail goes to the same session.
        appliance_shows(session_state("capture", "capturing"))
        await settle(0.5)
        stopped_at = len(frames)
        reply = await bench.call("doccam_capture")
        await bench.wait_for(lambda: len(stills) == 1, within_s=5)
        assert len(frames) == stopped_at, "live frames while the photo was being taken"
        assert not {"thumbnail", "rgb"} & set(reply)  # the RPC reply carries no picture
        still = parse_preview(stills[0].payload, STILL_PICTURE)
        assert still.session_id == SESSION and still.sha256 == reply["sha256"]
        assert max(still.w, still.h) == 160
        assert abs(still.w / still.h - reply["width"] / reply["height"]) < 0.02
        # Cropped to the page like the JPEG: mostly light, and the page's two lines of "text" are still
        # dark lines after the shrink (area-averaged, not skipped over): what a villager checks.
        assert sum(still.rgb) / len(still.rgb) > 170
        rows = [
            sum(pixel(still.rgb, still.w, x, y)[0] for x in range(still.w // 4, 3 * still.w // 4))
            / (still.w // 2)
            for y in range(still.h)
        ]
        dark = [y for y, v in enumerate(rows) if v < 100]
        assert dark and sorted(rows)[len(rows) // 2] > 200, rows
        assert any(rows[y] > 200 for y in range(min(dark), max(dark))), "two lines, not one smear"
        assert not stills[0].retain

        # Review, then the session ends: nothing flows, and a still taken now goes to nobody.
        appliance_shows(session_state("capture", "review"))
        await settle(0.6)
        assert len(frames) == stopped_at
        appliance_shows(session_state("ended", session_id=None))
        await settle(0.3)
        await bench.call("doccam_capture")
        await settle(0.6)
        assert len(stills) == 1 and len(frames) == stopped_at
        assert service.doccam_pictures is not None and service.doccam_pictures.stills_withheld == 1

        # Back to a preview, then the appliance goes away (an unreadable state): fail closed.
        appliance_shows(session_state("capture", "preview"))
        await bench.wait_for(lambda: len(frames) > stopped_at, within_s=5)
        bench.bus.link.publish(SESSION_TOPIC, b"\xff not json", qos=1, retain=True)
        await settle(0.5)
        after = len(frames)
        await settle(0.8)
        assert len(frames) == after

        # The broker keeps no copy of any picture.
        late = LocalBus("127.0.0.1", bus_broker.port, name="late-listener")
        kept: list[Message] = []
        late.subscribe("kiosk/local/media/doccam/#", lambda m: kept.append(m) if m.retain else None)
        await late.start()
        await settle(0.5)
        await late.stop()
        assert kept == []


@pytest.mark.parametrize(
    ("state", "shown"),
    [
        (session_state("capture", "preview"), (SESSION, "preview")),
        (session_state("capture", "review"), (SESSION, "review")),
        (session_state("documents"), None),
        (session_state("capture", "preview", session_id=None), None),
        (session_state("capture", "preview", session_id=""), None),
        ({**session_state("capture", "preview"), "view": ["phase", "preview"]}, None),
        ({**session_state("capture", "preview"), "view": {"phase": 3}}, None),
        ({**session_state("capture", "preview"), "session_id": 7}, None),
        (None, None),
        ([], None),
    ],
)
def test_which_capture_screen_shows_is_read_strictly(state: Any, shown: Any) -> None:
    assert capture_shown(state) == shown


def test_a_stale_session_state_stops_the_preview_like_the_uis_rule() -> None:
    """An appliance that died leaves its last state retained: after 3 heartbeats without a state the
    capture screen counts as gone (the UI shows "unavailable" by the same rule)."""
    clock = HandClock()
    pictures = DoccamPictures(None, None, clock=clock.monotonic)  # type: ignore[arg-type] - no I/O here

    def state(payload: bytes) -> None:
        pictures.on_session_state(Message(SESSION_TOPIC, payload, qos=1, retain=True, mid=1))

    state(dumps({**session_state("capture", "preview"), "heartbeat_s": 2}))
    assert pictures.previewing == SESSION
    clock.advance(5.9)
    assert pictures.previewing == SESSION
    clock.advance(0.2)
    assert pictures.previewing is None and pictures.shown is None
    state(dumps({**session_state("capture", "preview"), "heartbeat_s": True}))  # junk: the default 5 s
    clock.advance(14.9)
    assert pictures.previewing == SESSION
    state(b"")  # the retained state cleared
    assert pictures.shown is None
