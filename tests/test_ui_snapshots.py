"""Every screen at the kiosk's size (100x30 cells) in zh-CN and English, compared with committed text.

The snapshots are the screen's plain text (one line per terminal row) under ``tests/snapshots/ui/``:
readable in a review, and a diff shows what moved. After an intended change, regenerate them with

    UPDATE_UI_SNAPSHOTS=1 .venv/bin/python -m pytest -q tests/test_ui_snapshots.py

and read the diff before committing. Each language also gets one SVG screenshot of the catalog for the
docs (``catalog.{lang}.svg``), written only when updating.
"""

from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path

import pytest

from kiosk_ui.app import KioskApp
from sim.mosquitto import Mosquitto
from sim.ui_harness import SAMPLES, StateFeed, screen_text, wait_until

pytestmark = pytest.mark.timeout(60)
SNAPSHOTS = Path(__file__).parent / "snapshots" / "ui"
UPDATE = os.environ.get("UPDATE_UI_SNAPSHOTS") == "1"
SIZE = (100, 30)


def scenes() -> dict[str, dict]:
    """The sample state of every screen, plus the idle countdown over a screen and a video call."""
    out = copy.deepcopy(SAMPLES)
    idle = copy.deepcopy(SAMPLES["documents"])
    idle["actions"] = ["still_here", *idle["actions"]]
    idle["idle"] = {"timeout_s": 90, "warn_s": 15, "countdown": 12}
    out["documents_idle"] = idle
    # The video call in a state that does not depend on frames arriving in time: sound only, and the
    # microphone missing (so every indicator and warning of the media view is on screen).
    audio_only = copy.deepcopy(SAMPLES["call"])
    audio_only["view"]["media"] = {
        "state": "audio_only",
        "reason": "bandwidth estimate 90 kbit/s",
        "clerk_video": False,
        "mic": False,
        "speaker": True,
    }
    out["call_audio_only"] = audio_only
    return out


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
async def test_every_screen_matches_its_snapshot(lang: str, bus_broker: Mosquitto):
    mismatches: list[str] = []
    app = KioskApp("127.0.0.1", bus_broker.port)
    async with StateFeed("127.0.0.1", bus_broker.port) as feed, app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: app.bus_connected, what="UI connected")
        for name, state in scenes().items():
            seq = feed.seq + 1
            await feed.publish("session", {**state, "lang": lang})
            await wait_until(
                pilot,
                lambda s=seq, st=state: (
                    app.states.get("session", {}).get("seq") == s
                    and app.screen_name == st["screen"]
                    and app.catalog.language == lang
                ),
                what=f"{name} in {lang}",
            )
            await pilot.pause()
            assert not app.catalog.missing, (
                f"{name}: texts missing from the {lang} catalog: {app.catalog.missing}"
            )
            text = screen_text(app)
            assert len(text.splitlines()) <= SIZE[1]
            path = SNAPSHOTS / f"{name}.{lang}.txt"
            if UPDATE:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                if name == "catalog":
                    (SNAPSHOTS / f"{name}.{lang}.svg").write_text(
                        app.export_screenshot(title=f"{name} {lang}"), encoding="utf-8"
                    )
                continue
            if not path.exists():
                mismatches.append(f"{path.name}: no snapshot (run with UPDATE_UI_SNAPSHOTS=1)")
                continue
            expected = path.read_text(encoding="utf-8")
            if text != expected:
                diff = "\n".join(
                    difflib.unified_diff(
                        expected.splitlines(), text.splitlines(), "snapshot", "screen", lineterm="", n=1
                    )
                )
                mismatches.append(f"{path.name} differs:\n{diff}")
    assert not mismatches, "\n\n".join(mismatches)
