"""``Failover``: this terminal's role in a main/backup pair (issue 10; docs/failover.md).

The arbiter grants the active role as a lease on the lease line; this subsystem

- toggles the heartbeat line from the event loop while the terminal is healthy (``healthy``: the
  local bus is up and the session subsystem runs; a problem shorter than ``unhealthy_grace_ms`` does
  not count) and not yielding;
- is active exactly while it holds the lease (checked every ``CHECK_S`` and by the session right before
  every active-only action through ``acting``): a promotion persists the new role epoch (fsync), writes
  the role log line, emits ``failover.role`` and then tells the session (``take_over`` the peer's
  session, or ``set_active(True)``); a demotion is written to the role log the instant the lease is
  judged lost, before the session is told ``set_active(False)``;
- replicates over the pair link (``replication.PairLink``): the active sends its state with the session
  snapshot on every change and every second, the standby its status; stale epochs are refused
  (``lease.EpochGuard``);
- serves ``failover.status``, ``failover.switch`` and ``failover.prefer``.

The role log ``data_dir/failover/role.log`` (jsonl: ``t_mono_ns``, ``role``, ``lease_epoch``,
``reason``) is what the room's checker reads: a line's time is the instant the role began or ended.
Without ``[failover]`` (or ``enabled = false``) the terminal is always active and nothing here runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from appliance.failover.config import FailoverConfig, split_host_port
from appliance.failover.lease import (
    EpochGuard,
    Role,
    next_role,
    promotion_epoch,
    promotion_plan,
    should_drop,
    should_yield_for_prefer,
)
from appliance.failover.lines import Heartbeat, LeaseInput, LinesUnavailable, pin_factory
from appliance.failover.replication import PairLink, load_key
from appliance.subsystem import Context, Subsystem
from kiosk_core.commands import CommandSpec, NoParams, Params
from kiosk_core.errors import CommandError, Conflict
from kiosk_core.fsutil import write_atomic
from kiosk_core.health import Health, HealthStatus
from kiosk_core.tasks import TaskSet, wait_for

log = logging.getLogger("kiosk.failover")

CHECK_S = 0.005  # the lease is checked at least this often (the design asks <= 10 ms)
KEEPALIVE_S = 1.0  # state to the peer at least this often
PEER_STALE_S = 3.0  # a peer not heard this long is not healthy
HEALTH_S = 0.1
PREFER_CHECK_S = 0.5
PREFER_SETTLE_S = 3.0  # both healthy this long before a preference moves the room
PREFER_RETRY_S = 30.0  # after a preference yield the peer did not take
ARBITER_SEEN_S = 1.0  # lease pulses (ours, or the peer's as it reports them) this recent: arbiter online


class SwitchParams(Params):
    confirm: Literal[True] = Field(description='must be true: "confirm": true')


class PreferParams(Params):
    terminal: Literal["main", "backup"] = Field(description="the terminal to be active when both are healthy")


@dataclass
class Peer:
    """What the other terminal last told us (accepted lines only)."""

    device_id: str
    terminal: str | None
    role: Role
    healthy: bool
    epoch: int
    seen_mono: float
    yielding: str | None = None
    healthy_since: float | None = None


@dataclass
class PeerActive:
    """The peer's newest state while it was active: its epoch and session snapshot."""

    epoch: int
    session: dict[str, Any] | None
    seen_mono: float


