"""Two appliance daemons in this process, a main and a backup terminal, each with its own local
mosquitto, sharing one fleet broker, their pair link on loopback. The test plays the arbiter on
gpiozero's MockFactory pins: it watches each terminal's heartbeat pin and pulses the lease pin of the
terminal it grants (the design's rules: detect 400 ms, lease 200 ms, guard 100 ms)."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config
from fleet_helpers import Platform

from appliance.daemon import Appliance
from appliance.failover.service import Failover
from sim.mosquitto import Mosquitto

# lease timings in tens of milliseconds: never beside another heavy test
pytestmark = pytest.mark.xdist_group("heavy")

ROOT = "kiosk/v1/33/3308/330803/330803100/330803100201/"
HB, LEASE = 5, 6
# Twice the room's timers (200/400/100/50 ms): here two terminals, the arbiter and the test's platform
# share one interpreter and its GIL, which a loaded 2-core CI machine can hold up for longer than a
# 200 ms lease (a flap that two machines would never see). The logic is the same at any scale; the real
# timers run between real processes in tests/test_failover_pair.py and bench/failover.py.
LEASE_S, DETECT_S, GUARD_S, PULSE_S = 0.4, 0.8, 0.2, 0.1
OTHER = {"main": "backup", "backup": "main"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Arbiter:
    """The arbiter's rules, played on the terminals' mock pins from a thread of its own (it is its own
    microcontroller: nothing the terminals' event loop does holds it up)."""

    def __init__(self, terminals: dict[str, Failover]) -> None:
        self.t = terminals
        self.holder: str | None = None
        self.hb_seen: dict[str, float] = {}
        self.hb_level: dict[str, bool] = {}
        self.ignored: set[str] = set()  # a stuck heartbeat line: the arbiter sees no edges
        self.grant_at: float | None = None
        self.revoked: str | None = None
        self.last_pulse = 0.0
        self.log: list[tuple[float, str, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.run, name="arbiter", daemon=True)

    def pin(self, name: str, n: int) -> Any:
        return self.t[name].lease.device.pin_factory.pin(n)

    def alive(self, name: str, now: float) -> bool:
        return now - self.hb_seen.get(name, -1e9) < DETECT_S

    def run(self) -> None:
        next_pulse = 0.0
        boot = time.monotonic() + LEASE_S + GUARD_S
        while not self._stop.wait(0.002):
            now = time.monotonic()
            for name in list(self.t):
                level = bool(self.pin(name, HB).state)
                if name not in self.ignored and level != self.hb_level.get(name):
                    self.hb_seen[name] = now
                self.hb_level[name] = level
            h = self.holder
            if h is not None and not self.alive(h, now):
                self.log.append((now, "revoke", h))
                self.holder, self.revoked, self.grant_at = None, h, now + LEASE_S + GUARD_S
            if self.holder is None and now >= (self.grant_at or boot):
                order = [OTHER[self.revoked], self.revoked] if self.revoked else ["main", "backup"]
                who = next((n for n in order if self.alive(n, now)), None)
                if who is not None:
                    self.holder, self.grant_at = who, None
                    self.log.append((now, "grant", who))
            if self.holder is not None and now >= next_pulse:
                pin = self.pin(self.holder, LEASE)
                pin.drive_low() if pin.state else pin.drive_high()
                self.last_pulse, next_pulse = now, now + PULSE_S

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


class Room:
    def __init__(self, tmp: Path, central: Mosquitto) -> None:
        self.tmp, self.central = tmp, central
        self.key = tmp / "pair.key"
        self.key.write_bytes(secrets.token_bytes(32))
        self.brokers = {n: Mosquitto(workdir=tmp / f"bus-{n}", name=f"bus-{n}") for n in OTHER}
        self.ports = {n: free_port() for n in OTHER}
        self.apps: dict[str, Appliance] = {}
        self.platforms: dict[str, Platform] = {}
        # The terminals and the arbiter run on their own loop in a thread, as on their own machines: the
        # test's platform (which validates every message against the schema, for a while) must not hold
        # up their heartbeats and lease checks.
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, name="room", daemon=True)

    def config(self, name: str, extra: str = "") -> Path:
        return write_config(
            self.tmp / f"{name}.toml",
            bus_port=self.brokers[name].port,
            fleet_port=self.central.port,
            data_dir=self.tmp / name / "data",
            device_id=f"kiosk-{name}",
            role=name,
            extra=f"""
[drivers.gpio]
backend = "mock"

[failover]
enabled = true
heartbeat_pin = {HB}
lease_pin = {LEASE}
listen = "127.0.0.1:{self.ports[name]}"
peer = "127.0.0.1:{self.ports[OTHER[name]]}"
pair_key_file = "{self.key}"
lease_ms = {int(LEASE_S * 1000)}
heartbeat_ms = {int(PULSE_S * 1000)}
{extra}""",
        )

    async def start(self) -> Room:
        for b in self.brokers.values():
            b.start()
        self.thread.start()
        for name in OTHER:
            self.platforms[name] = await Platform(self.central.port, ROOT + f"kiosk-{name}").start()
            app = Appliance(self.config(name))
            await self.run(app.start())
            self.apps[name] = app
        self.arbiter = Arbiter({n: self.fo(n) for n in OTHER})
        self.arbiter.start()
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    async def run(self, coro: Any) -> Any:
        """Run ``coro`` on the room's loop (the terminals' and the arbiter's thread) and wait for it."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    async def emit(self, name: str, type: str, data: dict[str, Any]) -> None:
        await self.run(self.apps[name].emit(type, data))

    async def intent(self, name: str, intent: str) -> None:
        bus = self.apps[name].bus
        self.loop.call_soon_threadsafe(bus.publish, f"kiosk/local/intent/{intent}", {})

    def fo(self, name: str) -> Failover:
        sub = self.apps[name].subsystem("failover")
        assert isinstance(sub, Failover)
        return sub

    def roles(self, name: str) -> list[dict[str, Any]]:
        path = self.tmp / name / "data" / "failover" / "role.log"
        return [json.loads(line) for line in path.read_text().splitlines()]

    async def stop(self) -> None:
        if hasattr(self, "arbiter"):
            self.arbiter.stop()
        for app in self.apps.values():
            await self.run(app.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        for p in self.platforms.values():
            await p.stop()
        for b in self.brokers.values():
            b.close()


@pytest.fixture
async def room(tmp_path: Path, central_broker: Mosquitto):
    # Two terminals, the arbiter and the test's platform (validating every message against the
    # schema) share one interpreter here: hand the GIL over more often than every 5 ms, so the room's
    # thread is not held up for longer than a lease by the platform's CPU work (on their own machines
    # nothing is shared).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    r = await Room(tmp_path, central_broker).start()
    try:
        yield r
    finally:
        await r.stop()
        sys.setswitchinterval(interval)


async def until(check, what: str, timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.005)


def role_events(p: Platform) -> list[dict[str, Any]]:
    return [e["data"] for e in p.events("failover.role")]


async def test_the_main_takes_the_lease_then_the_backup_takes_over_its_session(room: Room) -> None:
    main, backup = room.fo("main"), room.fo("backup")
    # Both start on standby, say so in the role log, and beat.
    assert room.roles("main")[0] | {"t_mono_ns": 0} == {
        "t_mono_ns": 0,
        "role": "standby",
        "lease_epoch": 0,
        "reason": "restart",
    }
    await until(lambda: main.role == "active", "the main terminal active")
    assert backup.role == "standby"
    first = room.roles("main")[-1]
    assert (first["role"], first["lease_epoch"], first["reason"]) == ("active", 1, "lease_granted")
    pm, pb = room.platforms["main"], room.platforms["backup"]
    await pm.wait_for(lambda: len(role_events(pm)) == 2, what="failover.role on the main's topic")
    assert role_events(pm) == [
        {"role": "standby", "lease_epoch": 0, "reason": "restart"},
        {"role": "active", "lease_epoch": 1, "reason": "lease_granted"},
    ]
    assert json.loads((room.tmp / "main/data/failover/state.json").read_text())["lease_epoch"] == 1

    # The platform asks both.
    await until(lambda: main.peer_healthy and backup.peer_healthy, "each sees the other healthy")
    st = await pm.command("failover.status")
    assert st["status"] == 200
    assert (st["role"], st["lease_epoch"]) == ("active", 1)
    assert st["peer"] == {"device_id": "kiosk-backup", "healthy": True}
    assert st["arbiter"] == {"online": True}
    st = await pb.command("failover.status")
    assert (st["role"], st["peer"]["device_id"], st["arbiter"]["online"]) == ("standby", "kiosk-main", True)
    await pm.wait_for(lambda: pm.of("birth")[-1].get("failover", {}).get("role") == "active", what="rebirth")
    birth = pm.of("birth")[-1]
    assert birth["failover"] == {"role": "active", "lease_epoch": 1}
    assert (await pm.command("failover.switch", {}))["status"] == 400  # confirm is required
    assert (await pm.command("failover.prefer", {"terminal": "neither"}))["status"] == 400

    # A villager walks in on the main terminal; the backup keeps the snapshot.
    await room.emit("main", "presence.detected", {"screen_woken": False, "relay": None})
    sid = await until(lambda: main.session.held_session_id, "a session on the main terminal")
    await until(
        lambda: backup.peer_active and (backup.peer_active.session or {}).get("session_id") == sid,
        "the session replicated to the backup",
    )

    # The main's heartbeat line gets stuck: the arbiter revokes and, after lease + guard, grants the backup.
    room.arbiter.ignored.add("main")
    await until(lambda: main.role == "standby", "the main terminal demoted", timeout_s=2)
    last_pulse = room.arbiter.last_pulse
    down = room.roles("main")[-1]
    assert (down["role"], down["reason"]) == ("standby", "lease_lost")
    # judged lost within lease_ms (+10 ms) of the last lease edge it saw
    assert down["t_mono_ns"] / 1e9 - last_pulse <= LEASE_S + 0.010 + 0.005
    assert not main.acting()  # what the session asks before every active-only action
    await until(lambda: not main.session.active, "the main's session on standby")
    await until(lambda: backup.role == "active", "the backup active", timeout_s=3)
    up = room.roles("backup")[-1]
    assert (up["role"], up["lease_epoch"], up["reason"]) == ("active", 2, "peer_failed")
    # never both: the backup's active line comes after the main's standby line
    assert up["t_mono_ns"] > down["t_mono_ns"]
    await until(lambda: backup.session.held_session_id == sid, "the same session id on the backup")
    await pb.wait_for(lambda: pb.events("session.resumed"), what="session.resumed on the backup")
    assert pb.events("session.resumed")[0]["data"]["mode"] == "takeover"
    await pm.wait_for(lambda: len(role_events(pm)) == 3, what="the main's standby event")
    assert role_events(pm)[2] == {"role": "standby", "lease_epoch": 1, "reason": "lease_lost"}
    assert role_events(pb)[-1] == {"role": "active", "lease_epoch": 2, "reason": "peer_failed"}
    # the main forgets the session the backup now holds at a higher epoch (no session.ended)
    await until(lambda: main.session.held_session_id is None, "the main dropped the session")
    assert not pm.events("session.ended")

    # The main's line is fine again: it stays standby (no flapping), healthy, ready.
    room.arbiter.ignored.discard("main")
    await asyncio.sleep(1.0)
    assert (main.role, backup.role) == ("standby", "active")
    st = await pm.command("failover.status")
    assert (st["role"], st["lease_epoch"], st["peer"]["healthy"]) == ("standby", 1, True)
    sample = await room.run(room.apps["backup"].telemetry())
    fo = sample["subsystems"]["failover"]
    assert (fo["role"], fo["lease_epoch"], fo["peer_healthy"], fo["arbiter_online"]) == (
        "active",
        2,
        True,
        True,
    )
    assert fo["link"]["connected"] and fo["heartbeat_toggles"] > 10


async def test_switch_hands_the_room_over_and_prefer_moves_it_back_only_when_idle(room: Room) -> None:
    main, backup = room.fo("main"), room.fo("backup")
    pm, pb = room.platforms["main"], room.platforms["backup"]
    await until(
        lambda: (
            main.role == "active" and main.peer_healthy and getattr(backup.peer, "role", None) == "active"
        ),
        "a settled room (the backup has seen the main active)",
    )

    # The operator asks the standby: forwarded to the active, which yields.
    reply = await pb.command("failover.switch", {"confirm": True})
    assert (reply["status"], reply["forwarded"]) == (200, True)
    await until(lambda: backup.role == "active", "the backup active after the switch", timeout_s=3)
    assert room.roles("main")[-1]["reason"] == "switch"
    assert room.roles("backup")[-1]["reason"] == "switch"
    # The main's heartbeat comes back once the backup holds the lease (seen via replication).
    await until(lambda: main.heartbeat.beating, "the main beats again")
    assert main.role == "standby"

    # A villager is being served on the backup; the main is preferred from now on.
    await room.emit("backup", "presence.detected", {"screen_woken": False, "relay": None})
    await until(lambda: backup.session.held_session_id, "a session on the backup")
    reply = await pm.command("failover.prefer", {"terminal": "main"})
    assert (reply["status"], reply["prefer"]) == (200, "main")
    await until(lambda: backup.prefer == "main", "the preference replicated")
    await asyncio.sleep(4.0)
    assert backup.role == "active", "never mid-session"

    # The villager leaves: the backup hands the room back.
    await room.intent("backup", "end")
    await until(lambda: backup.session.held_session_id is None, "the session over", timeout_s=5)
    await until(lambda: main.role == "active", "the preferred main active again", timeout_s=8)
    assert room.roles("main")[-1]["reason"] == "prefer"
    assert room.roles("backup")[-1]["reason"] == "prefer"
    # and then nothing moves any more
    await asyncio.sleep(1.0)
    assert (main.role, backup.role) == ("active", "standby")


async def test_switch_is_refused_while_the_other_terminal_is_not_healthy(room: Room) -> None:
    main = room.fo("main")
    pm = room.platforms["main"]
    await until(lambda: main.role == "active" and main.peer_healthy, "a settled room")
    await room.run(room.apps.pop("backup").stop())
    await until(lambda: not main.peer_healthy, "the backup gone", timeout_s=5)
    reply = await pm.command("failover.switch", {"confirm": True})
    assert reply["status"] == 409, reply
    assert "not a healthy standby" in json.dumps(reply, ensure_ascii=False)
    assert main.role == "active" and main.heartbeat.beating
    st = await pm.command("failover.status")
    assert st["peer"]["healthy"] is False


async def test_a_restarted_terminal_comes_back_standby_with_its_epoch_and_refuses_stale_state(
    room: Room,
) -> None:
    main, backup = room.fo("main"), room.fo("backup")
    pm, pb = room.platforms["main"], room.platforms["backup"]
    await until(lambda: main.role == "active" and backup.guard.highest == 1, "the backup saw epoch 1")
    await asyncio.sleep(0.1)  # stored (off the loop)
    # The backup restarts: standby, its stored epoch kept, the highest seen one too.
    await room.run(room.apps.pop("backup").stop())
    app = Appliance(room.config("backup"))
    await room.run(app.start())
    room.apps["backup"] = app
    backup = room.fo("backup")
    room.arbiter.t = {**room.arbiter.t, "backup": backup}
    restarts = [r for r in room.roles("backup") if r["reason"] == "restart"]
    assert len(restarts) == 2 and all(r["role"] == "standby" for r in restarts)
    assert backup.guard.highest == 1  # the main's epoch 1, stored when first seen
    await until(lambda: backup.peer_healthy and main.peer_healthy, "the pair link back")
    assert (main.role, backup.role) == ("active", "standby")

    # Someone on the LAN with the pair key replays an old active claim of the backup: refused by epoch.
    from appliance.failover.replication import encode

    reader, writer = await asyncio.open_connection("127.0.0.1", room.ports["main"])
    nonce = json.loads(await reader.readline())["body"]["nonce"]
    key = room.key.read_bytes()
    refused = sum(main.link.refused.values())
    for n, (epoch, role) in enumerate([(0, "active"), (1, "active"), (0, "standby")], start=1):
        body = {"v": 1, "type": "state", "from": "kiosk-backup", "seq": n, "to": nonce, "epoch": epoch}
        writer.write(
            encode(key, {**body, "role": role, "healthy": True, "session": {"session_id": "s-forged"}})
        )
    await writer.drain()
    await until(lambda: sum(main.link.refused.values()) == refused + 3, "three refusals")
    reasons = [r for r in main.link.refused if "epoch" in r]
    assert any("stale epoch 0" in r for r in reasons) and any("already kiosk-main's" in r for r in reasons)
    assert main.role == "active" and (main.peer_active is None or main.peer_active.session is None)
    writer.close()

    # The switch still works from the restarted backup; the new epoch is above everything seen.
    reply = await pb.command("failover.switch", {"confirm": True})
    assert reply["status"] == 200
    await until(lambda: backup.role == "active", "the backup active", timeout_s=3)
    assert room.roles("backup")[-1]["lease_epoch"] == 2
    st = await pm.command("failover.status")
    assert (st["role"], st["lease_epoch"]) == ("standby", 1)
