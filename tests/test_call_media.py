"""The call with the clerk through the kiosk-media process, against a real Janus, in a network namespace.

The test's own namespace (sim/netns.py) gives Janus and aiortc a usable host candidate (127.0.0.2 on a
non-loopback link); the test's thread runs inside it, so the local mosquitto, Janus, the media process
(in this loop) and the clerk all meet there. The clerk here is the Python clerk (sim/clerk_rtc.py); the
browser clerk is in tests/test_call_browser.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
from pathlib import Path

import pytest

from kiosk_core.errors import CommandError
from tests.test_media_service import running_media

pytest.register_assert_rewrite("call_lab")
from call_lab import CALL, PREVIEW_TOPIC, Lab  # noqa: E402

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = pytest.mark.xdist_group("heavy")

pytest_plugins = ["call_lab"]


async def test_the_clerk_sees_the_room_and_the_papers_and_the_kiosk_shows_and_plays_the_clerk(
    lab: Lab, tmp_path: Path
) -> None:
    from sim.clerk_rtc import PythonClerk

    async with running_media(tmp_path, lab.bus.port, CALL) as (_service, bench):
        previews: list[dict] = []
        bench.bus.subscribe(PREVIEW_TOPIC, lambda m: previews.append(__import__("json").loads(m.payload)))
        async with PythonClerk(lab.janus.http_url, 1234) as clerk:
            started = await bench.call("call_start", {"session_id": "s-1", "media": lab.media()})
            assert started["state"] == "connecting"
            assert started["session_id"] == "s-1"
            # the clerk receives the room camera, the document camera and the microphone
            await clerk.wait_for(
                lambda c: len(c.videos()) == 2 and all(v.frames > 10 for v in c.videos()), within_s=30
            )
            await clerk.wait_for(lambda c: c.audio() and c.audio()[0].audio_ms > 1000, within_s=10)
            assert sorted((v.width, v.height) for v in clerk.videos()) == [(320, 240), (320, 240)]
            # the kiosk shows the clerk's picture and plays the clerk's voice
            await bench.wait_for(lambda: bench.state.get("call", {}).get("state") == "connected", 10)
            await bench.wait_for(lambda: bench.state["call"]["rx"]["video_frames"] > 10, 15)
            await bench.wait_for(lambda: bench.state["call"]["rx"]["audio_ms"] > 1000, 10)
            call = bench.state["call"]
            assert (call["rx"]["width"], call["rx"]["height"]) == (320, 240)
            assert call["clerk_video"] is True and call["mic"] is True
            assert sorted(call["tx"]["tracks"]) == ["doccam", "mic", "room"]
            assert call["speaker_stats"]["peak"] > 4000  # the tone, not silence
            # the UI's preview of the clerk: small RGB, for this session
            await bench.wait_for(lambda: len(previews) >= 2, 5)
            p = previews[-1]
            assert p["session_id"] == "s-1" and (p["w"], p["h"]) == (64, 36)
            assert len(base64.b64decode(p["rgb"])) == 64 * 36 * 3
            summary = await bench.call("call_stop", {"session_id": "s-1"})
        assert summary["rx"]["video_frames"] > 10 and summary["reconnects"] == 0
        await bench.wait_for(lambda: bench.state.get("call", {}).get("state") == "off", 5)
        await bench.wait_for(lambda: any(e["type"] == "call.ended" for e in bench.events), 5)
        types = [e["type"] for e in bench.events if e["type"].startswith("call.")]
        assert types[0] == "call.connected" and types[-1] == "call.ended"


async def test_a_media_server_that_stops_answering_is_reconnecting_then_text_then_back_by_itself(
    lab: Lab, tmp_path: Path
) -> None:
    from sim.clerk_rtc import PythonClerk

    async with running_media(tmp_path, lab.bus.port, CALL) as (_service, bench):
        await bench.call("call_start", {"session_id": "s-2", "media": lab.media()})
        await bench.wait_for(lambda: bench.state.get("call", {}).get("state") == "connected", 15)
        pid = lab.janus.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)  # hung, or the link to it dead: nothing answers
        try:
            await bench.wait_for(lambda: bench.state["call"]["state"] == "reconnecting", 6)
            assert bench.state["call"]["reason"]
            await bench.wait_for(lambda: bench.state["call"]["state"] == "failed", 8)  # text_fallback_s = 3
        finally:
            os.kill(pid, signal.SIGCONT)
        async with PythonClerk(lab.janus.http_url, 1234) as clerk:
            await bench.wait_for(lambda: bench.state["call"]["state"] == "connected", 10)
            assert bench.state["call"]["reconnects"] >= 1
            await clerk.wait_for(lambda c: c.videos() and c.videos()[0].frames > 5, within_s=20)
        await bench.call("call_stop", {})
        types = [e["type"] for e in bench.events if e["type"].startswith("call.")]
        assert "call.reconnecting" in types and "call.failed" in types and "call.reconnected" in types


async def kiosk_publishers(lab: Lab) -> list[int]:
    """The kiosk's publisher ids in the lab's room, as Janus lists them."""
    from edge_media.call.janus import JanusVideoRoom

    async with JanusVideoRoom(lab.janus.http_url, 1234, "observer") as room:
        parts = await room.list_participants()
    return sorted(p["id"] for p in parts if p.get("display") == "kiosk-0001" and p.get("publisher"))


@pytest.mark.parametrize(("hold_s", "same"), [(30.0, True), (0.0, False)], ids=["resumed", "rejoined"])
async def test_an_outage_shorter_than_the_hold_carries_the_same_publisher_on_a_longer_one_rejoins(
    lab: Lab, tmp_path: Path, hold_s: float, same: bool
) -> None:
    """A server silent for 4 s (SIGSTOP): within ``hold_s`` the kiosk goes on with the same Janus session
    and publisher; with no hold it rejoins, and the new session replaces the old publisher."""
    async with running_media(tmp_path, lab.bus.port, CALL + f"hold_s = {hold_s}\n") as (_service, bench):
        await bench.call("call_start", {"session_id": "s-h", "media": lab.media()})
        await bench.wait_for(lambda: bench.state.get("call", {}).get("state") == "connected", 15)
        before = await kiosk_publishers(lab)
        assert len(before) == 1, before
        pid = lab.janus.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        try:
            await bench.wait_for(lambda: bench.state["call"]["state"] == "reconnecting", 6)
            await asyncio.sleep(1.5)
        finally:
            os.kill(pid, signal.SIGCONT)
        await bench.wait_for(lambda: bench.state["call"]["state"] == "connected", 10)
        assert bench.state["call"]["reconnects"] == 1
        after = await kiosk_publishers(lab)
        if same:
            assert after == before
        else:  # the stale session was destroyed: one publisher, a new one
            for _ in range(20):
                if len(after) == 1 and after != before:
                    break
                await asyncio.sleep(0.25)
                after = await kiosk_publishers(lab)
            assert len(after) == 1 and after != before, (before, after)
        await bench.call("call_stop", {})
        types = [e["type"] for e in bench.events if e["type"].startswith("call.")]
        assert types.count("call.reconnecting") == 1 and types.count("call.reconnected") == 1, types


@pytest.mark.parametrize(
    ("media", "field"),
    [
        ({"kind": "whip"}, "media.kind"),
        ({"url": "ws://10.1.2.3:8188/janus"}, "media.url"),  # plain, not loopback
        ({"url": "ftp://127.0.0.1/janus"}, "media.url"),
        ({"url": "https://user:pw@county.example/janus"}, "media.url"),
        ({"room": 0}, "media.room"),
        ({"room": "1234; drop"}, "media.room"),
        ({"display": "kiosk 0001 <script>"}, "media.display"),
        ({"ice_servers": [{"urls": ["http://turn.example"]}]}, "media.ice_servers.0.urls"),
        ({"ice_servers": {"urls": "turn:x"}}, "media.ice_servers"),
        ({"extra": {"a": [[[[[[1]]]]]]}}, "media.extra"),
        ({"token": "x" * 5000}, "media.token"),
    ],
)
async def test_a_bad_media_object_is_refused_with_its_field_and_nothing_starts(
    lab: Lab, tmp_path: Path, media: dict, field: str
) -> None:
    async with running_media(tmp_path, lab.bus.port, CALL, wait_audio=False) as (_service, bench):
        with pytest.raises(CommandError) as err:
            await bench.call("call_start", {"session_id": "s-3", "media": lab.media(**media)})
        assert err.value.status == 400
        assert field in str(err.value)
        await asyncio.sleep(0.4)
        assert bench.state["call"] == {"state": "off"}
        with contextlib.suppress(CommandError):
            await bench.call("call_stop", {})
        assert (await bench.call("status"))["running"] is True


async def test_plain_urls_need_the_loopback_switch(lab: Lab, tmp_path: Path) -> None:
    strict = CALL.replace("allow_plain_loopback = true", "allow_plain_loopback = false")
    async with running_media(tmp_path, lab.bus.port, strict, wait_audio=False) as (_service, bench):
        with pytest.raises(CommandError) as err:
            await bench.call("call_start", {"session_id": "s-4", "media": lab.media()})
        assert err.value.status == 400 and "not TLS" in str(err.value)


def tone_share(path: str, hz: float) -> float:
    """The share of the recording's audio energy within ±20 Hz of ``hz``."""
    import av
    import numpy as np

    with av.open(path) as container:
        pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]).astype(
            np.float64
        )
    spectrum = np.abs(np.fft.rfft(pcm)) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / 48000)
    return float(spectrum[np.abs(freqs - hz) < 20].sum() / spectrum.sum())