class Failover(Subsystem):
    name = "failover"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.cfg: FailoverConfig = ctx.config.failover
        self.enabled = self.cfg.enabled
        self.me = ctx.config.device.id
        self.terminal = ctx.config.device.role
        self.role: Role = "standby" if self.enabled else "active"
        self.lease_epoch = 0  # the epoch this terminal was last promoted at (persisted)
        self.guard = EpochGuard()
        self.lease_s = self.cfg.lease_ms / 1000
        self.prefer: str | None = self.cfg.prefer
        self.prefer_ts = 0.0
        self.peer: Peer | None = None
        self.peer_active: PeerActive | None = None
        self.healthy = False
        self.problems: list[str] = []
        self.transitions = 0
        self.lease: LeaseInput | None = None
        self.heartbeat: Heartbeat | None = None
        self.link: PairLink | None = None
        self.session: Any = None
        self._dir = ctx.data_dir / "failover"
        self._role_fd: int | None = None
        self._tasks = TaskSet("failover", log)
        self._hooks: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._edge = asyncio.Event()
        self._changed = asyncio.Event()
        self._promoting = False
        self._yielding: str | None = None
        self._yield_since = 0.0
        self._prefer_retry_at = 0.0
        self._bad_since: float | None = None
        self._dropped: set[str] = set()
        self._started = False

    # --- wiring ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Before any subsystem starts: the session starts on standby and asks us before it acts."""
        if not self.enabled:
            return
        self.session = self.ctx.subsystem("session")
        if self.session is None:
            log.error("failover: no session subsystem; this terminal can hold the lease but serves nothing")
            return
        self.session.failover_enabled = True
        self.session.lease_check = self.acting

    def acting(self) -> bool:
        """Is this terminal the room's active one at this instant (role active and the lease held,
        read now)? Always true without failover."""
        if not self.enabled:
            return True
        return self.role == "active" and self.lease is not None and self.lease.holds(self.lease_s)

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled or self._started:
            return
        self._started = True
        if self.session is None:  # a daemon without prepare() (older), or a test building us alone
            self.prepare()
        self._dir.mkdir(parents=True, exist_ok=True)
        self._load_state()
        self._role_fd = os.open(self._dir / "role.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._write_role("standby", "restart")
        # On the fleet too: after a crash the platform last heard "active" from this terminal, maybe.
        self._hooks.put_nowait(lambda: self._emit_role("standby", "restart"))
        self._check_health()
        try:
            factory = pin_factory(self.ctx.config.drivers.gpio)
            self.lease = LeaseInput(
                self.cfg.lease_pin, self.cfg.sample_ms / 1000, factory=factory, on_edge=self._on_edge
            )
            self.heartbeat = Heartbeat(
                self.cfg.heartbeat_pin, self.cfg.heartbeat_ms / 1000, self._should_beat, factory=factory
            )
        except LinesUnavailable as exc:
            self._problem(f"{exc}: this terminal cannot take part in failover (check [drivers.gpio])")
            if self.lease is not None:
                self.lease.close()
                self.lease = None
        else:
            self.lease.start()
            self.heartbeat.start()
        try:
            key = load_key(self.cfg.pair_key_file)
        except ValueError as exc:
            self._problem(f"{exc}: no replication to the other terminal")
        else:
            self.link = PairLink(
                key=key,
                device_id=self.me,
                listen=split_host_port(self.cfg.listen),
                peer=split_host_port(self.cfg.peer),
                on_message=self._on_message,
            )
            try:
                await self.link.start()
            except OSError as exc:
                self._problem(f"pair link cannot listen on {self.cfg.listen}: {exc.strerror or exc}")
                self.link = None
        if self.session is not None:
            self.session.on_failover_snapshot(self._changed.set)
        self._tasks.spawn(self._check_loop(), name="failover-check")
        self._tasks.spawn(self._hook_worker(), name="failover-hooks")
        self._tasks.spawn(self._state_loop(), name="failover-state")
        self._tasks.spawn(self._health_loop(), name="failover-health")
        self._tasks.spawn(self._prefer_loop(), name="failover-prefer")
        log.info(
            "failover: %s terminal %s, standby; epoch %d, heartbeat GPIO%d, lease GPIO%d, peer %s",
            self.terminal,
            self.me,
            self.lease_epoch,
            self.cfg.heartbeat_pin,
            self.cfg.lease_pin,
            self.cfg.peer,
        )

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.heartbeat is not None:
            await self.heartbeat.close()  # first: the arbiter stops counting on us at once
        if self.role == "active":
            self.role = "standby"
            self._write_role("standby", "restart")
        await self._tasks.close()
        if self.link is not None:
            await self.link.stop()
        if self.lease is not None:
            self.lease.close()
        if self._role_fd is not None:
            os.close(self._role_fd)
            self._role_fd = None

    # --- persisted state ---------------------------------------------------------------------------

    def _load_state(self) -> None:
        for name, apply in (("state.json", self._apply_state), ("prefer.json", self._apply_prefer)):
            path = self._dir / name
            try:
                apply(json.loads(path.read_text(encoding="utf-8")))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, TypeError, KeyError) as exc:
                log.error("failover: %s unreadable (%s); starting from its defaults", path, exc)

    def _apply_state(self, data: dict[str, Any]) -> None:
        self.lease_epoch = int(data["lease_epoch"])
        self.guard.own(self.me, self.lease_epoch)
        highest = int(data.get("highest_seen", 0))
        if highest > self.lease_epoch:  # the peer's, stored when first seen
            holder = data.get("holder")
            self.guard.highest, self.guard.holder = highest, holder if isinstance(holder, str) else None

    def _apply_prefer(self, data: dict[str, Any]) -> None:
        if data.get("terminal") in ("main", "backup", None):
            self.prefer, self.prefer_ts = data.get("terminal"), float(data["ts"])

    def _save_state(self, epoch: int) -> None:
        highest = max(epoch, self.guard.highest)
        holder = self.me if highest == epoch else self.guard.holder
        body = {"lease_epoch": epoch, "highest_seen": highest, "holder": holder}
        write_atomic(self._dir / "state.json", json.dumps(body).encode())

    def _save_prefer(self) -> None:
        body = {"terminal": self.prefer, "ts": self.prefer_ts}
        write_atomic(self._dir / "prefer.json", json.dumps(body).encode())

    def _write_role(self, role: Role, reason: str) -> None:
        """One line of the role log, written (one ``write``) before anything else happens."""
        line = {
            "t_mono_ns": time.monotonic_ns(),
            "role": role,
            "lease_epoch": self.lease_epoch,
            "reason": reason,
        }
        if self._role_fd is not None:
            try:
                os.write(self._role_fd, (json.dumps(line) + "\n").encode())
            except OSError as exc:
                log.error("failover: role log not written: %s", exc)
        log.warning("failover: %s (epoch %d, %s)", role, self.lease_epoch, reason)

    def _problem(self, text: str) -> None:
        log.error("failover: %s", text)
        self.problems.append(text)

    # --- the role ----------------------------------------------------------------------------------

    def _on_edge(self, _t: float) -> None:
        if self.role == "standby":
            self._edge.set()

    async def _check_loop(self) -> None:
        while True:
            await self._check()
            with contextlib.suppress(TimeoutError):
                await wait_for(self._edge.wait(), CHECK_S)
            self._edge.clear()

    async def _check(self) -> None:
        now = time.monotonic()
        if self._yielding is not None and self._yield_over(now):
            log.info("failover: yield (%s) over; heartbeat again as %s", self._yielding, self.role)
            self._yielding = None
            self._changed.set()
        if self.lease is None:
            return
        change = next_role(self.role, self.lease.holds(self.lease_s))
        if change == "standby":
            self._demote()
        elif change == "active" and not self._promoting:
            await self._promote()

    def _yield_over(self, now: float) -> bool:
        if now - self._yield_since >= self.cfg.yield_timeout_s:
            return True
        p = self.peer_active
        return (
            self.role == "standby"
            and p is not None
            and p.epoch > self.lease_epoch
            and p.seen_mono > self._yield_since
        )

    async def _promote(self) -> None:
        self._promoting = True
        try:
            previous = self.lease_epoch
            epoch = promotion_epoch(previous, self.guard.highest)
            try:
                await asyncio.to_thread(self._save_state, epoch)
            except OSError as exc:
                log.error(
                    "failover: the lease is ours but epoch %d cannot be stored (%s): staying standby",
                    epoch,
                    exc,
                )
                return
            assert self.lease is not None
            if not self.lease.holds(self.lease_s):
                log.warning("failover: the lease ran out while epoch %d was stored; staying standby", epoch)
                return
            self.lease_epoch = epoch
            self.guard.own(self.me, epoch)
            reason = self._promotion_reason(previous)
            self.role = "active"
            self.transitions += 1
            self._write_role("active", reason)
            self._hooks.put_nowait(lambda: self._promoted(previous, reason))
        finally:
            self._promoting = False

    def _promotion_reason(self, previous: int) -> str:
        peer = self.peer
        if peer is not None and time.monotonic() - peer.seen_mono < PEER_STALE_S and peer.yielding:
            return peer.yielding  # switch | prefer: the peer handed the room over
        if self.peer_active is not None and self.peer_active.epoch > previous:
            return "peer_failed"  # the peer was active after us and has stopped
        return "lease_granted"

    def _demote(self) -> None:
        reason = self._yielding or "lease_lost"
        self.role = "standby"
        self.transitions += 1
        self._write_role("standby", reason)
        self._hooks.put_nowait(lambda: self._demoted(reason))

    async def _hook_worker(self) -> None:
        while True:
            hook = await self._hooks.get()
            try:
                await hook()
            except Exception:  # noqa: BLE001 - the next transition must still be told
                log.exception("failover: a role hook failed")

    async def _emit_role(self, role: Role, reason: str) -> None:
        await self.ctx.emit(
            "failover.role", {"role": role, "lease_epoch": self.lease_epoch, "reason": reason}
        )

    async def _promoted(self, previous: int, reason: str) -> None:
        await self._emit_role("active", reason)
        if self.role != "active":
            return  # demoted again meanwhile: its hook follows
        s = self.session
        if s is not None:
            pa = self.peer_active
            snap = pa.session if pa is not None else None
            plan = promotion_plan(
                previous,
                s.held_session_id,
                pa.epoch if pa is not None else None,
                snap.get("session_id") if isinstance(snap, dict) else None,
                (snap.get("ended_recently") or []) if isinstance(snap, dict) else [],
            )
            if plan == "take_over" and snap is not None:
                from appliance.session.errors import SnapshotInvalid

                try:
                    await s.take_over(snap, reason=reason)
                except SnapshotInvalid as exc:
                    log.error(
                        "failover: the peer's session cannot be taken over (%s); acting without it", exc
                    )
                    await s.set_active(True, reason=reason)
            else:
                if plan == "drop_then_resume":
                    await s.drop_session(f"the other terminal ended it ({reason})")
                await s.set_active(True, reason=reason)
        self._changed.set()
        await self.ctx.rebirth()

    async def _demoted(self, reason: str) -> None:
        # The session already acts on nothing (``acting`` is false since the role log line); the
        # event and birth go first, as the session's own stop may wait on kiosk-media for seconds.
        await self._emit_role("standby", reason)
        self._changed.set()
        await self.ctx.rebirth()
        if self.session is not None:
            await self.session.set_active(False, reason=reason)

    def _start_yield(self, reason: str) -> None:
        log.warning("failover: yielding the room to the other terminal (%s): heartbeat stopped", reason)
        self._yielding = reason
        self._yield_since = time.monotonic()
        self._changed.set()

    # --- health and the heartbeat ------------------------------------------------------------------

    def _should_beat(self) -> bool:
        return self.healthy and self._yielding is None

    async def _health_loop(self) -> None:
        while True:
            self._check_health()
            await asyncio.sleep(HEALTH_S)

    def _check_health(self) -> None:
        bad = self._unhealthy_reasons()
        now = time.monotonic()
        if not bad:
            self._bad_since = None
            healthy = True
        else:
            self._bad_since = self._bad_since or now
            healthy = now - self._bad_since < self.cfg.unhealthy_grace_ms / 1000 and self.healthy
        if healthy != self.healthy:
            if healthy:
                log.info("failover: healthy")
            else:
                log.warning("failover: unhealthy (%s): heartbeat stops", "; ".join(bad))
            self.healthy = healthy
            self._changed.set()

    def _unhealthy_reasons(self) -> list[str]:
        try:
            items = self.ctx.health_map()
        except Exception as exc:  # noqa: BLE001
            return [f"health unknown: {exc}"]
        bad = []
        bus = items.get("local_bus")
        if bus is None or bus.status != HealthStatus.OK:
            bad.append("local bus down")
        session = items.get("session")
        if self.session is None or session is None or session.status == HealthStatus.MISSING:
            bad.append("session not running")
        if "SessionService" in items:  # the daemon's entry for a session that failed to start
            bad.append("session failed to start")
        return bad

    # --- replication -------------------------------------------------------------------------------

    def _state_body(self) -> dict[str, Any]:
        s = self.session
        active = self.role == "active"
        session = s.failover_snapshot() if (s is not None and active) else None
        return {
            "type": "state",
            "epoch": self.lease_epoch if active else max(self.guard.highest, self.lease_epoch),
            "role": self.role,
            "healthy": self.healthy,
            "terminal": self.terminal,
            "session": session,
            "held_session_id": s.held_session_id if s is not None else None,
            "yielding": self._yielding,
            "prefer": {"terminal": self.prefer, "ts": self.prefer_ts},
        }

    async def _state_loop(self) -> None:
        while True:
            self._changed.clear()
            if self.link is not None:
                try:
                    self.link.send(self._state_body())
                except Exception:  # noqa: BLE001 - a snapshot bug must not stop the keepalive
                    log.exception("failover: state not sent")
            with contextlib.suppress(TimeoutError):
                await wait_for(self._changed.wait(), KEEPALIVE_S)

    def _on_message(self, body: dict[str, Any]) -> None:
        sender, epoch = body["from"], body["epoch"]
        role: Role = body.get("role", "standby") if body["type"] == "state" else "standby"
        why = self.guard.check(sender, epoch, role)
        if why is not None:
            assert self.link is not None
            self.link.refuse(sender, why)
            return
        before = self.guard.highest
        self.guard.note(sender, epoch, role)
        if self.guard.highest > before:
            self._tasks.spawn(asyncio.to_thread(self._save_state, self.lease_epoch), name="failover-save")
        if body["type"] == "yield":
            self._on_yield_request(sender, body.get("reason"))
        elif body["type"] == "state":
            self._on_state(sender, body, role)

    def _on_state(self, sender: str, body: dict[str, Any], role: Role) -> None:
        now = time.monotonic()
        healthy = body["healthy"]
        prev = self.peer
        since = (
            prev.healthy_since
            if (prev is not None and prev.healthy and now - prev.seen_mono < PEER_STALE_S)
            else None
        )
        terminal = body.get("terminal") if body.get("terminal") in ("main", "backup") else None
        yielding = body.get("yielding") if body.get("yielding") in ("switch", "prefer") else None
        self.peer = Peer(
            sender, terminal, role, healthy, body["epoch"], now, yielding, (since or now) if healthy else None
        )
        if prev is None or prev.healthy != healthy:
            self._changed.set()
        session = body.get("session")
        if role == "active":
            self.peer_active = PeerActive(body["epoch"], session, now)
            s = self.session
            if s is not None and self.role == "standby":
                held = s.held_session_id
                ended = (session.get("ended_recently") or []) if isinstance(session, dict) else []
                sid = session.get("session_id") if isinstance(session, dict) else None
                if held not in self._dropped and should_drop(
                    self.lease_epoch, held, body["epoch"], sid, ended
                ):
                    self._dropped.add(held)
                    s.drop_session(f"the other terminal ({sender}) holds it at epoch {body['epoch']}")
        prefer = body.get("prefer")
        if isinstance(prefer, dict) and prefer.get("terminal") in ("main", "backup", None):
            ts = prefer.get("ts")
            if isinstance(ts, int | float) and not isinstance(ts, bool) and ts > self.prefer_ts:
                self.prefer, self.prefer_ts = prefer["terminal"], float(ts)
                log.info("failover: preference from the other terminal: %s", self.prefer)
                self._tasks.spawn(asyncio.to_thread(self._save_prefer), name="failover-save-prefer")

    def _on_yield_request(self, sender: str, reason: Any) -> None:
        if self.role != "active" or self._yielding is not None:
            log.info(
                "failover: yield request from %s ignored (%s)",
                sender,
                "standby" if self.role != "active" else "yielding already",
            )
            return
        if not self.peer_healthy:
            log.warning("failover: yield request from %s ignored: it is not a healthy standby", sender)
            return
        self._start_yield("switch" if reason != "prefer" else "prefer")

    # --- prefer ------------------------------------------------------------------------------------

    async def _prefer_loop(self) -> None:
        while True:
            await asyncio.sleep(PREFER_CHECK_S)
            now = time.monotonic()
            if self._yielding is not None or now < self._prefer_retry_at:
                continue
            peer = self.peer
            s = self.session
            idle = s is not None and s.busy() is None and s.held_session_id is None
            if should_yield_for_prefer(
                my_terminal=self.terminal,
                prefer=self.prefer,
                role=self.role,
                healthy=self.healthy,
                peer_healthy_for_s=(now - peer.healthy_since)
                if (self.peer_healthy and peer and peer.healthy_since)
                else 0.0,
                peer_role=peer.role if peer is not None else None,
                idle=idle,
                settle_s=PREFER_SETTLE_S,
            ):
                self._prefer_retry_at = now + PREFER_RETRY_S
                self._start_yield("prefer")

    # --- what others see ---------------------------------------------------------------------------

    @property
    def peer_healthy(self) -> bool:
        p = self.peer
        return p is not None and p.healthy and time.monotonic() - p.seen_mono < PEER_STALE_S

    @property
    def arbiter_online(self) -> bool:
        """Lease pulses seen lately on our line, or the peer (heard lately) is active, which it is only
        while it sees its own. The arbiter's retained MQTT state is not read (the fleet link carries
        only this device's topics)."""
        now = time.monotonic()
        last = self.lease.last_edge() if self.lease is not None else None
        if last is not None and now - last < ARBITER_SEEN_S:
            return True
        p = self.peer
        return p is not None and p.role == "active" and now - p.seen_mono < ARBITER_SEEN_S + KEEPALIVE_S

    def status(self) -> dict[str, Any]:
        p = self.peer
        out: dict[str, Any] = {
            "role": self.role,
            "lease_epoch": self.lease_epoch,
            "peer": {"device_id": p.device_id if p is not None else None, "healthy": self.peer_healthy},
            "arbiter": {"online": self.arbiter_online if self.enabled else False},
            "enabled": self.enabled,
        }
        if self.enabled:
            out.update(
                terminal=self.terminal,
                prefer=self.prefer,
                yielding=self._yielding,
                healthy=self.healthy,
                link={"connected": bool(self.link and self.link.connected)},
            )
        return out

    def commands(self) -> Mapping[str, CommandSpec]:
        specs = [
            CommandSpec(
                name="failover.status",
                summary="this terminal's failover role, lease epoch, the peer's and the arbiter's state",
                params=NoParams,
                handler=self._cmd_status,
                personal=False,
                process="appliance",
            ),
            CommandSpec(
                name="failover.switch",
                summary="hand the room to the other terminal now (409 if it is not healthy); confirm: true",
                params=SwitchParams,
                handler=self._cmd_switch,
                personal=False,
                process="appliance",
            ),
            CommandSpec(
                name="failover.prefer",
                summary="which terminal is active when both are healthy (moves only when no session runs)",
                params=PreferParams,
                handler=self._cmd_prefer,
                personal=False,
                process="appliance",
            ),
        ]
        return {s.name: s for s in specs}

    def _not_configured(self, command: str) -> None:
        if not self.enabled:
            raise Conflict(
                f"{command}: this terminal is not one of a failover pair ([failover] enabled = false)"
            )

    async def _cmd_status(self, params: NoParams) -> dict[str, Any]:
        return self.status()

    async def _cmd_switch(self, params: SwitchParams) -> dict[str, Any]:
        self._not_configured("failover.switch")
        if not self.peer_healthy:
            p = self.peer
            heard = f"last heard {time.monotonic() - p.seen_mono:.1f} s ago" if p else "never heard"
            raise Conflict(
                f"failover.switch: the other terminal is not a healthy standby ({heard}); the room stays here",
                peer={"device_id": p.device_id if p else None, "healthy": False},
            )
        if self.role == "active":
            if self._yielding is None:
                self._start_yield("switch")
            return {"role": self.role, "yielding": True, "timeout_s": self.cfg.yield_timeout_s}
        if self.peer is None or self.peer.role != "active":
            raise Conflict(
                "failover.switch: neither terminal is active now (the arbiter has not granted the lease)",
                role=self.role,
            )
        if self.link is None or not self.link.connected:
            raise CommandError(503, "failover.switch: the pair link to the active terminal is down")
        self.link.send(
            {"type": "yield", "reason": "switch", "epoch": max(self.guard.highest, self.lease_epoch)}
        )
        return {"role": self.role, "forwarded": True}

    async def _cmd_prefer(self, params: PreferParams) -> dict[str, Any]:
        self._not_configured("failover.prefer")
        self.prefer, self.prefer_ts = params.terminal, max(time.time(), self.prefer_ts + 0.001)
        try:
            await asyncio.to_thread(self._save_prefer)
        except OSError as exc:
            raise CommandError(500, f"failover.prefer: not stored: {exc}") from None
        self._prefer_retry_at = 0.0
        self._changed.set()
        return {"prefer": self.prefer, "role": self.role}

    def health(self) -> Mapping[str, Health]:
        if not self.enabled:
            return {}
        if self.problems:
            status = HealthStatus.MISSING if self.lease is None else HealthStatus.DEGRADED
            return {"failover": Health(status, "; ".join(self.problems))}
        if not self.peer_healthy:
            p = self.peer
            heard = f"last heard {time.monotonic() - p.seen_mono:.0f} s ago" if p else "not heard yet"
            return {
                "failover": Health(
                    HealthStatus.DEGRADED,
                    f"{self.role}; the other terminal is not a healthy standby ({heard}): no failover now; "
                    f"check it and the pair cable ({self.cfg.peer})",
                )
            }
        return {"failover": Health(HealthStatus.OK, f"{self.role}, epoch {self.lease_epoch}")}

    def birth(self) -> Mapping[str, Any]:
        if not self.enabled:
            return {}
        return {"failover": {"role": self.role, "lease_epoch": self.lease_epoch}}

    def capabilities(self) -> list[str]:
        return ["failover.v1"] if self.enabled else []

    def telemetry(self) -> dict[str, Any]:
        if not self.enabled:
            return {}
        link = self.link
        return {
            "role": self.role,
            "lease_epoch": self.lease_epoch,
            "healthy": self.healthy,
            "peer_healthy": self.peer_healthy,
            "arbiter_online": self.arbiter_online,
            "transitions": self.transitions,
            "heartbeat_toggles": self.heartbeat.toggles if self.heartbeat else 0,
            "lease_edges": self.lease.edge_count if self.lease else 0,
            "link": {
                "connected": bool(link and link.connected),
                "sent": link.sent if link else 0,
                "accepted": link.accepted if link else 0,
                "refused": sum(link.refused.values()) if link else 0,
            },
        }

    def busy(self) -> str | None:
        return None

    async def reconfigure(self, new: Any) -> list[str]:
        return []  # every [failover] key takes effect at the next start (the daemon says so)
