"""The room with two terminals and the arbiter (sim/pair.py): the backup takes the room, nothing splits.

Real parts: two appliance processes, each with its own local mosquitto in its own network namespace,
the fleet broker in a third, the arbiter as a process on the MicroPython stand-ins, the shared-memory
wires and the Extron simulator on a pty. Needs root (network namespaces).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim.netns import netns_available
from sim.pair import SWITCHER_INPUT, FleetWatch, PairLab, outside_lease, split_brain

pytestmark = [
    pytest.mark.skipif(netns_available() is not None, reason=str(netns_available())),
    pytest.mark.slow,
    pytest.mark.xdist_group("heavy"),  # kill -9 takeover timings: never beside another heavy test
]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[PairLab]:
    with PairLab(tmp_path / "room") as room:
        yield room


def steady(lab: PairLab, timeout_s: float = 20.0) -> str:
    return lab.wait(lab.steady, timeout_s, "one terminal active and shown, the other a healthy standby")


def no_split_brain(lab: PairLab) -> None:
    assert split_brain(lab.dir) == [], "two terminals were active at once"
    assert outside_lease(lab.dir) == [], "a terminal was active without the arbiter's lease"


def test_killing_the_main_appliance_moves_the_room_to_the_backup_and_the_main_returns_as_standby(
    lab: PairLab,
) -> None:
    assert steady(lab) == "main", "with both healthy at start the preferred main holds the room"
    t0 = lab.kill("main")
    routed = lab.wait(
        lambda: lab.switcher.route_since(t0, SWITCHER_INPUT["backup"]), 5, "the route to the backup"
    )
    active = lab.wait(lambda: lab.active_since("backup", t0), 5, "the backup active")
    assert (routed - t0) / 1e9 < 2.0 and (active - t0) / 1e9 < 2.0
    last = lab.roles("backup")[-1]
    assert last["role"] == "active" and last["reason"] in ("peer_failed", "lease_granted")
    epoch = last["lease_epoch"]

    lab.start_appliance("main")
    lab.wait(lambda: lab.role_of("main") == "standby" and lab.heartbeat_alive("main"), 20, "the main back")
    time.sleep(1.5)  # longer than detect + grant: a returning main must not take the room back
    assert lab.holder() == "backup" and lab.role_of("backup") == "active"
    assert lab.roles("backup")[-1]["lease_epoch"] == epoch
    no_split_brain(lab)


def linked(lab: PairLab, platform: FleetWatch) -> dict:
    """Wait until the active main sees the backup over the pair link (the platform asks it)."""

    def check() -> dict | None:
        try:
            st = platform.command("kiosk-pair-main", "failover.status", timeout_s=2)
        except TimeoutError:
            return None
        ok = (
            st.get("status") == 200
            and st.get("peer", {}).get("healthy")
            and st.get("link", {}).get("connected")
        )
        return st if ok else None

    return lab.wait(check, 20, "the main seeing a healthy backup over the pair link")


def test_failover_switch_from_the_platform_moves_a_running_session_and_the_room_to_the_backup(
    lab: PairLab,
) -> None:
    """The operator's command, across processes: 400 without confirm, then the main yields mid-session,
    the backup resumes the session under its id and the room TV shows it; the main is standby."""
    platform = FleetWatch(lab, "test-operator")
    try:
        assert steady(lab) == "main"
        st = linked(lab, platform)
        assert st["role"] == "active" and st["peer"]["device_id"] == "kiosk-pair-backup"
        assert st["arbiter"]["online"] is True and isinstance(st["lease_epoch"], int)
        assert platform.command("kiosk-pair-main", "failover.switch", {})["status"] == 400
        assert lab.present_card("main") == 0
        started = lab.wait(lambda: platform.find("session.started", "kiosk-pair-main"), 15, "a session")
        sid = started[1]["session_id"]
        time.sleep(0.3)
        t0 = time.monotonic_ns()
        reply = platform.command("kiosk-pair-main", "failover.switch", {"confirm": True})
        assert reply["status"] == 200, reply
        lab.wait(
            lambda: platform.find("session.resumed", "kiosk-pair-backup", t0, session_id=sid),
            10,
            "the backup resuming the session after the switch",
        )
        lab.wait(lambda: lab.steady() == "backup", 15, "the room steady on the backup")
        back = platform.command("kiosk-pair-backup", "failover.status")
        assert back["role"] == "active" and back["lease_epoch"] > st["lease_epoch"]
        assert platform.command("kiosk-pair-main", "failover.status")["role"] == "standby"
        assert platform.find("session.ended", None, t0, session_id=sid) is None
    finally:
        platform.close()
    no_split_brain(lab)


def test_the_backup_resumes_the_villagers_session_under_the_same_id_when_the_main_dies(
    lab: PairLab,
) -> None:
    """Across real processes: the session the main replicated is what the backup resumes, and the
    platform hears it from both sides (started on the main, resumed on the backup, the roles)."""
    platform = FleetWatch(lab, "test-platform")
    try:
        assert steady(lab) == "main"
        linked(lab, platform)
        assert lab.present_card("main") == 0
        started = lab.wait(
            lambda: platform.find("session.started", "kiosk-pair-main"), 15, "the session started on the main"
        )
        sid = started[1]["session_id"]
        time.sleep(0.3)  # the snapshot goes on every change; a keepalive follows within 1 s
        t0 = lab.kill("main")
        resumed = lab.wait(
            lambda: platform.find("session.resumed", "kiosk-pair-backup", t0, session_id=sid),
            10,
            "the backup resuming the session",
        )
        assert resumed[1].get("mode") == "takeover"
        assert platform.active_since("kiosk-pair-backup", t0) is not None
        assert platform.find("session.ended", None, t0, session_id=sid) is None, "nobody ended it"
        assert platform.find("session.started", "kiosk-pair-backup", t0) is None, "not a new session"
    finally:
        platform.close()
    no_split_brain(lab)


def test_a_heartbeat_glitch_shorter_than_the_detection_window_switches_nothing(lab: PairLab) -> None:
    assert steady(lab) == "main"
    rng = random.Random(4)
    for _ in range(8):
        lab.stick_heartbeat("main", 0)
        time.sleep(rng.uniform(0.05, 0.25))  # detect_ms is 400
        lab.release_heartbeat("main")
        time.sleep(0.3)
    time.sleep(0.6)
    assert lab.holder() == "main"
    assert [r["role"] for r in lab.roles("backup")].count("active") == 0
    no_split_brain(lab)


def test_a_stuck_heartbeat_line_of_a_live_main_fences_it_before_the_backup_acts(lab: PairLab) -> None:
    assert steady(lab) == "main"
    t0 = lab.stick_heartbeat("main", 1)
    active = lab.wait(lambda: lab.active_since("backup", t0), 5, "the backup active")
    demoted = next(r for r in lab.roles("main") if r["t_mono_ns"] >= t0 and r["role"] == "standby")
    assert demoted["t_mono_ns"] < active, "the main must stand down before the backup acts"
    assert demoted["reason"] == "lease_lost"
    lab.release_heartbeat("main")
    time.sleep(1.0)
    assert lab.holder() == "backup"
    no_split_brain(lab)


def test_partitions_from_the_broker_or_between_the_terminals_move_nothing_and_split_nothing(
    lab: PairLab,
) -> None:
    assert steady(lab) == "main"
    for which in ("main", "pair", "backup"):
        lab.partition(which)
        time.sleep(1.0)
        assert lab.holder() == "main" and lab.role_of("main") == "active", f"partition {which}"
        lab.heal(which)
    # the main dies while the terminals cannot talk: the backup still takes the room (the lease is wired)
    lab.partition("pair")
    t0 = lab.kill("main")
    lab.wait(lambda: lab.active_since("backup", t0), 5, "the backup active without the pair link")
    lab.heal("pair")
    lab.start_appliance("main")
    assert steady(lab) == "backup"
    no_split_brain(lab)


def test_an_arbiter_restart_gives_the_room_back_to_the_terminal_the_switcher_shows(lab: PairLab) -> None:
    assert steady(lab) == "main"
    t0 = lab.kill("main")
    lab.wait(lambda: lab.active_since("backup", t0), 5, "the backup active")
    lab.start_appliance("main")
    assert steady(lab) == "backup"
    t1 = lab.restart_arbiter()
    lab.wait(lambda: lab.active_since("backup", t1 + 1), 10, "the backup re-granted")
    assert steady(lab) == "backup"
    assert lab.active_since("main", t1) is None, "the arbiter's restart must not hand the room to the main"
    leases = [json.loads(x) for x in lab.lease_log.read_text().splitlines() if x.strip()]
    assert any(r.get("event") == "boot" and r["t_mono_ns"] >= t1 for r in leases)
    no_split_brain(lab)


def test_thirty_random_faults_never_make_two_terminals_active(lab: PairLab) -> None:
    rng = random.Random(30)
    steady(lab)
    for n in range(30):
        h = steady(lab)
        kind = ("kill", "power_off", "hb_stuck", "partition", "arbiter_restart", "hb_flap")[n % 6]
        if kind == "kill":
            lab.kill(h)
            time.sleep(rng.uniform(0.1, 1.0))
            lab.start_appliance(h)
        elif kind == "power_off":
            lab.power_off(h)
            time.sleep(rng.uniform(0.1, 1.0))
            lab.power_on(h)
        elif kind == "hb_stuck":
            lab.stick_heartbeat(h, rng.choice((0, 1)))
            time.sleep(rng.uniform(0.2, 1.2))
            lab.release_heartbeat(h)
        elif kind == "partition":
            which = rng.choice(("main", "backup", "pair"))
            lab.partition(which)
            time.sleep(rng.uniform(0.2, 1.0))
            lab.heal(which)
        elif kind == "arbiter_restart":
            lab.restart_arbiter()
        else:
            lab.flap_heartbeat(h, low_s=rng.uniform(0.3, 0.6), high_s=rng.uniform(0.1, 0.3))
            time.sleep(rng.uniform(0.5, 1.5))
            lab.release_heartbeat(h)
    steady(lab)
    no_split_brain(lab)


def test_kiosk_demo_pair_lets_a_person_kill_the_main_and_watch_the_backup_take_the_room() -> None:
    import subprocess
    import sys

    script = "status\nkill main\n"
    proc = subprocess.run(
        [sys.executable, "-m", "kiosk_cli.main", "demo", "--pair", "--seconds", "6"],
        input=script,
        capture_output=True,
        text=True,
        timeout=90,
        cwd=Path(__file__).resolve().parents[1],
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "room TV: main (input 1)" in out and "main: appliance killed (kill -9)" in out, out
    assert "room TV: backup (input 2)" in out.split("appliance killed", 1)[1], out
