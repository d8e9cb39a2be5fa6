"""The session subsystem: drives ``SessionMachine`` from intents, peripheral events, platform commands and
time, and carries out its effects (fleet events, document camera, encrypted document store).

Everything that touches the machine runs under one lock, so the order of fleet events is the order of
transitions. Slow work (the document camera, sealing an image) runs outside the lock and comes back
through it, where the machine decides whether the answer is still wanted. Disk work (the encrypted
store, the session marker) never runs on the event loop, which also carries the fleet link: it runs in a
thread while the lock is held, so effects still happen one after another in the machine's order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from pydantic import Field

from appliance.session import snapshot as snapshots
from appliance.session.catalog import CatalogStore
from appliance.session.documents import DocumentStore
from appliance.session.effects import Signal, StartCall, StopCall
from appliance.session.errors import CatalogInvalid, DocumentStoreError, IntentRejected
from appliance.session.flows import call as call_flow
from appliance.session.flows.documents import DocumentGetParams
from appliance.session.machine import (
    SESSION_ID,
    CaptureDocument,
    Clock,
    DropCapture,
    DropDocument,
    Effect,
    Emit,
    KeepCapture,
    PrintReceipt,
    RefreshTechnician,
    RunSelfTest,
    Screen,
    SessionMachine,
    SystemClock,
    WipeSession,
)
from appliance.subsystem import Context, Subsystem
from appliance.sysinfo import clock_synced
from kiosk_core.commands import CommandSpec, Params
from kiosk_core.errors import BadRequest, CommandError, Conflict, KioskError
from kiosk_core.fsutil import write_atomic
from kiosk_core.health import Health, HealthStatus
from kiosk_core.localbus import INTENT_PREFIX, STATE_PREFIX, decode_json_object
from kiosk_core.tasks import TaskSet, wait_for

if TYPE_CHECKING:
    from appliance.config import KioskConfig

STATE_NAME = "session"
MEDIA_STATE_TOPIC = f"{STATE_PREFIX}/media"
MAX_INTENT_BYTES = 4096
SCHEMA_VERSION = 1
CAPTURE_TIMEOUT_S = 15.0
#: the printer's own print_timeout_s bounds a receipt; the local-bus call waits this much longer
PRINT_MARGIN_S = 2.0

P = ParamSpec("P")
T = TypeVar("T")


async def off_loop(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn`` in a worker thread, run to its end even if the caller is cancelled meanwhile (as it would
    have on the loop): a caller holding the session lock keeps it until the disk work is really over."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await work
        raise


class SessionService(Subsystem):
    """The villager's service session (docs/session.md)."""

    name = "session"

    def __init__(self, ctx: Context, *, clock: Clock | None = None) -> None:
        super().__init__(ctx)
        cfg = ctx.config.session
        self.clock = clock or SystemClock()
        self.dir = Path(ctx.data_dir) / "session"
        self.catalogs = CatalogStore(self.dir, cfg.catalog_path)
        self.documents = DocumentStore(self.dir / "documents", max_bytes=cfg.max_document_bytes)
        self.machine = SessionMachine(
            cfg,
            self.catalogs.current,
            clock=self.clock,
            site=ctx.config.device.name,
            printer=ctx.config.drivers.printer is not None,
        )
        self.boot = secrets.token_hex(4)
        self.seq = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._tasks = TaskSet("session", logging.getLogger("kiosk.appliance"))
        self._started = False
        self._ready = asyncio.Event()
        self.sessions_started = 0
        self.intents_rejected = 0
        self.last_rejection: str | None = None
        # Recording calls to kiosk-media, one at a time in the order asked (a session's stop must not
        # overtake the next session's start), and why the last start was refused (None: it was not).
        self._recording_lock = asyncio.Lock()
        self.recording_problem: str | None = None
        # --- terminal failover (docs/session.md §10; the failover subsystem drives these) ---
        #: set before ``start()`` when ``[failover]`` is enabled: the service starts on ``standby`` and
        #: acts only after ``set_active(True)`` or ``take_over()``; a session a crash cut short is
        #: reported only once the failover subsystem said who holds it (see ``_resolve_orphan``).
        self.failover_enabled = False
        #: this terminal acts (sessions, card reads, presence, intents, the clerk's commands)
        self.active = True
        #: asked right before every active-only action when set (the lease, checked at that moment)
        self.lease_check: Callable[[], bool] | None = None
        self._snapshot_listeners: list[Callable[[], None]] = []
        self._snapshot_key: str | None = None
        # A session a crash cut short (from the marker), not yet reported: (id, session.ended sent)
        self._orphan: tuple[str, bool] | None = None
        # Ids of the sessions that ended here lately: the peer must not report one of them again.
        self._ended_recently: deque[str] = deque(maxlen=snapshots.ENDED_RECENTLY)
        # Documents of the running session whose image stayed on the other terminal (a takeover).
        self._images_elsewhere: set[str] = set()

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        # Listen before the slow part of the start (threads): a card already on the reader at boot is
        # read within ~100 ms of the peripherals' start, and its card.read must not be missed. The
        # handler waits until the start is done.
        self.ctx.listen("card.", self._on_peripheral)
        self.ctx.listen("presence.detected", self._on_peripheral)
        self.ctx.listen("button.help.held", self._on_peripheral)
        self.ctx.listen("button.help.pressed", self._on_peripheral)
        if self.failover_enabled:
            self.active = False
            self.machine.standby()
        try:
            await self._start()
        finally:
            self._ready.set()

    async def _start(self) -> None:
        leftovers = await asyncio.to_thread(self.documents.wipe_all)
        if leftovers:
            self.ctx.log.warning(
                "session: deleted %d undecryptable document folder(s) left by a crash", leftovers
            )
        await self._report_interrupted_session()
        if self.catalogs.load_problem:
            self.ctx.log.error("session: stored catalog ignored: %s", self.catalogs.load_problem)
        cfg = self.ctx.config.session
        self.machine.pin_is_default = await asyncio.to_thread(lambda: cfg.pin_is_default)
        if self.machine.pin_is_default:
            self.ctx.log.warning(
                "session: the technician PIN is the factory default; set session.technician_pin_hash"
            )
        self.ctx.subscribe_local(f"{INTENT_PREFIX}/#", self._on_intent)
        self.ctx.subscribe_local(MEDIA_STATE_TOPIC, self._on_media_state)
        self._publish()
        self._timer = asyncio.create_task(self._timers(), name="session-timers")

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        await self._tasks.close()
        async with self._lock:
            cut_short = self.machine.session
            if not self.active and cut_short is not None:
                # On standby the session may be the other terminal's by now: not ended here. Its marker
                # stays, and the next start decides with the failover subsystem (``_resolve_orphan``).
                self.machine.forget()
                cut_short = None
            await self._run(self.machine.stop())
            if cut_short is not None:  # said to the villager at the next start (session.ended is sent)
                await off_loop(self._mark_active, cut_short.id, ended=True)
            self._publish()
        await asyncio.to_thread(self.documents.wipe_all)

    # The id of the session in progress (no personal data) is kept on disk, so a session cut short by a
    # crash or power cut still closes its funnel with a ``session.ended`` event at the next start, and
    # the villager is told (``ended`` with reason ``restart``). A clean stop mid-session leaves
    # ``{"session_id", "ended": true}``: the event was sent, the villager is still told.
    @property
    def _active_marker(self) -> Path:
        return self.dir / "active.json"

    async def _report_interrupted_session(self) -> None:
        """At start: a marker left by a crash names a session cut short. Without failover it is reported
        now (``session.ended`` reason ``restart``, and ``ended`` tells the villager). With failover the
        other terminal may have taken it over: it is kept as the orphan until the failover subsystem
        says (``set_active``, ``take_over``, ``drop_session``; docs/session.md §10)."""
        try:
            raw = await asyncio.to_thread(self._active_marker.read_bytes)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.ctx.log.warning("session: cannot read %s: %s", self._active_marker, exc)
            return
        try:
            marker = json.loads(raw)
            sid = marker["session_id"]
            if not isinstance(sid, str) or not SESSION_ID.match(sid):
                raise ValueError(sid)
            reported = marker.get("ended", False) is True
        except (ValueError, KeyError, TypeError, AttributeError):
            self.ctx.log.warning("session: unreadable %s ignored", self._active_marker)
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._active_marker.unlink)
            return
        # kiosk-media may still be recording the dead session: close it before any new one starts
        # (recording calls run in order, so this stop comes before the next session's start).
        self._spawn(self._recording("record_stop", {}))
        self._orphan = (sid, reported)
        if self.failover_enabled:
            self.ctx.log.warning(
                "session: %s was cut short by a restart; reported once the failover role is known", sid
            )
            return
        await self._resolve_orphan(taken_over=False)

    async def _resolve_orphan(self, *, taken_over: bool) -> None:
        """Close the orphan: reported as interrupted, or (``taken_over``: the other terminal holds or
        ended it) forgotten without an event. Its marker goes either way."""
        if self._orphan is None:
            return
        sid, reported = self._orphan
        self._orphan = None
        if taken_over:
            self.ctx.log.info("session: %s, cut short here, is the other terminal's: not reported", sid)
        else:
            self.ctx.log.warning("session: %s was cut short by a restart", sid)
            if self.machine.screen is Screen.STANDBY:
                self.machine.resume()
            self.machine.interrupted()
            if not reported:
                self._ended_recently.append(sid)
                await self.ctx.emit(
                    "session.ended",
                    {
                        "session_id": sid,
                        "reason": "restart",
                        "purpose": None,
                        "last_screen": None,
                        "duration_s": None,
                        "item_id": None,
                        "recovered": True,
                    },
                )
        if self.machine.session is None or self.machine.session.id == sid:
            await off_loop(self._mark_active, None)

    def _mark_active(self, session_id: str | None, *, ended: bool = False) -> None:
        """Write or remove the marker (blocking: temp file, fsync, rename; run it through ``off_loop``)."""
        try:
            if session_id is None:
                with contextlib.suppress(FileNotFoundError):
                    self._active_marker.unlink()
            else:
                marker: dict[str, Any] = {"session_id": session_id} | ({"ended": True} if ended else {})
                write_atomic(self._active_marker, json.dumps(marker).encode())
        except OSError as exc:
            self.ctx.log.warning("session: cannot update %s: %s", self._active_marker, exc)

    def _wipe(self, session_id: str) -> None:
        """The session's documents and key, then its marker (blocking: run it through ``off_loop``)."""
        self.documents.wipe(session_id)
        self._mark_active(None)

    def health(self) -> Mapping[str, Health]:
        recording = (
            Health(HealthStatus.DEGRADED, self.recording_problem)
            if self.recording_problem
            else Health(HealthStatus.OK)
        )
        return {"session": self._session_health(), "recording": recording}

    def _session_health(self) -> Health:
        problems = []
        if self.machine.pin_is_default:
            problems.append("technician PIN is the factory default (set session.technician_pin_hash)")
        if self.catalogs.load_problem:
            problems.append(f"catalog problem, using the shipped one: {self.catalogs.load_problem[:200]}")
        if problems:
            return Health(HealthStatus.DEGRADED, "; ".join(problems))
        return Health(HealthStatus.OK)

    def busy(self) -> str | None:
        if self.machine.session is not None:
            return f"a villager session is in progress ({self.machine.session.id})"
        return None

    def capabilities(self) -> list[str]:
        return ["session.v1", "session.documents.chunked", "session.progress", "session.appointment"]

    def inventory(self) -> list[dict[str, Any]]:
        return [{"name": "session", "kind": "session", "catalog_version": self.catalogs.current.version}]

    def telemetry(self) -> dict[str, Any]:
        return {
            "screen": self.machine.screen.value,
            "sessions_started": self.sessions_started,
            "intents_rejected": self.intents_rejected,
            "catalog_version": self.catalogs.current.version,
        }

    async def reconfigure(self, new: KioskConfig) -> list[str]:
        old = self.machine.config
        restart = ["session.catalog_path"] if new.session.catalog_path != old.catalog_path else []
        async with self._lock:
            self.machine.config = new.session
            self.documents.max_bytes = new.session.max_document_bytes
            self.machine.pin_is_default = await asyncio.to_thread(lambda: new.session.pin_is_default)
            self._publish()
        self._wake.set()
        return restart

    # --- terminal failover (issue 10; docs/session.md §10) ------------------------------------------
    # The failover subsystem (appliance/failover/) holds the lease and the link to the other terminal;
    # it reads ``failover_snapshot()`` on the active terminal and hands it to ``take_over()`` on the
    # standby one. Without ``[failover]`` nobody calls these: the service is active, as it always was.

    def failover_snapshot(self) -> dict[str, Any] | None:
        """What the other terminal needs to resume the running villager session (JSON-able, version
        ``v``; docs/session.md §10), or None when there is none. No image bytes, no full ID number.
        None on standby too: a session held there is no longer this terminal's to hand on."""
        if not self.active:
            return None
        return snapshots.take(self.machine, ended_recently=list(self._ended_recently))

    def on_failover_snapshot(self, cb: Callable[[], None]) -> None:
        """Call ``cb()`` on the event loop whenever ``failover_snapshot()`` would differ (apart from its
        elapsed-time fields): a screen change, a capture accepted, the call's state or messages, the
        outcome, the session's start and end. Cheap; the caller coalesces."""
        self._snapshot_listeners.append(cb)

    def _snapshot_maybe_changed(self) -> None:
        key = json.dumps(snapshots.core(self.failover_snapshot()), sort_keys=True, ensure_ascii=False)
        if key == self._snapshot_key:
            return
        self._snapshot_key = key
        for cb in list(self._snapshot_listeners):
            try:
                cb()
            except Exception:  # noqa: BLE001 - a listener's bug must not break the session
                self.ctx.log.exception("session: failover snapshot listener failed")

    @property
    def held_session_id(self) -> str | None:
        """The session this terminal still holds (in memory, or cut short by a crash and not yet
        reported): the failover subsystem compares it with the peer's to call ``drop_session``."""
        if self.machine.session is not None:
            return self.machine.session.id
        return self._orphan[0] if self._orphan is not None else None

    def _acting(self, what: str) -> bool:
        """Is this terminal the room's active one right now? Inputs arriving otherwise are ignored."""
        if not self.active:
            self.ctx.log.info("session: %s ignored: this terminal is standby", what)
            return False
        if self.lease_check is not None and not self.lease_check():
            self.ctx.log.warning("session: %s ignored: the lease has just expired", what)
            return False
        return True

    def _refuse_on_standby(self, command: str) -> None:
        if not self.active or (self.lease_check is not None and not self.lease_check()):
            raise Conflict(
                f"{command}: this terminal is standby; the room's other terminal serves the session",
                role="standby",
            )

    async def set_active(self, active: bool, *, reason: str) -> None:
        """False: stop acting (``standby`` screen; card reads, presence, intents and the clerk's
        commands ignored or refused; the call left and the recording stopped), keeping the session in
        memory. True: act again; a session still held resumes where it was (its recording continues
        under the same id, the call is rejoined, ``session.resumed``); a session a crash cut short and
        nobody took over is reported as interrupted now."""
        await self._ready.wait()
        stop_call: str | None = None
        stop_recording = False
        async with self._lock:
            if active and self.active:
                await self._resolve_orphan(taken_over=False)
                self._publish()
                return
            if not active and not self.active:
                return
            self.ctx.log.warning("session: %s (%s)", "active" if active else "standby", reason)
            if not active:
                self.active = False
                held = self.machine.session
                self.machine.standby()
                if held is not None:
                    stop_recording = True
                    c = held.call
                    if c is not None and c.media is not None and c.status == "connected":
                        stop_call = held.id
                        c.media_state = {"state": "connecting"}
                self._publish()
            else:
                self.active = True
                await self._resolve_orphan(taken_over=False)
                held = self.machine.session
                self.machine.resume(notice="resumed" if held is not None else None)
                if held is not None:
                    await self._resumed(held.id, "reactivated", reason)
                self._publish()
        self._wake.set()
        if stop_call is not None:
            await self._recording("call_stop", {"session_id": stop_call})
        if stop_recording:
            await self._recording("record_stop", {})

    async def take_over(self, snapshot: dict[str, Any], *, reason: str) -> None:
        """Resume the other terminal's session here under the same session id (this terminal becomes
        active): its screen with ``notice`` ``taken_over``, the recording continued under the same id,
        the clerk's call rejoined with the replicated media target, ``session.resumed``, the marker
        written. A malformed snapshot raises ``SnapshotInvalid`` and changes nothing."""
        snap = snapshots.parse(snapshot)
        await self._ready.wait()
        async with self._lock:
            orphan = self._orphan[0] if self._orphan else None
            if orphan is not None:
                await self._resolve_orphan(
                    taken_over=orphan == snap.session_id or orphan in snap.ended_recently
                )
            held = self.machine.session
            local: set[str] = set()
            if held is not None and held.id == snap.session_id:
                # Our own session come back to us: the images we captured are still in our store.
                mine = {d.doc_id: (d.image or {}).get("sha256") for d in held.checklist}
                local = {
                    d.doc_id
                    for d in snap.checklist
                    if d.image is not None
                    and mine.get(d.doc_id) == d.image.sha256
                    and d.doc_id not in self._images_elsewhere
                }
            elif held is not None:
                self.ctx.log.info(
                    "session: %s dropped: the other terminal moved on to %s", held.id, snap.session_id
                )
                self.machine.forget()
                await off_loop(self._wipe, held.id)
            session, screen = snapshots.restore(self.machine, snap)
            self.machine.adopt(session, screen, snap.lang, notice="taken_over")
            self.active = True
            self._images_elsewhere = {d.doc_id for d in session.checklist if d.image} - local
            self.ctx.log.warning(
                "session: took over %s on %s (%s)", session.id, self.machine.screen.value, reason
            )
            await off_loop(self._mark_active, session.id)
            await self._resumed(session.id, "takeover", reason)
            self._publish()
        self._wake.set()

    async def _resumed(self, session_id: str, mode: str, reason: str) -> None:
        """A held or taken-over session goes on here: the recording continues under its id, the call
        is rejoined, and the platform hears ``session.resumed`` (lock held)."""
        self._spawn(self._recording("record_start", {"session_id": session_id}))
        s = self.machine.session
        c = s.call if s is not None else None
        if c is not None and c.media is not None and c.status == "connected":
            c.media_state = {"state": "connecting"}
            self._spawn(self._call_start(StartCall(session_id, c.media)))
        await self.ctx.emit(
            "session.resumed",
            {
                "session_id": session_id,
                "reason": "failover",
                "mode": mode,
                "screen": self.machine.screen.value,
                "detail": reason[:200],
            },
        )

    def drop_session(self, reason: str) -> asyncio.Task[None]:
        """The other terminal holds this session now: forget it here without ``session.ended``, wipe its
        documents and remove the marker (also for a session a crash cut short). Runs on the loop in
        order with the session's other inputs; the returned task may be awaited."""
        return asyncio.ensure_future(self._drop_session(reason))

    async def _drop_session(self, reason: str) -> None:
        await self._ready.wait()
        async with self._lock:
            held = self.machine.session
            was_active = self.active
            sid = self.machine.forget()
            if self._orphan is not None:
                await self._resolve_orphan(taken_over=True)
            if sid is not None:
                self.ctx.log.info("session: %s dropped: the other terminal holds it (%s)", sid, reason)
                await off_loop(self._wipe, sid)
                self._images_elsewhere.clear()
                if was_active:  # not expected (the failover subsystem drops on standby), but be clean
                    self._spawn(self._recording("record_stop", {}))
                    if held is not None and held.call is not None and held.call.status == "connected":
                        self._spawn(self._recording("call_stop", {"session_id": sid}))
            self._publish()
        self._wake.set()

    # --- the state topic ---------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        self.seq += 1
        return {
            "v": SCHEMA_VERSION,
            "boot": self.boot,
            "seq": self.seq,
            "ts": round(self.clock.time(), 3),
            "heartbeat_s": self.machine.config.heartbeat_s,
            **self.machine.view(),
        }

    def _publish(self) -> None:
        self.ctx.publish_state(STATE_NAME, self.state())
        if self._snapshot_listeners:
            self._snapshot_maybe_changed()

    async def _timers(self) -> None:
        """Fire the machine's timers and the heartbeat. Woken early whenever an input moved a deadline."""
        while True:
            now = self.clock.monotonic()
            due = self.machine.next_wakeup()
            delay = self.machine.config.heartbeat_s
            if due is not None:
                delay = min(delay, max(0.0, due - now))
            try:
                await wait_for(self._wake.wait(), delay + 0.005)
                self._wake.clear()  # consumed here, so a wake during the tick below is never lost
                continue  # an input changed things: compute the next deadline again
            except TimeoutError:
                pass
            try:
                async with self._lock:
                    await self._run(self.machine.tick())
                    self._publish()
            except Exception:  # noqa: BLE001 - the timer loop must survive a bug in one tick
                self.ctx.log.exception("session: timer tick failed")
                await asyncio.sleep(1.0)

    # --- inputs ------------------------------------------------------------------------------------

    async def _on_intent(self, topic: str, payload: bytes) -> None:
        name = topic[len(INTENT_PREFIX) + 1 :] if topic.startswith(INTENT_PREFIX + "/") else ""
        try:
            if not name or "/" in name:
                raise IntentRejected(f"intent topic {topic!r} must be {INTENT_PREFIX}/NAME")
            if len(payload) > MAX_INTENT_BYTES:
                raise IntentRejected(f"{name}: body is {len(payload)} bytes; at most {MAX_INTENT_BYTES}")
            try:
                body = decode_json_object(payload, f"intent {name}") if payload.strip() else {}
            except ValueError as exc:
                raise IntentRejected(str(exc)) from None
            if not self._acting(f"intent {name}"):
                return
            async with self._lock:
                before = self.machine.session
                effects = self.machine.intent(name, body)
                self._count_start(before)
                await self._run(effects)
                self._publish()
            self._wake.set()
        except IntentRejected as exc:
            self.intents_rejected += 1
            self.last_rejection = str(exc)
            self.ctx.log.warning("session: intent ignored: %s", exc)

    async def _on_peripheral(self, type: str, data: dict[str, Any]) -> None:
        await self._ready.wait()
        if not isinstance(data, dict):
            data = {}
        if not self._acting(type):
            return
        async with self._lock:
            before = self.machine.session
            if type == "card.read":
                effects = self.machine.card_read(data)
            elif type == "card.error":
                effects = self.machine.card_read({})  # unreadable: a notice on the identify screen
            elif type == "card.removed":
                effects = self.machine.card_removed()
            elif type == "presence.detected":
                effects = self.machine.presence()
            elif type == "button.help.held":
                effects = self.machine.help_held()
            elif type == "button.help.pressed":
                effects = self.machine.help_pressed()
            else:
                return
            self._count_start(before)
            await self._run(effects)
            self._publish()
        self._wake.set()

    def _count_start(self, before: object) -> None:
        if self.machine.session is not None and self.machine.session is not before:
            self.sessions_started += 1

    # --- effects -----------------------------------------------------------------------------------

    async def _run(self, effects: list[Effect]) -> None:
        """Carry out effects in order (called with the lock held)."""
        for eff in effects:
            try:
                if isinstance(eff, Emit):
                    if eff.type == "session.started":
                        await off_loop(self._mark_active, eff.data["session_id"])
                        # Every service session is recorded for later review (回溯).
                        self._spawn(self._recording("record_start", {"session_id": eff.data["session_id"]}))
                    await self.ctx.emit(eff.type, eff.data)
                elif isinstance(eff, CaptureDocument):
                    self._spawn(self._capture(eff))
                elif isinstance(eff, KeepCapture):
                    await off_loop(self.documents.keep, eff.session_id, eff.doc_id)
                    self._images_elsewhere.discard(eff.doc_id)
                elif isinstance(eff, DropCapture):
                    await off_loop(self.documents.drop_pending, eff.session_id, eff.doc_id)
                elif isinstance(eff, DropDocument):
                    await off_loop(self.documents.drop, eff.session_id, eff.doc_id)
                elif isinstance(eff, WipeSession):
                    # Awaited here, so the wipe is over before the state topic says the session ended.
                    await off_loop(self._wipe, eff.session_id)
                    self._ended_recently.append(eff.session_id)
                    self._images_elsewhere.clear()
                    self._spawn(self._recording("record_stop", {}))
                    self._spawn(self._recording("call_stop", {"session_id": eff.session_id}))
                elif isinstance(eff, StartCall):
                    self._spawn(self._call_start(eff))
                elif isinstance(eff, Signal):
                    await self.ctx.emit(eff.type, eff.data, durable=False)
                elif isinstance(eff, StopCall):
                    self._spawn(self._recording("call_stop", {"session_id": eff.session_id}))
                elif isinstance(eff, PrintReceipt):
                    # Off the lock and the loop: a printer out of paper or switched off never holds
                    # the villager's session; its answer comes back through print_finished.
                    self._spawn(self._print(eff))
                elif isinstance(eff, RunSelfTest):
                    self._spawn(self._self_test(eff.peripheral))
                elif isinstance(eff, RefreshTechnician):
                    self.machine.set_technician_status(await self._device_status())
            except KioskError as exc:
                # The transition already happened; a failed side effect is logged, never half-undone.
                self.ctx.log.error("session: %s failed: %s", type(eff).__name__, exc)

    async def _recording(self, method: str, params: dict[str, Any]) -> None:
        """Start/stop the session's recording in the media process; its absence never blocks a villager.

        Calls run one at a time in the order asked. A start refused with 409 means kiosk-media still
        records another session (one a crash cut short): that recording is stopped and the start tried
        again once. A start that still fails is the ``recording`` health's reason until one succeeds.
        Other calls (``record_stop``, ``call_stop``) answer 409 when there is nothing to stop: fine."""
        async with self._recording_lock:
            try:
                await self.ctx.call_rpc("media", method, params, timeout_s=5.0)
            except CommandError as exc:
                if method != "record_start":
                    if exc.status != 409:
                        self.ctx.log.warning("session: media %s failed (%s): %s", method, exc.status, exc)
                    return
                if exc.status == 409:
                    stale = exc.detail.get("recording")
                    self.ctx.log.warning(
                        "session: media records %s, not %s: stopping it (orphaned by a restart)",
                        stale or "another session",
                        params.get("session_id"),
                    )
                    try:
                        try:
                            await self.ctx.call_rpc("media", "record_stop", {}, timeout_s=5.0)
                        except CommandError as stop:
                            if stop.status != 409:  # 409: it stopped meanwhile
                                raise
                        await self.ctx.call_rpc("media", method, params, timeout_s=5.0)
                    except CommandError as again:
                        exc = again
                    else:
                        self.recording_problem = None
                        return
                self.recording_problem = (
                    f"session {params.get('session_id')} is not recorded: media refused record_start "
                    f"({exc.status}): {str(exc)[:200]}"
                )
                self.ctx.log.error("session: %s", self.recording_problem)
                return
            if method == "record_start":
                self.recording_problem = None

    async def _call_start(self, eff: StartCall) -> None:
        """Hand the call's media to kiosk-media; if it cannot take it, the call goes on as text and
        the screen says so (the clerk's messages still arrive)."""
        try:
            await self.ctx.call_rpc(
                "media", "call_start", {"session_id": eff.session_id, "media": eff.media}, timeout_s=5.0
            )
        except CommandError as exc:
            self.ctx.log.warning("session: media call_start failed (%s): %s", exc.status, exc)
            async with self._lock:
                report = {"session_id": eff.session_id, "state": "failed", "reason": str(exc)}
                if call_flow.media_reported(self.machine, report):
                    self._publish()

    async def _print(self, eff: PrintReceipt) -> None:
        """Have the peripherals' ``printer`` service print the receipt; a silent or failing printer
        is shown as "get it at the window / scan the code", and reported by the printer driver."""
        printer = self.ctx.config.drivers.printer
        limit = (printer.print_timeout_s if printer else 10.0) + PRINT_MARGIN_S
        params = {"job": eff.job, "session_id": eff.session_id, "receipt": eff.receipt}
        try:
            reply = await self.ctx.call_rpc("printer", "print", params, timeout_s=limit)
            printed = reply.get("printed") is True
            status, code = (
                ("printed", None) if printed else ("failed", str(reply.get("code") or "printer.error"))
            )
        except CommandError as exc:
            status, code = "failed", f"printer.rpc_{exc.status}"
            self.ctx.log.warning("session: printing the %s failed (%s): %s", eff.job, exc.status, exc)
        async with self._lock:
            if self.machine.print_finished(eff.session_id, eff.job, status, code):
                self._publish()

    def _on_media_state(self, topic: str, payload: bytes) -> None:
        try:
            state = decode_json_object(payload, f"state on {topic}") if payload else None
        except ValueError:
            return  # MediaControl logs unreadable media states
        report = (state or {}).get("call")
        if not self.active:
            return  # the call was left for the other terminal: this media's report is not the screen's
        if isinstance(report, dict) and call_flow.media_reported(self.machine, report):
            self._publish()

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    async def _capture(self, eff: CaptureDocument) -> None:
        sealed, error, source = None, None, None
        try:
            reply = await self.ctx.call_rpc("media", "doccam_capture", {}, timeout_s=CAPTURE_TIMEOUT_S)
            # the media process says "size" (docs of edge_media.service); "bytes" is accepted as well
            path, sha, size = reply.get("path"), reply.get("sha256"), reply.get("size", reply.get("bytes"))
            if (
                not isinstance(path, str)
                or not isinstance(sha, str)
                or isinstance(size, bool)
                or not isinstance(size, int)
            ):
                raise DocumentStoreError(f"doccam_capture answered without path/sha256/size: {sorted(reply)}")
            source = Path(path)
            sealed = await asyncio.to_thread(
                self.documents.seal_file,
                eff.session_id,
                eff.doc_id,
                source,
                expect_sha256=sha,
                expect_bytes=size,
            )
        except CommandError as exc:
            error = f"document camera: {exc}"
        except DocumentStoreError as exc:
            error = str(exc)
        finally:
            if source is not None:
                # The plaintext the camera wrote must not outlive this moment.
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(source.unlink)
        async with self._lock:
            if sealed is not None:
                try:
                    if self.machine.session is None or self.machine.session.id != eff.session_id:
                        raise DocumentStoreError("session ended during the capture")
                    await off_loop(self.documents.write_pending, sealed)
                except DocumentStoreError as exc:
                    error, sealed = str(exc), None
            effects = self.machine.capture_finished(
                eff.session_id, eff.doc_id, eff.attempt, image=sealed.meta if sealed else None, error=error
            )
            if effects is None:
                if self.machine.session is None or self.machine.session.id != eff.session_id:
                    await off_loop(self.documents.wipe, eff.session_id)  # the pending file with the rest
                else:
                    await off_loop(self.documents.drop_pending, eff.session_id, eff.doc_id)
                return
            await self._run(effects)
            self._publish()
        self._wake.set()

    async def _device_status(self) -> dict[str, Any]:
        """Device, peripherals and network for the technician screen, from what the daemon lends:
        ``ctx.device_status()`` if it offers one, else its ``health_map()``/``inventory()``, else the config."""
        provider = getattr(self.ctx, "device_status", None)
        if provider is not None:
            try:
                result = provider()
                if asyncio.iscoroutine(result):
                    result = await result
                if isinstance(result, dict):
                    return result
            except Exception as exc:  # noqa: BLE001 - diagnostics must never take the session down
                self.ctx.log.warning("session: device_status failed: %r", exc)
        cfg = self.ctx.config
        health = self._health_map()
        kinds: dict[str, str] = {}
        inventory = getattr(self.ctx, "inventory", None)
        if callable(inventory):
            with contextlib.suppress(Exception):
                kinds = {
                    str(i.get("name")): str(i.get("kind", "")) for i in inventory() if isinstance(i, dict)
                }
        peripherals = [
            {"name": n, "kind": kinds.get(n, ""), "status": str(h.status), "reason": h.reason}
            for n, h in health.items()
            if n in kinds
        ]
        fleet = health.get("fleet")
        return {
            "device": {"id": cfg.device.id, "name": cfg.device.name, "role": cfg.device.role},
            "peripherals": peripherals,
            "network": {
                "fleet": "unknown"
                if fleet is None
                else ("connected" if fleet.status == HealthStatus.OK else "disconnected"),
                "detail": fleet.reason
                if fleet is not None and fleet.reason
                else f"{cfg.fleet.host}:{cfg.fleet.port}",
            },
            # The kernel's NTP state (adjtimex), as every stored event's clock says it.
            "clock": {"synced": clock_synced()},
        }

    def _health_map(self) -> dict[str, Health]:
        getter = getattr(self.ctx, "health_map", None)
        if not callable(getter):
            return {}
        try:
            result = getter()
        except Exception as exc:  # noqa: BLE001 - diagnostics must never take the session down
            self.ctx.log.warning("session: health_map failed: %r", exc)
            return {}
        return dict(result) if isinstance(result, Mapping) else {}

    async def _self_test(self, peripheral: str) -> None:
        """``ctx.self_test(name)`` when the daemon offers one; otherwise a live health check."""
        runner = getattr(self.ctx, "self_test", None)
        if runner is not None:
            try:
                result = await runner(peripheral)
                status, detail = str(result.get("status", "failed")), str(result.get("detail", ""))
            except Exception as exc:  # noqa: BLE001 - a failing test is a result, not a crash
                status, detail = "failed", str(exc)
        else:
            health = self._health_map().get(peripheral)
            if health is None:
                status, detail = "unsupported", "no health information for this peripheral"
            else:
                status = "passed" if health.status == HealthStatus.OK else "failed"
                detail = health.reason or f"health {health.status}"
        async with self._lock:
            await self._run(self.machine.test_finished(peripheral, status, detail))
            if self.machine.technician is not None:
                self.machine.set_technician_status(await self._device_status())
            self._publish()

    # --- platform commands -------------------------------------------------------------------------

    # Replies of these commands carry personal data (the full identity, document bytes): the daemon's
    # dispatcher must not keep them on disk for duplicate detection.
    PERSONAL_REPLIES = ("session.identity.get", "session.document.get")

    def commands(self) -> Mapping[str, CommandSpec]:
        # One model per command: the dispatcher validates the body with it, and the machine's own
        # commands hand the validated model on to ``SessionMachine.command``, which takes it as is.
        specs = [
            (name, cmd.summary, cmd.params, self._machine_command(name))
            for name, cmd in self.machine.commands.items()
        ]
        specs += [
            (
                "session.document.get",
                "a hash-checked chunk of an accepted document image (personal)",
                DocumentGetParams,
                self._document_get,
            ),
            (
                "session.catalog.set",
                "replace the service catalog (versioned; newer versions only)",
                CatalogSetParams,
                self._catalog_set,
            ),
        ]
        return {
            name: CommandSpec(
                name=name,
                summary=summary,
                params=params,
                handler=handler,
                personal=name in self.PERSONAL_REPLIES,
                process="appliance",
            )
            for name, summary, params, handler in specs
        }

    def _machine_command(self, name: str) -> Callable[[Params], Awaitable[dict[str, Any]]]:
        async def handler(params: Params) -> dict[str, Any]:
            media = getattr(params, "media", None) if name == "session.call.accepted" else None
            if media is not None:  # the kiosk's policy: TLS only, unless plain loopback is allowed
                try:
                    media.check_url(self.ctx.config.media.call.allow_plain_loopback)
                except ValueError as exc:
                    raise BadRequest(f"media.url: {exc}", field="media.url") from None
            if name != "session.status":
                self._refuse_on_standby(name)
            async with self._lock:
                reply, effects = self.machine.command(name, params)
                if effects or name != "session.status":
                    await self._run(effects)
                    self._publish()
            self._wake.set()
            return reply

        return handler

    async def _document_get(self, params: DocumentGetParams) -> dict[str, Any]:
        """A chunk of an accepted document image (docs/session.md §4.1)."""
        self._refuse_on_standby("session.document.get")
        offset, length = params.offset, params.length
        limit = self.machine.config.doc_chunk_max
        if length > limit:  # the configuration's limit, so not the model's
            raise BadRequest(
                f"session.document.get: length must be an integer 1-{limit}, got {length}", field="length"
            )
        async with self._lock:
            session_id, doc = self.machine.document_meta(params)
            assert doc.image is not None
            if doc.doc_id in self._images_elsewhere:
                raise Conflict(
                    f"document {doc.doc_id} was captured on the other terminal before the failover and "
                    "its image was not replicated; ask for it again with session.request_document "
                    f"doc_id {doc.doc_id}",
                    image_elsewhere=True,
                )
            if offset > doc.image["bytes"]:
                raise BadRequest(f"offset: {offset} is beyond the document's {doc.image['bytes']} bytes")
            try:
                chunk, total, digest, chunk_sha256, data = await asyncio.to_thread(
                    self._read_chunk, session_id, doc.doc_id, offset, length
                )
            except DocumentStoreError as exc:
                raise CommandError(500, f"document {doc.doc_id}: {exc}") from None
        if digest != doc.image["sha256"]:  # cannot happen unless the store and the machine disagree
            raise Conflict(f"document {doc.doc_id} is being replaced; start again from offset 0")
        return {
            "doc_id": doc.doc_id,
            "offset": offset,
            "length": len(chunk),
            "total_bytes": total,
            "sha256": digest,
            "chunk_sha256": chunk_sha256,
            "data": data,
            "eof": offset + len(chunk) >= total,
        }

    def _read_chunk(
        self, session_id: str, doc_id: str, offset: int, length: int
    ) -> tuple[bytes, int, str, str, str]:
        """Decrypt a chunk, hash it and encode it for the reply (blocking, up to ``doc_chunk_max`` bytes)."""
        chunk, total, digest = self.documents.read(session_id, doc_id, offset, length)
        return (
            chunk,
            total,
            digest,
            hashlib.sha256(chunk).hexdigest(),
            base64.b64encode(chunk).decode("ascii"),
        )

    async def _catalog_set(self, params: CatalogSetParams) -> dict[str, Any]:
        async with self._lock:
            try:
                applied = await asyncio.to_thread(self.catalogs.apply, params.version, params.catalog)
            except CatalogInvalid as exc:
                raise BadRequest(str(exc), problems=exc.problems) from None
            except OSError as exc:
                raise CommandError(500, f"cannot store the catalog: {exc}") from None
            current = self.catalogs.current
            if applied:
                self.machine.set_catalog(current)
                await self._run(
                    [
                        Emit(
                            "session.catalog.applied",
                            {
                                "version": current.version,
                                "items": len(current.items),
                                "departments": len(current.departments),
                            },
                        )
                    ]
                )
                self._publish()
        return {"applied": applied, "version": current.version}


class CatalogSetParams(Params):
    """``session.catalog.set``: the catalog itself is checked by ``CatalogStore.apply`` (docs/session.md
    §6), which lists every problem it finds."""

    version: int = Field(ge=1)
    catalog: dict[str, Any]
