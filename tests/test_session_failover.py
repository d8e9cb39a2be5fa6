"""Terminal failover, the session's side (issue 10; docs/session.md §10).

The active terminal's snapshot of the villager's session round-trips at every screen of a visit; a
hostile or truncated snapshot is refused and changes nothing; a terminal put on standby mid-call leaves
the call and stops the recording but keeps the session; the backup takes the session over under the
same id, on the same screen, with the checklist, rejoins the call with the same media target and
records on under the same session id; the old terminal drops it without ``session.ended``. Both
terminals run on their own real local mosquitto, with a stand-in for kiosk-media on each. And kiosk-media
itself: two ``record_start`` for one session give one session in its index, both parts playable.
"""

from __future__ import annotations

import asyncio
import copy
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from session_helpers import CLERK, LI_SI, ZHANG_SAN, HandClock, capture, make_machine, to_call, to_documents
from test_media_service import MEDIA as MEDIA_CONFIG
from test_media_service import running_media
from test_session_call_media import MEDIA, StandInMedia
from test_session_service import BusContext, Ui, capture_and_keep, command, intents_flowing, kiosk_config

from appliance.session import snapshot as snapshots
from appliance.session.errors import SnapshotInvalid
from appliance.session.machine import CaptureDocument, Screen, SessionMachine
from appliance.session.service import SessionService
from kiosk_core.errors import CommandError
from sim.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(60)

# --- the snapshot at every screen of a visit (the pure machine) ---------------------------------------

SLOTS = [
    {"slot_id": "sl-1", "start": "2026-11-23T09:00:00+08:00", "end": "2026-11-23T09:20:00+08:00"},
    {"slot_id": "sl-2", "start": "2026-11-23T10:00:00+08:00", "end": "2026-11-23T10:20:00+08:00"},
]


def sid(m: SessionMachine) -> dict[str, str]:
    return {"session_id": m.session.id}


def at_catalog(m: SessionMachine) -> None:
    m.presence()
    m.intent("select_department", {"department_id": "minzheng"})


def at_identify(m: SessionMachine) -> None:
    at_catalog(m)
    m.intent("select_item", {"item_id": "minzheng.low_income_allowance"})


def at_confirm_identity(m: SessionMachine) -> None:
    at_identify(m)
    m.card_read(ZHANG_SAN)


def at_documents(m: SessionMachine) -> None:
    to_documents(m)
    capture(m, "hukou_book", 1)


def at_capture_review(m: SessionMachine) -> None:
    at_documents(m)
    m.intent("capture", {"doc_id": "income_proof"})
    (shoot,) = m.intent("shoot", {})
    assert isinstance(shoot, CaptureDocument)
    m.capture_finished(
        shoot.session_id, "income_proof", shoot.attempt, image={"sha256": "ab" * 32, "bytes": 9}
    )


def at_card_removed(m: SessionMachine) -> None:
    at_documents(m)
    m.card_removed()


def at_call_waiting(m: SessionMachine) -> None:
    at_documents(m)
    capture(m, "income_proof", 2)
    m.intent("call", {})
    m.command("session.call.queued", {**sid(m), "position": 2, "estimated_wait_s": 120})


def at_call(m: SessionMachine) -> None:
    to_call(m, MEDIA)
    m.command("session.message", {**sid(m), "text": "请出示户口本首页"})
    m.intent("reply", {"code": "wait"})
    m.command("session.request_document", {**sid(m), "name": "身份证背面", "note": "正反面"})


def at_receipt(m: SessionMachine) -> None:
    at_call(m)
    m.command("session.approve", {**sid(m), "application_no": "SQ-2026-0042", "override_missing": True})


def at_rejected(m: SessionMachine) -> None:
    to_call(m)
    m.command("session.reject", {**sid(m), "reason": "收入证明已过期"})


def at_rating(m: SessionMachine) -> None:
    at_receipt(m)
    m.intent("continue", {})


