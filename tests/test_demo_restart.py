"""`kiosk demo` when the appliance dies in the middle of a visit (kill -9), as systemd would see it: the
demo starts it again and says so, the kiosk tells the villager the visit was cut short, and kiosk-media,
which went on recording the dead session, records the next session instead."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from kiosk_core.mqtt import MqttConnection

KIOSK = [sys.executable, "-m", "kiosk_cli.main"]

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = [pytest.mark.timeout(150), pytest.mark.xdist_group("heavy")]


def pids_of(needle: str) -> list[int]:
    """Processes whose command line contains ``needle`` (read from /proc; a minbase root has no ps)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if needle in line:
            found.append(int(entry.name))
    return found


class Lines:
    """The demo's stdout, line by line, read in a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    async def wait_for(self, text: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            await asyncio.sleep(0.1)
        raise AssertionError(f"the demo never printed {text!r}; it printed: {self.lines}")


class States:
    """The retained session and media states on the demo's bus."""

    def __init__(self) -> None:
        self.session: dict[str, Any] = {}
        self.media: dict[str, Any] = {}

    async def follow(self, port: int) -> None:
        conn = MqttConnection(host="127.0.0.1", port=port, client_id="restart-test", name="restart-test")
        await conn.connect()
        await conn.subscribe(("kiosk/local/state/session", 1), ("kiosk/local/state/media", 1))
        async for msg in conn.messages():
            if not msg.payload:
                continue
            if msg.topic.endswith("/session"):
                self.session = json.loads(msg.payload)
            else:
                self.media = json.loads(msg.payload)

    def recording(self) -> str | None:
        return (self.media.get("recording") or {}).get("session_id")

    async def until(self, predicate: Any, what: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"never saw {what}: session {self.session}, recording {self.recording()}"
                )
            await asyncio.sleep(0.1)


def start_demo(work: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*KIOSK, "demo", "--headless", "--text-call", "--seconds", "120", "--workdir", str(work)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


async def test_a_killed_appliance_is_restarted_says_so_and_the_next_visit_is_recorded(tmp_path: Path):
    work = tmp_path / "demo"
    demo = start_demo(work)
    out = Lines(demo)
    follower: asyncio.Task | None = None
    config = work / "kiosk.toml"
    sim_card = [*KIOSK, "--config", str(config), "sim", "card"]
    try:
        await out.wait_for("is online", 60)
        states = States()
        follower = asyncio.create_task(states.follow(tomllib.loads(config.read_text())["bus"]["port"]))
        # a villager places the card: a session starts and kiosk-media records it
        subprocess.run([*sim_card, "present", "zhang-san"], check=True, capture_output=True, timeout=30)
        await states.until(lambda: states.session.get("session_id"), "a session")
        first = states.session["session_id"]
        await states.until(lambda: states.recording() == first, "the first session recorded")

        (appliance,) = pids_of(f"--config {config} run")  # not "… media run": that one goes on
        os.kill(appliance, signal.SIGKILL)
        assert "(as systemd's Restart=on-failure)" in await out.wait_for("demo: appliance exited with -9", 10)
        await out.wait_for("demo: appliance restarted (restart 1)", 10)

        # the villager is told, and the dead session's recording is closed
        await states.until(
            lambda: (
                states.session.get("screen") == "ended" and states.session["view"].get("reason") == "restart"
            ),
            "ended with reason restart",
        )
        await states.until(lambda: states.recording() is None, "the orphaned recording stopped")
        subprocess.run([*sim_card, "present", "zhang-san"], check=True, capture_output=True, timeout=30)
        await states.until(
            lambda: states.session.get("session_id") not in (None, first), "a new session after the restart"
        )
        second = states.session["session_id"]
        await states.until(lambda: states.recording() == second, "the new session recorded")
    finally:
        if follower is not None:
            follower.cancel()
        if demo.poll() is None:
            demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(5)
    left = pids_of(str(work))
    assert left == [], f"still running after the demo ended: {left}"
