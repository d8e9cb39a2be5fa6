"""The clerk is a real browser: headless Chromium on the reference clerk page (sim/clerk_web/), through a
real Janus, against the kiosk-media process; and the supervisor's live view is a second browser.

Asserted from the browser (its posted getStats): it decodes the kiosk's room and document-camera video
at their size and receives the kiosk's microphone. Asserted from the kiosk: it shows the clerk's frames
and plays the clerk's audio.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.test_media_service import running_media

pytest.register_assert_rewrite("call_lab")
from call_lab import CALL, Lab  # noqa: E402

from sim.clerk_browser import audio_receiving, videos_decoding  # noqa: E402

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = pytest.mark.xdist_group("heavy")

pytest_plugins = ["call_lab"]


async def test_the_clerk_in_a_browser_and_the_supervisor_watch_the_kiosk_live(
    lab: Lab, clerk, tmp_path: Path
) -> None:
    async with running_media(tmp_path, lab.bus.port, CALL) as (_service, bench):
        browser = clerk(source="canvas")
        await asyncio.to_thread(browser.wait_for, lambda s: bool(s.get("published")), 30, "clerk published")
        await bench.call("call_start", {"session_id": "s-b1", "media": lab.media()})

        def kiosk_seen(stats: dict) -> bool:
            return len(videos_decoding(stats, "kiosk", 15)) == 2 and bool(audio_receiving(stats, "kiosk"))

        stats = await asyncio.to_thread(browser.wait_for, kiosk_seen, 40, "the kiosk's 2 videos and audio")
        sizes = sorted(
            (m.get("frameWidth"), m.get("frameHeight")) for m in videos_decoding(stats, "kiosk", 15)
        )
        assert sizes == [(320, 240), (320, 240)]
        await bench.wait_for(lambda: bench.state["call"]["rx"]["video_frames"] > 15, 20)
        await bench.wait_for(lambda: bench.state["call"]["rx"]["audio_ms"] > 1000, 10)
        assert bench.state["call"]["state"] == "connected"
        assert bench.state["call"]["speaker_stats"]["peak"] > 1000  # the page's tone, not silence

        viewer = clerk(viewer=True)
        await asyncio.to_thread(
            viewer.wait_for, lambda s: len(videos_decoding(s, "kiosk", 10)) == 2, 40, "the live view"
        )
        await bench.call("call_stop", {"session_id": "s-b1"})