def at_progress(m: SessionMachine) -> None:
    m.presence()
    m.intent("progress", {})
    m.card_read(ZHANG_SAN)
    m.intent("confirm", {})
    apps = [{"application_no": "SQ-9", "item_name": "最低生活保障申请", "status": "in_review"}]
    m.command("session.progress.result", {**sid(m), "applications": apps})


def at_appointment_booked(m: SessionMachine) -> None:
    m.presence()
    m.intent("appointment", {})
    m.intent("select_department", {"department_id": "shebao"})
    m.card_read(ZHANG_SAN)
    m.intent("confirm", {})
    m.command("session.appointment.slots", {**sid(m), "department_id": "shebao", "slots": SLOTS})
    m.intent("book", {"slot_id": "sl-1"})
    m.command("session.appointment.confirmed", {**sid(m), "slot_id": "sl-1", "booking_no": "YY-7"})


def under_the_pin_pad(m: SessionMachine) -> None:
    at_documents(m)
    m.help_held()
    assert m.screen is Screen.TECHNICIAN_PIN


# (scenario, the screen the peer resumes on)
VISIT: list[tuple[Callable[[SessionMachine], None], str]] = [
    (at_catalog, "catalog"),
    (at_identify, "identify"),
    (at_confirm_identity, "identify"),  # the candidate card was read on the peer: read it here
    (at_documents, "documents"),
    (at_capture_review, "capture"),  # back at the preview: the picture not accepted stayed there
    (at_card_removed, "card_removed"),
    (at_call_waiting, "call_waiting"),
    (at_call, "call"),
    (at_receipt, "receipt"),
    (at_rejected, "rejected"),
    (at_rating, "rating"),
    (at_progress, "progress"),
    (at_appointment_booked, "appointment"),
    (under_the_pin_pad, "documents"),  # the technician's screens are this terminal's own
]

PERSONAL = ("33080319900307123X", "photo_wlt", "nation", "汉", "sex")


def over_the_wire(snap: dict[str, Any]) -> dict[str, Any]:
    """What the replication link does to it: JSON text and back."""
    return json.loads(json.dumps(snap, ensure_ascii=False))


def resumed(snap: dict[str, Any], clock: HandClock) -> SessionMachine:
    peer = make_machine(clock)
    session, screen = snapshots.restore(peer, snapshots.parse(over_the_wire(snap)))
    peer.adopt(session, screen, snap["lang"], "taken_over")
    return peer


@pytest.mark.parametrize(("walk", "screen"), VISIT, ids=[w.__name__ for w, _ in VISIT])
def test_the_snapshot_round_trips_at_every_screen_of_a_visit(walk, screen: str):
    clock = HandClock()
    m = make_machine(clock)
    walk(m)
    m.lang = "en"
    snap = snapshots.take(m)
    assert snap is not None and snap["v"] == 1 and snap["session_id"] == m.session.id
    text = json.dumps(snap, ensure_ascii=False)
    assert not [p for p in PERSONAL if p in text], "no full number, no card fields"
    for doc in snap["checklist"]:
        assert doc["image"] is None or set(doc["image"]) == {"sha256", "bytes", "mime"}

    peer = resumed(snap, HandClock(clock.t))  # (elapsed times: the call's test below)
    assert peer.screen.value == screen and peer.session.id == m.session.id and peer.lang == "en"
    assert peer.view()["notice"] == {"code": "taken_over", "params": {}}
    again = snapshots.take(peer)
    assert again is not None
    # Everything but elapsed times and the one step back where the peer kept what is not replicated.
    first, second = snapshots.core(snap), snapshots.core(again)
    first["screen"] = second["screen"]
    if walk is at_confirm_identity:  # the unconfirmed candidate is not replicated
        assert snap["identity"] is None and second["identity"] is None
    if snap.get("printing") and snap["printing"]["status"] == "printing":
        first["printing"] = second["printing"]
    assert first == second
    # what the villager sees is what they saw (the call's media state restarts at connecting)
    if screen == m.screen.value and screen != "capture":
        mine, theirs = m.view()["view"], peer.view()["view"]
        if screen == "call":
            mine["media"] = theirs["media"]
        assert mine == theirs
        assert m.view()["identity"] == peer.view()["identity"]


