"""The arbiter as a real process (``python -m sim.arbiter``) on a wire file, the Extron simulator on a
pty and a real mosquitto: the test plays both terminals by toggling their heartbeat lines."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest

from drivers.gpio.wire_pins import WireBoard
from drivers.switcher.simulator import SwitcherSimulator
from sim.mosquitto import Mosquitto
from sim.process import end_process

# lease timings in tens of milliseconds: never beside another heavy test
pytestmark = pytest.mark.xdist_group("heavy")

ROOT = Path(__file__).resolve().parent.parent
LINES = [f"{k}.{t}" for t in ("main", "backup") for k in ("hb", "lease", "fence")]
REGION = "33/3308/330803/330803100/330803100201"
BASE = f"kiosk/v1/{REGION}/arbiter-0001"


class SwitcherOnPty:
    """The Extron simulator on a pty, on its own loop in a thread."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.sim = SwitcherSimulator("extron", inputs=4, outputs=2)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.sim.start_pty(self.link))
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> SwitcherOnPty:
        self._thread.start()
        assert self._ready.wait(5)
        return self

    def shown(self) -> int:
        return self.sim.matrix.ties[next(iter(self.sim.matrix.ties))].get(1, 0)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class Heartbeats:
    """Both terminals' heartbeat lines, toggled every 50 ms while a terminal is up."""

    def __init__(self, board: WireBoard) -> None:
        self.board = board
        self.up = {"main": threading.Event(), "backup": threading.Event()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        level = 0
        while not self._stop.wait(0.05):
            level ^= 1
            for t, up in self.up.items():
                if up.is_set():
                    self.board.set(f"hb.{t}", level)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


class Room:
    def __init__(self, tmp: Path) -> None:
        self.dir = tmp
        self.wire_file = tmp / "wires"
        self.board = WireBoard.create(self.wire_file, LINES)
        self.switcher = SwitcherOnPty(tmp / "switcher.pty").start()
        self.broker = Mosquitto(workdir=tmp / "broker", persistent=False).start()
        self.hb = Heartbeats(self.board)
        self.lease_log = tmp / "lease.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.messages: list[tuple[float, str, dict[str, Any]]] = []
        self.mqtt = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="test-observer")
        self.mqtt.on_message = lambda c, u, m: self.messages.append(
            (time.monotonic(), m.topic, json.loads(m.payload or b"{}"))
        )
        self.mqtt.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{BASE}/#")
        self.mqtt.connect("127.0.0.1", self.broker.port)
        self.mqtt.loop_start()

    def start_arbiter(self, *extra: str) -> None:
        argv = [
            sys.executable, "-m", "sim.arbiter", "--wire-file", str(self.wire_file),
            "--switcher-pty", str(self.switcher.link), "--broker", f"127.0.0.1:{self.broker.port}",
            "--lease-log", str(self.lease_log), *extra,
        ]  # fmt: skip
        log = open(self.dir / "arbiter.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def leases(self) -> list[dict[str, Any]]:
        if not self.lease_log.exists():
            return []
        return [json.loads(x) for x in self.lease_log.read_text().splitlines() if x.strip()]

    def wait(self, check: Callable[[], Any], timeout_s: float, what: str) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = check()
            if got:
                return got
            time.sleep(0.003)
        raise AssertionError(
            f"{what} within {timeout_s} s; arbiter log:\n{(self.dir / 'arbiter.log').read_text()}"
        )

    def edges(self, line: str, seconds: float) -> list[int]:
        """Every time ``line`` changes during ``seconds`` (monotonic ns, polled each ms)."""
        out, last = [], self.board.get(line)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            v = self.board.get(line)
            if v != last:
                out.append(time.monotonic_ns())
                last = v
            time.sleep(0.001)
        return out

    def grant(self, holder: str, since_ns: int = 0) -> dict[str, Any] | None:
        return next(
            (
                r
                for r in self.leases()
                if r["event"] == "grant" and r["holder"] == holder and r["t_mono_ns"] >= since_ns
            ),
            None,
        )

    def close(self) -> None:
        if self.proc is not None:
            end_process(self.proc)
        self.hb.stop()
        self.mqtt.loop_stop()
        self.mqtt.disconnect()
        self.broker.close()
        self.switcher.stop()
        self.board.close()


@pytest.fixture
def room(tmp_path: Path) -> Iterator[Room]:
    r = Room(tmp_path)
    try:
        yield r
    finally:
        r.close()


def both_up(room: Room) -> None:
    room.hb.up["main"].set()
    room.hb.up["backup"].set()


def test_boot_grants_main_pulses_its_lease_routes_it_and_reports(room: Room) -> None:
    both_up(room)
    room.start_arbiter()
    room.wait(lambda: room.grant("main"), 5, "a grant to the main")
    gaps = [b - a for a, b in zip(*(lambda e: (e, e[1:]))(room.edges("lease.main", 1.0)), strict=False)]
    assert len(gaps) >= 15 and max(gaps) < 150e6, (
        "lease.main toggles every ~50 ms (a gap of 150 ms would lose the lease)"
    )
    assert room.edges("lease.backup", 0.3) == [], "the standby's lease line is still"
    room.wait(lambda: room.switcher.shown() == 1, 2, "the switcher showing input 1")
    assert room.board.get("fence.main") == 0 and room.board.get("fence.backup") == 0
    boot = room.leases()[0]
    assert boot["event"] == "boot" and isinstance(boot["t_mono_ns"], int)
    first = room.grant("main")
    assert first["t_mono_ns"] - boot["t_mono_ns"] >= 298e6, "lines idle lease_ms + guard_ms after boot"
    room.wait(
        lambda: any(t == f"{BASE}/state" and m.get("state") == "online" for _, t, m in room.messages),
        3,
        "state online",
    )
    room.wait(
        lambda: any(
            t == f"{BASE}/event" and m.get("event") == "failover.lease" and m.get("holder") == "main"
            for _, t, m in room.messages
        ),
        3,
        "the failover.lease event",
    )
    room.wait(lambda: any(t == f"{BASE}/status" for _, t, m in room.messages), 6, "a status")


def test_a_dead_main_is_fenced_and_the_backup_routed_in_time(room: Room) -> None:
    both_up(room)
    room.start_arbiter()
    room.wait(lambda: room.switcher.shown() == 1, 5, "main routed")
    t_dead = time.monotonic_ns()
    room.hb.up["main"].clear()
    revoke = room.wait(
        lambda: next((r for r in room.leases() if r["event"] == "revoke"), None),
        2,
        "the main's lease revoked",
    )
    assert revoke["holder"] == "main" and revoke["reason"] == "heartbeat_lost"
    assert 300e6 <= revoke["t_mono_ns"] - t_dead <= 550e6, "revoked detect_ms after the last edge"
    room.wait(lambda: room.board.get("fence.main") == 1, 1, "the main fenced")
    grant = room.wait(lambda: room.grant("backup"), 2, "the backup granted")
    assert grant["t_mono_ns"] - revoke["t_mono_ns"] >= 298e6, "no grant before t_r + lease_ms + guard_ms"
    room.wait(lambda: room.switcher.shown() == 2, 1, "the switcher showing the backup")
    assert (time.monotonic_ns() - t_dead) / 1e9 < 1.5, "takeover well inside 2 s"
    assert room.edges("lease.main", 0.3) == [], "the revoked lease line is still"
    # the main returns: it stays standby, still fenced
    room.hb.up["main"].set()
    time.sleep(1.0)
    assert [r["holder"] for r in room.leases() if r["event"] == "grant"] == ["main", "backup"]
    assert room.switcher.shown() == 2 and room.board.get("fence.main") == 1


def test_the_holders_input_losing_signal_moves_the_room(room: Room) -> None:
    both_up(room)
    room.start_arbiter()
    room.wait(lambda: room.switcher.shown() == 1, 5, "main routed")
    time.sleep(0.2)  # W3CV answered long ago: the simulator is in verbose 3 and reports Sig
    room.switcher.sim.set_signal(1, False)  # from this thread: the simulator hands it to its loop
    revoke = room.wait(
        lambda: next((r for r in room.leases() if r["event"] == "revoke"), None), 2, "a revoke on signal loss"
    )
    assert revoke["reason"] == "signal_lost"
    room.wait(lambda: room.switcher.shown() == 2, 2, "the backup routed")


def test_an_arbiter_restart_regrants_the_terminal_the_switcher_shows(room: Room) -> None:
    both_up(room)
    room.start_arbiter()
    room.wait(lambda: room.switcher.shown() == 1, 5, "main routed")
    room.hb.up["main"].clear()
    room.wait(lambda: room.switcher.shown() == 2, 3, "the backup routed")
    room.hb.up["main"].set()
    assert room.proc is not None
    room.proc.send_signal(signal.SIGKILL)
    room.proc.wait(5)
    t_restart = time.monotonic_ns()
    room.start_arbiter()
    grant = room.wait(
        lambda: room.grant("backup", t_restart), 5, "the backup granted again after the restart"
    )
    assert grant["reason"] == "boot_tie"
    assert room.grant("main", t_restart) is None
    assert room.edges("lease.main", 0.5) == [], "the main gets no pulse from the restarted arbiter"


def test_a_dead_broker_never_stalls_the_lease(room: Room) -> None:
    both_up(room)
    room.start_arbiter()
    room.wait(lambda: room.grant("main"), 5, "a grant to the main")
    room.wait(lambda: any(t == f"{BASE}/state" for _, t, _m in room.messages), 3, "online")
    room.mqtt.loop_stop()
    room.broker.kill()
    edges = room.edges("lease.main", 3.0)
    gaps = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    # The requirement: the holder never loses its lease (two pulses within lease_ms), whatever the
    # broker does; a blocking MQTT call would leave a gap of seconds.
    assert len(edges) >= 50 and max(gaps) < 150e6, (
        f"pulses kept their pace without the broker (max gap {max(gaps) / 1e6:.0f} ms)"
    )
    # the broker comes back: the arbiter reconnects by itself and says it is online
    room.messages.clear()
    room.broker.start()
    room.mqtt.reconnect()
    room.mqtt.loop_start()
    t_back = time.monotonic()
    room.wait(
        lambda: any(t == f"{BASE}/state" and m.get("state") == "online" for _, t, m in room.messages),
        15,
        "online again after the broker's return",
    )
    assert time.monotonic() - t_back < 12, "the backoff is capped (backoff_cap_ms 10 s)"


def test_sigterm_ends_it_cleanly_and_says_offline(room: Room) -> None:
    both_up(room)
    room.start_arbiter()
    room.wait(lambda: room.grant("main"), 5, "a grant to the main")
    room.wait(lambda: any(t == f"{BASE}/state" for _, t, _m in room.messages), 3, "online")
    assert room.proc is not None
    room.proc.send_signal(signal.SIGTERM)
    assert room.proc.wait(5) == 0
    room.wait(
        lambda: any(t == f"{BASE}/state" and m.get("state") == "offline" for _, t, m in room.messages),
        3,
        "offline",
    )


def test_a_hung_broker_never_stalls_the_lease(room: Room) -> None:
    """SIGSTOP the broker: it accepts TCP in the kernel but answers nothing (a hung or half-partitioned
    broker). Connect attempts and writes wait at most the socket timeout (20 ms)."""
    both_up(room)
    room.start_arbiter("--set", "mqtt.keepalive_s=1")  # pings every 0.5 s: more writes into the void
    room.wait(lambda: room.grant("main"), 5, "a grant to the main")
    room.wait(lambda: any(t == f"{BASE}/state" for _, t, _m in room.messages), 3, "online")
    assert room.broker.proc is not None
    room.broker.proc.send_signal(signal.SIGSTOP)
    try:
        edges = room.edges("lease.main", 3.0)
    finally:
        room.broker.proc.send_signal(signal.SIGCONT)
    gaps = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    assert len(edges) >= 50 and max(gaps) < 150e6, f"max gap {max(gaps) / 1e6:.0f} ms with the broker hung"


@pytest.mark.skipif(
    not os.environ.get("MICROPYTHON_LIB_UMQTT"),
    reason="set MICROPYTHON_LIB_UMQTT to micropython-lib's umqtt/simple.py (or a checkout) to run it",
)
def test_micropython_libs_own_umqtt_simple_reports_the_same(room: Room) -> None:
    both_up(room)
    room.start_arbiter("--umqtt", os.environ["MICROPYTHON_LIB_UMQTT"])
    room.wait(lambda: room.grant("main"), 5, "a grant to the main")
    room.wait(
        lambda: any(t == f"{BASE}/event" and m.get("holder") == "main" for _, t, m in room.messages),
        5,
        "the failover.lease event through the real umqtt.simple",
    )


def test_the_watchdog_stand_in_really_resets() -> None:
    """machine.WDT not fed: the process ends (code 3), as the board resets."""
    child = (
        "import time\n"
        "from sim.micropython import machine\n"
        "w = machine.WDT(timeout=200)\n"
        "for _ in range(5):\n"
        "    w.feed(); time.sleep(0.1)\n"
        "print('fed', flush=True)\n"
        "time.sleep(5)\n"
        "print('not reset', flush=True)\n"
    )
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=20)
    assert run.returncode == 3 and "fed" in run.stdout and "not reset" not in run.stdout, run
    assert time.monotonic() - t0 < 3
