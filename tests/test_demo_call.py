"""`kiosk demo` with Janus installed: the call with the clerk carries video that a browser can join.

A newcomer starts ``kiosk demo --headless``; the banner names the clerk page (with the demo's Janus
and room filled in) and the supervisor's live view. A villager (scripted here over the local bus, the
intents the kiosk UI would send) chooses an item, shows the ID card, keeps the three documents and
calls; the simulated county answers with a ``media`` object naming the demo's room, and kiosk-media's
retained state shows the call started there and not failing. Where the host has an interface for ICE
(libnice gathers none on loopback), the call connects, and a clerk in headless Chromium on the banner's
Janus and room sees and hears the kiosk while the kiosk decodes the clerk.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from test_demo_e2e import command_lines

from kiosk_core.localbus import LocalBus, dumps
from sim.clerk_browser import audio_receiving, clerk_browser_available, running_clerk, videos_decoding
from sim.demo import ice_addresses
from sim.janus import janus_available

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = pytest.mark.xdist_group("heavy")

KIOSK = [sys.executable, "-m", "kiosk_cli.main"]
CLERK_URL = re.compile(r"^\s+(http://127\.0\.0\.1:\d+/clerk\.html\?\S+)$", re.M)
VIEWER_URL = re.compile(r"^\s+(http://127\.0\.0\.1:\d+/viewer\.html\?\S+)$", re.M)

NO_JANUS = janus_available()


class Villager:
    """What the kiosk UI does: read the retained session state, send intents; also reads kiosk-media's."""

    def __init__(self, port: int) -> None:
        self.bus = LocalBus("127.0.0.1", port, name="test-villager")
        self.session: dict[str, Any] | None = None
        self.media: dict[str, Any] | None = None
        self.calls: list[dict[str, Any]] = []  # every distinct `call` object kiosk-media published
        self._changed = asyncio.Event()

    async def start(self) -> Villager:
        self.bus.subscribe("kiosk/local/state/session", self._on_session)
        self.bus.subscribe("kiosk/local/state/media", self._on_media)
        await self.bus.start()
        return self

    def _on_session(self, msg: Any) -> None:
        self.session = json.loads(msg.payload) if msg.payload else None
        self._changed.set()

    def _on_media(self, msg: Any) -> None:
        self.media = json.loads(msg.payload) if msg.payload else None
        call = (self.media or {}).get("call")
        if isinstance(call, dict) and (not self.calls or self.calls[-1]["state"] != call.get("state")):
            self.calls.append(
                {"state": call.get("state"), "reason": call.get("reason"), "t": time.monotonic()}
            )
        self._changed.set()

    async def wait(self, predicate: Any, what: str, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if predicate():
                    return
            except (KeyError, TypeError, IndexError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"never saw {what}; session: {json.dumps(self.session, ensure_ascii=False)[:600]}; "
                    f"media call: {json.dumps((self.media or {}).get('call'))[:600]}; calls: {self.calls}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), 0.2)
            except TimeoutError:
                pass

    async def screen(self, name: str, **view: Any) -> None:
        def ok() -> bool:
            s = self.session
            return (
                s is not None and s["screen"] == name and all(s["view"].get(k) == v for k, v in view.items())
            )

        await self.wait(ok, f"screen {name} {view}")

    def send(self, intent: str, body: dict[str, Any] | None = None) -> None:
        self.bus.publish(f"kiosk/local/intent/{intent}", dumps(body or {}))

    async def keep_document(self, doc_id: str) -> None:
        self.send("capture", {"doc_id": doc_id})
        await self.screen("capture", phase="preview")
        for attempt in range(3):
            # A busy 2-core host may miss the camera's deadline: the screen then says so and offers
            # "shoot" again, as the villager would see it. `ref` tells this attempt's outcome apart.
            ref = f"shoot-{doc_id}-{attempt}"
            self.send("shoot", {"screen": "capture", "ref": ref})
            await self.wait(
                lambda ref=ref: (
                    self.session["ref"] == ref and self.session["view"]["phase"] in ("review", "failed")
                ),
                f"{doc_id} shot",
            )
            if self.session["view"]["phase"] == "review":
                break
        await self.screen("capture", phase="review")
        self.send("accept")
        await self.wait(
            lambda: any(
                d["doc_id"] == doc_id and d["status"] == "captured" for d in self.session["view"]["checklist"]
            ),
            f"{doc_id} kept",
        )


def start_demo(work: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """``kiosk demo --headless`` in the background; returns it and its banner (once printed)."""
    demo = subprocess.Popen(
        [*KIOSK, "demo", "--headless", "--seconds", "150", "--workdir", str(work), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert demo.stdout is not None
    banner: list[str] = []
    deadline = time.monotonic() + 60
    for line in demo.stdout:
        banner.append(line)
        if "stops the demo" in line or time.monotonic() > deadline:
            break
    return demo, "".join(banner)


def stop_demo(demo: subprocess.Popen[str]) -> None:
    if demo.poll() is None:
        demo.terminate()
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait(5)


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


@pytest.mark.skipif(NO_JANUS is not None, reason=str(NO_JANUS))
@pytest.mark.timeout(240)
async def test_the_demo_call_joins_janus_and_a_browser_clerk_sees_the_kiosk(tmp_path: Path):
    work = tmp_path / "demo"
    demo, banner = start_demo(work)
    villager: Villager | None = None
    try:
        # The banner names both pages, with the demo's own Janus and room filled in.
        assert "open in a browser on this machine to be the clerk" in banner, banner
        clerk_url, viewer_url = CLERK_URL.search(banner), VIEWER_URL.search(banner)
        assert clerk_url and viewer_url, banner
        query = parse_qs(urlsplit(clerk_url.group(1)).query)
        janus_url = query["server"][0]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/janus", janus_url) and query["room"] == ["1234"], query
        assert parse_qs(urlsplit(viewer_url.group(1)).query)["server"] == [janus_url]
        # What the browser will load is served: both pages, their script and Janus's janus.js.
        base = clerk_url.group(1).split("/clerk.html")[0]
        for page in (clerk_url.group(1), viewer_url.group(1), f"{base}/clerk.js", f"{base}/janus.js"):
            status, body = await asyncio.to_thread(fetch, page)
            assert status == 200 and body, page
        config = (work / "kiosk.toml").read_text()
        assert "allow_plain_loopback = true" in config and 'source = "lavfi:sine=' in config

        villager = await Villager(tomllib.loads(config)["bus"]["port"]).start()
        await villager.screen("attract")
        await villager.wait(lambda: villager.media["call"]["state"] == "off", "kiosk-media up, no call")
        villager.send("wake")
        await villager.screen("catalog")
        villager.send("select_department", {"department_id": "minzheng"})
        await villager.wait(lambda: villager.session["view"]["department"] is not None, "items of 民政")
        villager.send("select_item", {"item_id": "minzheng.low_income_allowance"})
        await villager.screen("identify")
        await asyncio.to_thread(
            subprocess.run,
            [*KIOSK, "--config", str(work / "kiosk.toml"), "sim", "card", "present", "zhang-san"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        await villager.screen("confirm_identity")
        villager.send("confirm")
        await villager.screen("documents")
        for doc in ("hukou_book", "income_proof"):
            await villager.keep_document(doc)
        villager.send("call")
        await villager.screen("call")  # the simulated county answered (after about 3 s)

        # kiosk-media was handed the county's media object: the call leaves "off" for this session.
        sid = villager.session["session_id"]
        await villager.wait(
            lambda: (
                villager.media["call"]["state"] in ("connecting", "connected")
                and villager.media["call"]["session_id"] == sid
            ),
            "kiosk-media starting the call",
            15,
        )
        if not ice_addresses():
            # No interface but loopback: libnice gathers nothing, so ICE cannot complete here; the
            # banner says so. What still holds: the call was started and is not (yet) given up.
            await asyncio.sleep(5)
            assert all(c["state"] in ("off", "connecting") for c in villager.calls), villager.calls
            pytest.skip("no non-loopback IPv4 interface: ICE cannot complete without a netns")

        # This host has an interface for ICE: the kiosk is publishing to the demo's room.
        await villager.wait(lambda: villager.media["call"]["state"] == "connected", "the call connected", 15)
        assert villager.media["call"]["tx"]["tracks"] == ["mic", "room", "doccam"]
        if reason := clerk_browser_available():
            pytest.skip(f"the browser clerk needs {reason}")
        # A person at the browser: Chromium on the demo's Janus and room, its camera Chromium's fake one.
        with running_clerk(janus_url, room=int(query["room"][0]), source="camera") as clerk:
            # At least one of the kiosk's videos and its tone. (Both videos is the call lab's claim,
            # tests/test_call_browser.py; on a host this busy the room video may be paused.)
            def kiosk_seen(stats: dict[str, Any]) -> bool:
                return bool(videos_decoding(stats, "kiosk", 15)) and bool(audio_receiving(stats, "kiosk"))

            await asyncio.to_thread(clerk.wait_for, kiosk_seen, 60, "a video of the kiosk and its tone")
            # ...and the kiosk sees the clerk.
            await villager.wait(
                lambda: (
                    villager.media["call"]["clerk_video"]
                    and villager.media["call"]["rx"]["video_frames"] > 15
                ),
                "the clerk's video at the kiosk",
                30,
            )
        assert not [c for c in villager.calls if c["state"] == "failed"], villager.calls
    finally:
        if villager is not None:
            await villager.bus.stop()
        stop_demo(demo)
    # SIGTERM unwinds the demo through its clean-up and exits 128 + 15.
    assert demo.returncode == 128 + signal.SIGTERM, demo.returncode
    # The demo's own Janus (its folder is in the banner; other Janus processes on this host are not ours).
    janus_dir = re.search(r"janus's log \(removed at the end\): (\S+)/janus\.log", banner)
    assert janus_dir, banner
    left = [c for c in command_lines() if str(work) in c or janus_dir.group(1) in c]
    assert left == [], f"still running after the demo ended: {left}"


def test_without_janus_the_demo_says_the_call_is_text_only(tmp_path: Path):
    out = subprocess.run(
        [*KIOSK, "demo", "--headless", "--seconds", "1", "--text-call", "--workdir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "the call with the clerk is text only" in out.stdout
    assert "apt-get install janus libjs-janus-gateway" in out.stdout
    assert "clerk.html" not in out.stdout
    assert "allow_plain_loopback" not in (tmp_path / "d" / "kiosk.toml").read_text()