def test_no_snapshot_without_a_villager_session():
    m = make_machine()
    assert snapshots.take(m) is None
    m.presence()
    m.intent("end", {})
    assert m.screen is Screen.ENDED and snapshots.take(m) is None


def test_the_call_snapshot_carries_the_media_target_and_the_timers_as_elapsed_time():
    clock = HandClock()
    m = make_machine(clock)
    at_call(m)
    clock.advance(12.5)
    snap = snapshots.take(m)
    call = snap["call"]
    assert call["media"]["token"] == MEDIA["token"] and call["media"]["pin"] == MEDIA["pin"]
    assert call["status"] == "connected" and call["clerk"]["id"] == CLERK["id"]
    assert [msg["from"] for msg in call["messages"]] == ["clerk", "villager"]
    assert call["connected_s"] == 12.5 and call["messages"][0]["age_s"] == 12.5
    assert snap["identity"] == {"id_masked": "3308**********123X", "name": "张三", "card_present": True}
    assert snap["recording"] == {"session_id": m.session.id}
    assert snap["doc_requests"] == 1 and snap["checklist"][-1]["doc_id"] == "req-1"
    # the peer's next request gets a fresh id, not req-1 again
    peer = resumed(snap, HandClock(clock.t))
    reply, _ = peer.command("session.request_document", {**sid(peer), "name": "结婚证"})
    assert reply == {"doc_id": "req-2"}


def test_standby_keeps_the_session_still_and_resume_returns_to_its_screen():
    clock = HandClock()
    m = make_machine(clock, idle_timeout_s=60, idle_warning_s=10)
    at_documents(m)
    m.standby()
    view = m.view()
    assert view["screen"] == "standby" and view["actions"] == [] and view["session_id"] is None
    assert view["identity"] is None and view["idle"] is None
    clock.advance(600)
    assert m.tick() == [] and m.next_wakeup() is None and m.session is not None
    assert m.resume("resumed") is Screen.DOCUMENTS
    assert m.view()["notice"]["code"] == "resumed" and m.countdown() is None
    clock.advance(55)
    assert m.countdown() == 5  # the idle timer started afresh at the resume


# --- hostile snapshots -----------------------------------------------------------------------------


def sample() -> dict[str, Any]:
    m = make_machine()
    at_call(m)
    return over_the_wire(snapshots.take(m))


SAMPLE = sample()


def without(key: str) -> dict[str, Any]:
    snap = copy.deepcopy(SAMPLE)
    del snap[key]
    return snap


def with_(**change: Any) -> dict[str, Any]:
    return {**copy.deepcopy(SAMPLE), **change}


HOSTILE = [
    ("not an object", [SAMPLE], "JSON object"),
    ("version 2", with_(v=2), "v"),
    ("no version", without("v"), "v"),
    ("another kind", with_(kind="kiosk.other"), "kind"),
    ("truncated: no session id", without("session_id"), "session_id"),
    ("a path for a session id", with_(session_id="../../etc"), "session_id"),
    ("the technician's screen", with_(screen="technician"), "screen"),
    ("ended", with_(screen="ended"), "screen"),
    ("an unknown key", with_(full_id_number="33080319900307123X"), "full_id_number"),
    ("a number as text", with_(requests="3"), "requests"),
    ("a bool as a count", with_(requests=True), "requests"),
    ("negative age", with_(age_s=-1), "age_s"),
    ("infinite idle", with_(idle_s=float("inf")), "idle_s"),
    ("the call screen without a call", with_(call=None), "needs call"),
    (
        "a capture of a paper not on the checklist",
        with_(screen="capture", capture={"doc_id": "x", "return_to": "documents"}),
        "capture",
    ),
    ("doc ids repeated", with_(checklist=SAMPLE["checklist"] + SAMPLE["checklist"][:1]), "repeated"),
    (
        "an image without its hash",
        with_(checklist=[{**SAMPLE["checklist"][0], "image": {"bytes": 3, "mime": "x"}}]),
        "sha256",
    ),
    (
        "the media target of another kind",
        with_(call={**SAMPLE["call"], "media": {**SAMPLE["call"]["media"], "kind": "whip"}}),
        "media",
    ),
    ("another session's recording", with_(recording={"session_id": "s-ffffffffffffffff"}), "recording"),
    (
        "ten thousand messages",
        with_(call={**SAMPLE["call"], "messages": SAMPLE["call"]["messages"] * 5000}),
        "messages",
    ),
    (
        "identity with the full number",
        with_(identity={**SAMPLE["identity"], "id_number": "33080319900307123X"}),
        "identity",
    ),
]