async def test_the_sessions_recording_holds_the_villager_and_the_clerk(lab: Lab, tmp_path: Path) -> None:
    """回溯: the recording's audio is the microphone (300 Hz here) with the clerk's voice (the Python
    clerk's 440 Hz tone) mixed in while the call runs."""
    from sim.clerk_rtc import PythonClerk

    async with running_media(tmp_path, lab.bus.port, CALL) as (_service, bench):
        await bench.call("record_start", {"session_id": "s-rec"})
        async with PythonClerk(lab.janus.http_url, 1234):
            await bench.call("call_start", {"session_id": "s-rec", "media": lab.media()})
            await bench.wait_for(lambda: bench.state.get("call", {}).get("state") == "connected", 15)
            await bench.wait_for(lambda: bench.state["call"]["rx"]["audio_ms"] > 4000, 15)
            await bench.call("call_stop", {})
        await bench.call("record_stop", {})
        exported = await bench.call("export", {"session_id": "s-rec"}, timeout_s=30)
        villager, clerk = tone_share(exported["path"], 300), tone_share(exported["path"], 440)
        assert villager > 0.05, villager
        assert clerk > 0.05, (villager, clerk)


async def test_a_link_too_thin_for_video_goes_on_as_audio_and_says_so(lab: Lab, tmp_path: Path) -> None:
    """The county's server caps the room at 80 kbit/s (its REMB): below the kiosk's video minimum
    (120 kbit/s) the video pauses and the call is audio only, the clerk still hearing the villager."""
    from sim.clerk_rtc import PythonClerk
    from sim.janus import JanusRoom, JanusServer

    thin = JanusServer(netns=lab.ns, ice_enforce=lab.ns.media_if, rooms=[JanusRoom(room=77, bitrate=80_000)])
    with thin:
        async with running_media(tmp_path, lab.bus.port, CALL) as (_service, bench):
            async with PythonClerk(thin.http_url, 77) as clerk:
                media = lab.media(url=thin.http_url, room=77)
                await bench.call("call_start", {"session_id": "s-thin", "media": media})
                await bench.wait_for(lambda: bench.state.get("call", {}).get("state") == "audio_only", 20)
                assert "below the video minimum" in bench.state["call"]["reason"]
                await clerk.wait_for(lambda c: c.audio() and c.audio()[0].audio_ms > 2000, within_s=15)
            await bench.call("call_stop", {})
        assert any(e["type"] == "call.audio_only" for e in bench.events)