@pytest.mark.parametrize(("what", "snap", "says"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_or_truncated_snapshot_is_refused_with_a_clear_error(what: str, snap: Any, says: str):
    with pytest.raises(SnapshotInvalid, match="failover snapshot") as refused:
        snapshots.parse(snap)
    assert says in str(refused.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, (*prefix, i))
    return out


SAMPLE_PATHS = paths(SAMPLE)[1:]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(where=st.sampled_from(SAMPLE_PATHS), value=JSON, drop=st.booleans())
def test_any_mangled_snapshot_is_refused_or_resumes_cleanly(where: tuple, value: Any, drop: bool):
    snap = copy.deepcopy(SAMPLE)
    parent = snap
    for key in where[:-1]:
        parent = parent[key]
    if drop and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = value
    try:
        parsed = snapshots.parse(snap)
    except SnapshotInvalid:
        return
    peer = make_machine()
    session, screen = snapshots.restore(peer, parsed)
    peer.adopt(session, screen, parsed.lang, "taken_over")
    json.dumps(peer.view())  # every screen renders what it was given
    assert snapshots.take(peer) is not None


# --- two terminals, each on its own local mosquitto ----------------------------------------------


class RecordingMedia(StandInMedia):
    """kiosk-media's stand-in that also keeps the recording calls."""

    def __init__(self, port: int, directory: Path) -> None:
        super().__init__(port, directory)
        self.recording: str | None = None

    async def _record(self, params: dict[str, Any]) -> dict[str, Any]:
        if "session_id" in params:
            self.calls.append(("record_start", params))
            self.recording = params["session_id"]
            return {"session_id": params["session_id"], "dir": "/x", "continued": False}
        self.calls.append(("record_stop", params))
        if self.recording is None:
            raise CommandError(409, "nothing is being recorded")
        self.recording = None
        return {"session_id": None, "segments": 1, "bytes": 1}


class Terminal:
    """One terminal of the room: its own broker, appliance session service, screen and media."""

    def __init__(self, name: str, tmp: Path) -> None:
        self.name, self.tmp = name, tmp / name
        self.broker = Mosquitto(workdir=self.tmp / "bus-broker", name=f"bus-{name}")
        self.data = self.tmp / "data"

    async def start(self, *, failover: bool = False, clock: HandClock | None = None) -> Terminal:
        from kiosk_core.localbus import LocalBus

        self.bus = LocalBus("127.0.0.1", self.broker.port, name=f"appliance-{self.name}")
        await self.bus.start()
        self.ctx = BusContext(kiosk_config(self.data), self.data, self.bus)
        self.service = SessionService(self.ctx, clock=clock or HandClock(time.monotonic()))
        self.service.failover_enabled = failover
        self.changes = 0
        self.service.on_failover_snapshot(self._changed)
        self.ui = await Ui(self.broker.port).start()
        self.media = await RecordingMedia(self.broker.port, self.tmp / "media").start()
        await self.service.start()
        if not failover:
            await intents_flowing(self.ui)
        return self

    def _changed(self) -> None:
        self.changes += 1

    async def stop(self) -> None:
        await self.service.stop()
        for b in (self.ui.bus, self.media.bus, self.bus):
            await b.stop()

    @property
    def marker(self) -> Path:
        return self.data / "session" / "active.json"

    def events(self, type: str) -> list[dict[str, Any]]:
        return [d for t, d in self.ctx.events if t == type]


@pytest.fixture
async def room(tmp_path: Path):
    main, backup = Terminal("main", tmp_path), Terminal("backup", tmp_path)
    started: list[Terminal] = []
    with main.broker, backup.broker:

        async def start(t: Terminal, **kw: Any) -> Terminal:
            await t.start(**kw)
            started.append(t)
            return t

        yield main, backup, start
        for t in started:
            await t.stop()


async def to_call_with_media(t: Terminal) -> str:
    """On ``t``: Zhang San chooses the low-income allowance, shows both papers, a clerk accepts with media."""
    ui = t.ui
    await t.ctx.emit("presence.detected", {})
    await ui.screen("catalog")
    ui.send("select_department", {"department_id": "minzheng"})
    await ui.wait(lambda s: s["view"].get("department") is not None, "items")
    ui.send("select_item", {"item_id": "minzheng.low_income_allowance"})
    await ui.screen("identify")
    await t.ctx.emit("card.read", ZHANG_SAN)
    await ui.screen("confirm_identity")
    ui.send("confirm")
    await ui.screen("documents")
    for doc in ("hukou_book", "income_proof"):
        await capture_and_keep(ui, doc)
    ui.send("call")
    state = await ui.screen("call_waiting")
    sid = state["session_id"]
    await command(t.service, "session.call.accepted", {"session_id": sid, "clerk": CLERK, "media": MEDIA})
    await ui.screen("call")
    await command(t.service, "session.message", {"session_id": sid, "text": "请稍等，我看一下材料"})
    await ui.wait(lambda s: len(s["view"]["messages"]) == 1, "the clerk's message")
    return sid


async def until(predicate: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.02)


async def test_standby_mid_call_then_the_backup_takes_the_session_over_under_the_same_id(room):
    main_t, backup_t, start = room
    main = await start(main_t)
    backup = await start(backup_t, failover=True)
    await backup.ui.screen("standby")
    assert backup.service.failover_snapshot() is None

    sid = await to_call_with_media(main)
    assert main.changes >= 6, "the snapshot changed at every step"
    assert ("record_start", {"session_id": sid}) in main.media.calls
    snap = main.service.failover_snapshot()
    assert snap["screen"] == "call" and snap["call"]["media"] == MEDIA

    on_main = copy.deepcopy(main.ui.state)
    # The main terminal loses the lease in the middle of the call.
    await main.service.set_active(False, reason="lease lost")
    state = await main.ui.screen("standby")
    assert state["session_id"] is None and state["identity"] is None and state["actions"] == []
    assert main.media.of("call_stop") == [{"session_id": sid}]
    assert main.media.calls[-1] == ("record_stop", {})
    assert main.service.held_session_id == sid and main.marker.exists()
    assert main.service.failover_snapshot() is None  # not this terminal's to hand on any more
    # On standby it acts on nothing: the card, presence, intents, the clerk's commands.
    await main.ctx.emit("card.read", LI_SI)
    await main.ctx.emit("presence.detected", {})
    main.ui.send("end")
    with pytest.raises(CommandError) as refused:
        await command(main.service, "session.message", {"session_id": sid, "text": "还在吗"})
    assert refused.value.status == 409 and "standby" in str(refused.value)
    await asyncio.sleep(0.2)
    assert main.ui.state["screen"] == "standby" and main.service.machine.session.id == sid
    assert main.events("session.ended") == []

    # The backup takes it over: same id, same screen, the checklist, the call rejoined, recording on.
    await backup.service.take_over(snap, reason="lease granted")
    state = await backup.ui.screen("call")
    assert state["session_id"] == sid and state["notice"] == {"code": "taken_over", "params": {}}
    assert state["identity"] == {"name": "张三", "id_masked": "3308**********123X"}
    assert state["view"]["checklist"] == on_main["view"]["checklist"]
    docs = {d["doc_id"]: d["status"] for d in state["view"]["checklist"]}
    assert docs["hukou_book"] == docs["income_proof"] == "captured"
    assert [m["text"] for m in state["view"]["messages"]] == ["请稍等，我看一下材料"]
    await until(lambda: backup.media.of("call_start") != [], "call_start on the backup")
    assert backup.media.of("call_start") == [{"session_id": sid, "media": MEDIA}]
    assert backup.media.of("record_start") == [{"session_id": sid}]
    assert backup.events("session.resumed") == [
        {
            "session_id": sid,
            "reason": "failover",
            "mode": "takeover",
            "screen": "call",
            "detail": "lease granted",
        }
    ]
    assert json.loads(backup.marker.read_text()) == {"session_id": sid}
    # the clerk goes on with the backup
    await command(backup.service, "session.message", {"session_id": sid, "text": "好的，材料齐了"})
    await backup.ui.wait(lambda s: len(s["view"]["messages"]) == 2, "the second message")

    # The images stayed on the main terminal, and the chip's data too: said clearly, on request.
    with pytest.raises(CommandError) as elsewhere:
        await command(
            backup.service, "session.document.get", {"session_id": sid, "doc_id": "hukou_book", "length": 100}
        )
    assert elsewhere.value.status == 409 and "other terminal" in str(elsewhere.value)
    with pytest.raises(CommandError) as chip:
        await command(backup.service, "session.identity.get", {"session_id": sid})
    assert chip.value.status == 409 and "place the ID card" in str(chip.value)
    await backup.ctx.emit("card.read", ZHANG_SAN)  # the villager puts the card on the backup's reader
    card = await command(backup.service, "session.identity.get", {"session_id": sid})
    assert card["id_number"] == "33080319900307123X"

    # The main terminal hears that the peer holds the session: gone here, without session.ended.
    await main.service.drop_session("the peer holds it")
    assert main.service.held_session_id is None and not main.marker.exists()
    assert not list((main.data / "session" / "documents").rglob("*.bin"))
    assert main.events("session.ended") == []
    assert (await main.ui.screen("standby"))["session_id"] is None


async def test_a_terminal_active_again_resumes_its_own_session_recording_and_call(room):
    main_t, _, start = room
    main = await start(main_t)
    sid = await to_call_with_media(main)
    await main.service.set_active(False, reason="lease glitch")
    await main.ui.screen("standby")
    await main.service.set_active(True, reason="lease regained")
    state = await main.ui.screen("call")
    assert state["session_id"] == sid and state["notice"]["code"] == "resumed"
    await until(lambda: len(main.media.of("call_start")) == 2, "the call rejoined")
    assert main.media.of("call_start")[1] == {"session_id": sid, "media": MEDIA}
    assert main.media.of("record_start") == [{"session_id": sid}, {"session_id": sid}]
    (resumed_,) = main.events("session.resumed")
    assert resumed_["mode"] == "reactivated" and resumed_["session_id"] == sid
    # and the images are still here
    got = await command(
        main.service, "session.document.get", {"session_id": sid, "doc_id": "hukou_book", "length": 100}
    )
    assert got["length"] == 100


async def test_a_hostile_snapshot_is_refused_by_take_over_and_changes_nothing(room):
    _, backup_t, start = room
    backup = await start(backup_t, failover=True)
    await backup.ui.screen("standby")
    for bad in (with_(v=9), without("checklist") | {"screen": "capture"}, {"v": 1}, with_(screen="capture")):
        with pytest.raises(SnapshotInvalid):
            await backup.service.take_over(bad, reason="lease granted")
    await asyncio.sleep(0.1)
    assert backup.service.active is False and backup.service.machine.session is None
    assert backup.ui.state["screen"] == "standby" and backup.media.calls == [] and not backup.marker.exists()
    assert backup.events("session.resumed") == []


def leave_marker(t: Terminal, sid: str) -> None:
    t.marker.parent.mkdir(parents=True, exist_ok=True)
    t.marker.write_text(json.dumps({"session_id": sid}))


async def test_a_crashed_terminal_back_as_standby_does_not_report_the_session_the_peer_took(room):
    main_t, _, start = room
    leave_marker(main_t, "s-00000000000000aa")
    main = await start(main_t, failover=True)
    await main.ui.screen("standby")
    assert main.service.held_session_id == "s-00000000000000aa" and main.marker.exists()
    assert main.events("session.ended") == []
    await main.service.drop_session("the peer holds it")
    assert main.service.held_session_id is None and not main.marker.exists()
    assert main.events("session.ended") == []


async def test_a_crashed_terminal_that_gets_the_lease_reports_its_interrupted_session(room):
    main_t, _, start = room
    leave_marker(main_t, "s-00000000000000aa")
    main = await start(main_t, failover=True)
    await main.ui.screen("standby")
    await main.service.set_active(True, reason="lease granted")
    state = await main.ui.screen("ended")
    assert state["view"]["reason"] == "restart"
    (ended,) = main.events("session.ended")
    assert ended["session_id"] == "s-00000000000000aa" and ended["recovered"] is True
    assert not main.marker.exists() and main.events("session.resumed") == []


async def test_taking_over_the_crashed_terminals_own_session_reports_nothing_twice(room):
    _, backup_t, start = room
    m = make_machine()
    at_call(m)
    snap = over_the_wire(snapshots.take(m))
    leave_marker(backup_t, snap["session_id"])  # it was ours before we crashed
    backup = await start(backup_t, failover=True)
    await backup.service.take_over(snap, reason="lease granted")
    await backup.ui.screen("call")
    assert backup.events("session.ended") == []
    assert json.loads(backup.marker.read_text()) == {"session_id": snap["session_id"]}


# --- kiosk-media: a second record_start of one session continues it ------------------------------


async def test_two_record_starts_for_one_session_give_one_session_with_both_parts_playable(
    tmp_path: Path, bus_broker: Mosquitto
):
    sid = "s-00000000000000bb"
    async with running_media(tmp_path, bus_broker.port, MEDIA_CONFIG, wait_audio=False) as (service, bench):
        await bench.wait_for(lambda: bench.state.get("active_source") == "main")
        first = await bench.call("record_start", {"session_id": sid})
        assert first["continued"] is False
        await asyncio.sleep(1.6)
        part1 = await bench.call("record_stop")
        await asyncio.sleep(0.5)  # the failover: nobody records
        second = await bench.call("record_start", {"session_id": sid})
        assert second["continued"] is True and second["dir"] == first["dir"]
        await asyncio.sleep(1.6)
        part2 = await bench.call("record_stop")
        assert part1["segments"] >= 1 and part2["segments"] >= 1
        (summary,) = [s for s in service.index.sessions() if s.session_id == sid]
        assert summary.segments == part1["segments"] + part2["segments"] and summary.state == "closed"
        files = [seg.path for seg in service.index.segments(sid)]
        assert len({f.name for f in files}) == len(files) and all(f.exists() for f in files)
        exported = await bench.call("export", {"session_id": sid}, timeout_s=30)
        assert exported["segments"] == summary.segments
        # the gap of the failover is said, not hidden
        assert [m.get("why") for m in exported["missing"]] == ["not recorded"]
        for path in [*files, Path(exported["path"])]:
            probe = await asyncio.to_thread(
                subprocess.run,
                ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                capture_output=True,
                text=True,
                timeout=20,
            )
            assert probe.returncode == 0 and float(probe.stdout) > 0.3, path.name
        assert float(probe.stdout) >= 2.5  # the export holds both parts
