"""The call's media (issue 12) from the appliance's side.

The clerk accepts with a ``media`` object (where the call's media goes, token and pin included): the
machine hands it to kiosk-media once (``StartCall``) and keeps it in memory only; the call screen shows
what kiosk-media reports (``view.media``); a malformed or disallowed object is a 400 naming the field
and changes nothing. Then the same through the real appliance on real brokers, with a stand-in for
kiosk-media's rpc service on the local bus (docs/session.md "call", docs/mqtt.md "The call's media").
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config
from fleet_helpers import Platform
from fleet_schema import SCHEMA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from session_helpers import CLERK, make_machine, to_call, to_call_waiting
from test_session_county import start_application
from test_session_service import FakeDoccam, Ui, capture_and_keep, intents_flowing

from appliance.daemon import Appliance
from appliance.media_control import STATE_TOPIC as MEDIA_STATE_TOPIC
from appliance.session.effects import Emit, StartCall, StopCall
from appliance.session.flows.call import media_reported
from appliance.session.machine import SessionMachine
from kiosk_core.errors import BadRequest, CommandError
from kiosk_core.localbus import dumps
from sim.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(60)

TOKEN, PIN, CREDENTIAL = "tok-7f3a9c-SECRET", "PIN-4711-SECRET", "cred-SECRET-b2e1"
HOST = "sfu.county.example.gov.cn"
MEDIA: dict[str, Any] = {
    "kind": "janus-videoroom",
    "url": f"wss://{HOST}/janus",
    "room": 330803,
    "token": TOKEN,
    "pin": PIN,
    "display": "kiosk-0001",
    "ice_servers": [
        {
            "urls": ["turns:turn.county.example.gov.cn:5349?transport=tcp"],
            "username": "k1",
            "credential": CREDENTIAL,
        }
    ],
}
# What must never leave kiosk memory: not in a state, an event, a reply to another command or a log.
SECRETS = (TOKEN, PIN, CREDENTIAL, HOST)


def accepted(m: SessionMachine, media: Any) -> tuple[dict[str, Any], list[Any]]:
    return m.command("session.call.accepted", {"session_id": m.session.id, "clerk": CLERK, "media": media})


def leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


# --- the machine: accepted with and without media ---------------------------------------------------


def test_the_clerk_accepts_with_media_the_call_starts_and_its_secrets_stay_in_memory():
    m = make_machine()
    effects = to_call(m, MEDIA)
    (start,) = [e for e in effects if isinstance(e, StartCall)]
    assert start.session_id == m.session.id
    assert start.media["token"] == TOKEN and start.media["pin"] == PIN and start.media["room"] == 330803
    assert start.media["ice_servers"][0]["credential"] == CREDENTIAL
    view = m.view()
    assert view["view"]["media"] == {
        "state": "connecting",
        "reason": None,
        "clerk_video": False,
        "mic": False,
        "speaker": True,
    }
    (connected,) = [e for e in effects if isinstance(e, Emit) and e.type == "session.call.connected"]
    assert connected.data["media"] is True
    # Nothing the machine publishes or emits carries them.
    emitted = [e.data for e in effects if isinstance(e, Emit)]
    assert leaks(json.dumps([view, emitted], ensure_ascii=False)) == []
    status, _ = m.command("session.status", {})
    assert leaks(json.dumps(status, ensure_ascii=False)) == []


def test_the_clerk_accepts_without_media_a_text_call_as_before():
    m = make_machine()
    effects = to_call(m)
    assert not any(isinstance(e, StartCall) for e in effects)
    assert m.view()["view"]["media"] is None
    (connected,) = [e for e in effects if isinstance(e, Emit)]
    assert connected.type == "session.call.connected" and connected.data["media"] is False
    # media: null is the same as no media
    m2 = make_machine()
    to_call_waiting(m2)
    _, effects = accepted(m2, None)
    assert m2.screen == "call" and m2.view()["view"]["media"] is None
    assert not any(isinstance(e, StartCall) for e in effects)


def with_(**change: Any) -> dict[str, Any]:
    return {k: v for k, v in {**MEDIA, **change}.items() if v is not DROP}


DROP = object()
BAD_MEDIA = [
    ("wrong kind", with_(kind="whip"), "media.kind"),
    ("no url", with_(url=DROP), "media.url"),
    ("no room", with_(room=DROP), "media.room"),
    ("no display", with_(display=DROP), "media.display"),
    ("room 0", with_(room=0), "media.room"),
    ("room beyond 2^53", with_(room=2**53), "media.room"),
    ("room as text", with_(room="330803"), "media.room"),
    ("room as true", with_(room=True), "media.room"),
    ("room as 1.0", with_(room=1.0), "media.room"),
    ("unknown key", with_(secret_sauce=1), "media.secret_sauce"),
    ("ice_servers not a list", with_(ice_servers={"urls": ["stun:a"]}), "media.ice_servers"),
    ("an ice server without urls", with_(ice_servers=[{"username": "u"}]), "media.ice_servers.0.urls"),
    ("an http ice url", with_(ice_servers=[{"urls": ["http://turn.example"]}]), "media.ice_servers.0.urls"),
    ("nine ice servers", with_(ice_servers=[{"urls": "stun:a"}] * 9), "media.ice_servers"),
    ("an ice server's unknown key", with_(ice_servers=[{"urls": "stun:a", "x": 1}]), "media.ice_servers.0.x"),
    ("ftp url", with_(url="ftp://sfu.example/janus"), "media.url"),
    ("url with credentials", with_(url="wss://u:p@sfu.example/janus"), "media.url"),
    ("url without host", with_(url="wss:///janus"), "media.url"),
    ("url bad port", with_(url="wss://sfu.example:99999/janus"), "media.url"),
    ("url 501 chars", with_(url="wss://sfu.example/" + "a" * 483), "media.url"),
    ("token 513 chars", with_(token="t" * 513), "media.token"),
    ("empty token", with_(token=""), "media.token"),
    ("pin 65 chars", with_(pin="1" * 65), "media.pin"),
    ("display with a space", with_(display="kiosk 0001"), "media.display"),
    ("display 65 chars", with_(display="k" * 65), "media.display"),
    ("token a number", with_(token=12345), "media.token"),
    ("media a string", "wss://sfu.example/janus", "media"),
    ("media a list", [MEDIA], "media"),
    ("deeply nested junk", with_(junk=json.loads("[" * 200 + "]" * 200)), "media.junk"),
    (
        "nested junk in an ice server",
        with_(ice_servers=[{"urls": [[["stun:a"]]]}]),
        "media.ice_servers.0.urls.0",
    ),
]


@pytest.mark.parametrize(("what", "media", "field"), BAD_MEDIA, ids=[b[0] for b in BAD_MEDIA])
def test_a_malformed_media_object_is_a_400_naming_the_field_and_the_clerk_can_retry(what, media, field):
    m = make_machine()
    to_call_waiting(m)
    before = json.dumps(m.view(), sort_keys=True)
    with pytest.raises(BadRequest) as info:
        accepted(m, media)
    assert info.value.status == 400 and info.value.detail.get("field") == field, str(info.value)
    assert "allowed in media: none" not in str(info.value)
    assert m.screen == "call_waiting" and m.session.call.status == "requesting"
    assert m.session.call.media is None and not m.session.clerk_connected
    assert json.dumps(m.view(), sort_keys=True) == before
    _, effects = accepted(m, MEDIA)  # the clerk sends it again, right this time
    assert m.screen == "call" and any(isinstance(e, StartCall) for e in effects)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
KEYS = ["kind", "url", "room", "token", "pin", "display", "ice_servers", "extra"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON, st.dictionaries(st.sampled_from(KEYS), JSON, max_size=8)), st.sampled_from(KEYS), JSON)
def test_junk_media_never_raises_anything_but_a_400_and_never_half_connects(junk: Any, key: str, value: Any):
    for media in (junk, {**MEDIA, key: value}):
        m = make_machine()
        to_call_waiting(m)
        try:
            _, effects = accepted(m, media)
        except BadRequest as exc:
            assert str(exc.detail.get("field", "")).startswith("media"), str(exc)
            assert m.screen == "call_waiting" and m.session.call.media is None
            continue
        # It fitted after all (null: a text call; a junk value a field allows: a media call).
        assert m.screen == "call"
        starts = [e for e in effects if isinstance(e, StartCall)]
        if media is None:
            assert m.view()["view"]["media"] is None and starts == []
        else:
            assert m.view()["view"]["media"]["state"] == "connecting" and len(starts) == 1


# --- the machine: what kiosk-media reports -----------------------------------------------------------


def report(m: SessionMachine, **fields: Any) -> dict[str, Any]:
    return {"session_id": m.session.id, **fields}


@pytest.mark.parametrize("state", ["connecting", "connected", "reconnecting", "audio_only", "failed"])
def test_kiosk_medias_state_is_what_the_call_screen_shows(state: str):
    m = make_machine()
    to_call(m, MEDIA)
    got = report(m, state=state, reason="ice: no route", clerk_video=True, mic=True, speaker=False, rx={})
    assert media_reported(m, got) is True
    assert media_reported(m, got) is False  # the same again: nothing to republish
    assert m.view()["view"]["media"] == {
        "state": state,
        "reason": "ice: no route",
        "clerk_video": True,
        "mic": True,
        "speaker": False,
    }


def test_a_report_for_another_session_or_no_media_call_is_ignored():
    m = make_machine()
    to_call(m, MEDIA)
    before = m.view()["view"]["media"]
    assert media_reported(m, {"session_id": "s-ffffffffffffffff", "state": "failed", "reason": "x"}) is False
    assert media_reported(m, {"state": "failed"}) is False  # no session id at all
    assert media_reported(m, report(m, state="off")) is False  # kiosk-media's "no call"
    assert m.view()["view"]["media"] == before

    text = make_machine()
    to_call(text)
    assert media_reported(text, report(text, state="connected")) is False
    assert text.view()["view"]["media"] is None

    # after the clerk decided, the call is over: a late report changes nothing
    m.command("session.approve", {"session_id": m.session.id, "application_no": "SQ330803-20261121-0007"})
    assert media_reported(m, report(m, state="reconnecting")) is False
    assert m.screen == "receipt"


def test_a_reason_naming_the_media_server_keeps_its_url_off_the_state_topic():
    m = make_machine()
    to_call(m, with_(url=f"wss://{HOST}:8989/janus?room_token={TOKEN}"))
    url = m.session.call.media["url"]
    # what kiosk-media's CallServerUnreachable says, and its 400 for a URL it will not take
    for said in (
        f"the county media server at {url} cannot be reached: ClientConnectorError: Cannot connect to host "
        f"{HOST}:8989 ssl:default [Connection refused]",
        f"media.url: url 'wss://{HOST}:8989/janus' is not TLS",
    ):
        media_reported(m, report(m, state="reconnecting", reason=said))
        reason = m.view()["view"]["media"]["reason"]
        assert "<media.url>" in reason and leaks(json.dumps(m.view())) == [], reason
        assert "cannot be reached" in reason or "is not TLS" in reason  # the rest still says what is wrong


def test_an_unknown_state_shows_connecting_and_junk_never_raises():
    m = make_machine()
    to_call(m, MEDIA)
    media_reported(m, report(m, state="connected", clerk_video=True))
    assert media_reported(m, report(m, state="teleporting")) is True
    assert m.view()["view"]["media"]["state"] == "connecting"
    junk_reports: list[Any] = [
        None,
        [],
        "connected",
        42,
        {"session_id": ["list"], "state": "connected"},
        {"session_id": m.session.id, "state": ["connected"], "reason": 5, "clerk_video": "yes", "mic": 1},
        {"session_id": m.session.id, "state": {"nested": {"deep": []}}, "speaker": None},
        {"session_id": {"not": "hashable"}},
    ]
    for junk in junk_reports:
        media_reported(m, junk)
        view = m.view()["view"]["media"]
        assert view["state"] in ("connecting", "connected")
        assert view["reason"] is None or isinstance(view["reason"], str)
        assert all(isinstance(view[k], bool) for k in ("clerk_video", "mic", "speaker"))


def test_the_call_stops_when_the_villager_hangs_up_or_the_clerk_decides_but_not_for_a_text_call():
    m = make_machine()
    to_call(m, MEDIA)
    effects = m.intent("end", {})
    assert m.screen == "rating" and StopCall(m.session.id) in effects

    m = make_machine()
    to_call(m, MEDIA)
    _, effects = m.command("session.reject", {"session_id": m.session.id, "reason": "收入证明需盖章"})
    assert StopCall(m.session.id) in effects

    m = make_machine()
    to_call(m)
    effects = m.intent("end", {})
    assert m.screen == "rating" and not any(isinstance(e, StopCall) for e in effects)


# --- through the real appliance ----------------------------------------------------------------------


class StandInMedia(FakeDoccam):
    """kiosk-media as far as the session uses it: the document camera (``FakeDoccam``), the recording and
    the call's rpc methods, every call recorded; it publishes its retained state and events on demand."""

    def __init__(self, port: int, directory: Path) -> None:
        super().__init__(port, directory, size=40_000)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.call_start_error: CommandError | None = None
        self.running_call: str | None = None

    async def start(self) -> StandInMedia:
        await super().start()
        self.bus.serve(
            "media",
            {
                "doccam_capture": self.capture,
                "record_start": self._record,
                "record_stop": self._record,
                "call_start": self._call_start,
                "call_stop": self._call_stop,
            },
        )
        return self

    async def _record(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def _call_start(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("call_start", params))
        if self.call_start_error is not None:
            raise self.call_start_error
        self.running_call = params["session_id"]
        return {"state": "connecting", "session_id": params["session_id"]}

    async def _call_stop(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("call_stop", params))
        if self.running_call is None:
            raise CommandError(409, "no call is running")
        self.running_call = None
        return {"duration_s": 12.5, "reconnects": 1, "rx": RX, "tx": TX}

    def of(self, method: str) -> list[dict[str, Any]]:
        return [p for name, p in self.calls if name == method]

    def publish_call_state(self, call: dict[str, Any]) -> None:
        state = {"running": True, "ts": time.time(), "sources": {}, "call": call}
        self.bus.publish(MEDIA_STATE_TOPIC, dumps(state), retain=True)


RX = {"video_frames": 187, "audio_ms": 12480, "width": 640, "height": 360}
TX = {"tracks": ["room", "doccam", "mic"], "bitrate_kbps": 412}


class StateLog(Ui):
    """The UI, also keeping every state payload it was sent (to search them for secrets)."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.payloads: list[bytes] = []

    def _on_state(self, msg: Any) -> None:
        self.payloads.append(bytes(msg.payload))
        super()._on_state(msg)


class Rig:
    def __init__(self, app: Appliance, platform: Platform, ui: StateLog, media: StandInMedia) -> None:
        self.app, self.platform, self.ui, self.media = app, platform, ui, media

    async def until(self, predicate: Any, what: str, timeout_s: float = 10.0) -> Any:
        return await self.platform.wait_for(predicate, timeout_s, what)

    async def to_call_waiting(self) -> str:
        await start_application(self.app, self.ui)
        await capture_and_keep(self.ui, "hukou_book")
        self.ui.send("call")
        state = await self.ui.screen("call_waiting")
        return state["session_id"]

    async def accept(self, sid: str, media: Any = MEDIA) -> dict[str, Any]:
        body = {"id": f"acc-{time.monotonic_ns()}", "session_id": sid, "clerk": CLERK}
        if media is not None:
            body["media"] = media
        return await self.platform.command("session.call.accepted", body)


@pytest.fixture
async def rig(request, tmp_path: Path, bus_broker: Mosquitto, central_broker: Mosquitto, platform: Platform):
    """The appliance daemon on real brokers; ``indirect`` param True: ``[media.call] allow_plain_loopback``."""
    extra = "\n[media.call]\nallow_plain_loopback = true\n" if getattr(request, "param", False) else ""
    config = write_config(
        tmp_path / "kiosk.toml",
        bus_port=bus_broker.port,
        fleet_port=central_broker.port,
        data_dir=tmp_path / "data",
        extra=extra,
    )
    app = Appliance(config)
    await app.start()
    await asyncio.wait_for(app.fleet.first_online.wait(), 10)
    ui = await StateLog(bus_broker.port).start()
    media = await StandInMedia(bus_broker.port, tmp_path / "media").start()
    await intents_flowing(ui)
    yield Rig(app, platform, ui, media)
    await app.stop()  # first: its session's last call_stop still finds the stand-in
    for b in (ui.bus, media.bus):
        await b.stop()


async def test_accepted_media_reaches_kiosk_media_its_state_reaches_the_screen_and_no_secret_leaks(
    rig: Rig, caplog: pytest.LogCaptureFixture
):
    sid = await rig.to_call_waiting()
    reply = await rig.accept(sid)
    assert reply["status"] == 200, reply
    state = await rig.ui.screen("call")
    assert state["view"]["media"]["state"] == "connecting"

    (start,) = await rig.until(lambda: rig.media.of("call_start"), "call_start at kiosk-media")
    assert start["session_id"] == sid
    assert start["media"] == MEDIA

    # kiosk-media reports a lost link: the screen says reconnecting
    rig.media.publish_call_state(
        {"session_id": sid, "state": "reconnecting", "reason": "no packet for 2.5 s", "clerk_video": True,
         "mic": True, "speaker": True, "reconnects": 1, "rx": RX, "tx": TX}
    )  # fmt: skip
    state = await rig.ui.wait(
        lambda s: (s["view"].get("media") or {}).get("state") == "reconnecting", "recon"
    )
    assert state["view"]["media"] == {
        "state": "reconnecting",
        "reason": "no packet for 2.5 s",
        "clerk_video": True,
        "mic": True,
        "speaker": True,
    }
    # the call's counters reach telemetry, and the sample fits the schema
    sample = await rig.app.telemetry()
    assert sample["subsystems"]["media"]["call"] == {
        "state": "reconnecting",
        "reconnects": 1,
        "rx": RX,
        "tx": TX,
    }
    assert SCHEMA.errors("telemetry", json.loads(dumps(sample))) == []

    # its call.* events go on to the platform and fit the schema
    for type_, data in call_events(sid):
        await rig.media.bus.publish_event(type_, data, id=f"{type_}-1", producer="media", timeout_s=10)
    got = await rig.until(
        lambda: {e["type"] for e in rig.platform.events("call.")} >= {t for t, _ in call_events(sid)},
        "the call.* events on the fleet link",
    )
    assert got
    for e in rig.platform.events("call."):
        assert SCHEMA.errors("event", e) == [], e

    # the clerk approves: kiosk-media hangs up before the villager has even read the receipt
    reply = await rig.platform.command(
        "session.approve", {"id": "ap-1", "session_id": sid, "application_no": "SQ330803-20261121-0007"}
    )
    assert reply["status"] == 200
    await rig.ui.screen("receipt")
    (stop,) = await rig.until(lambda: rig.media.of("call_stop"), "call_stop at kiosk-media")
    assert stop == {"session_id": sid} and rig.ui.state["screen"] == "receipt"
    rig.ui.send("continue")
    await rig.ui.screen("rating")
    rig.ui.send("rate", {"score": 5})
    await rig.ui.screen("ended")

    # token, pin, the TURN credential and the server's host: in no state, event, telemetry or log line
    await rig.until(lambda: rig.platform.events("session.ended"), "session.ended")
    # (what the device sent: the platform also hears its own commands under the device's root)
    sent = [msg.payload for channel, _, msg in rig.platform.messages if not channel.startswith("cmd/")]
    assert {"state", "birth", "event"} <= {c for c, _, _ in rig.platform.messages}
    assert leaks(b"".join(sent).decode("utf-8", "replace")) == []
    assert leaks(b"".join(rig.ui.payloads).decode()) == []
    assert leaks(json.dumps(sample)) == []
    assert leaks(caplog.text) == []
    (connected,) = [e for e in rig.platform.events("session.call.connected")]
    assert connected["data"]["media"] is True


def call_events(sid: str) -> list[tuple[str, dict[str, Any]]]:
    """What kiosk-media emits about one call, one of each type (appliance/messages.py types them)."""
    return [
        ("call.connected", {"session_id": sid, "reason": None, "setup_ms": 840}),
        ("call.reconnecting", {"session_id": sid, "reason": "no packet from the server for 2.5 s"}),
        ("call.reconnected", {"session_id": sid, "reason": None, "reconnects": 1}),
        ("call.audio_only", {"session_id": sid, "reason": "uplink 80 kbit/s < min_video_kbps 120"}),
        ("call.failed", {"session_id": sid, "reason": "janus: room 330803 does not exist"}),
        (
            "call.ended",
            {"session_id": sid, "reason": "ended", "duration_s": 12.5, "reconnects": 1, "rx": RX, "tx": TX},
        ),
    ]


def test_a_call_event_off_its_shape_is_caught_by_the_schema():
    event = {
        "epoch": 1,
        "seq": 1,
        "ts": {"wall": 1.0, "mono": 1.0, "boot_id": "b", "time_synced": True},
        "type": "call.ended",
        "data": dict(call_events("s-0123456789abcdef")[-1][1]),
    }
    assert SCHEMA.errors("event", event) == []
    event["data"].pop("rx")
    assert any("'rx' is a required property" in e for e in SCHEMA.errors("event", event))
    event["data"] = {"session_id": "s", "reason": None, "token": TOKEN}
    event["type"] = "call.failed"
    assert any("Additional properties" in e for e in SCHEMA.errors("event", event))


async def test_the_villager_hangs_up_and_kiosk_media_hangs_up_too(rig: Rig):
    sid = await rig.to_call_waiting()
    assert (await rig.accept(sid))["status"] == 200
    await rig.ui.screen("call")
    await rig.until(lambda: rig.media.of("call_start"), "call_start")
    rig.ui.send("end")
    await rig.ui.screen("rating")
    (stop,) = await rig.until(lambda: rig.media.of("call_stop"), "call_stop")
    assert stop == {"session_id": sid} and rig.ui.state["screen"] == "rating"


async def test_kiosk_media_refuses_the_call_and_the_screen_says_failed(rig: Rig):
    rig.media.call_start_error = BadRequest("media.url: janus: no such room 330803", field="media.url")
    sid = await rig.to_call_waiting()
    assert (await rig.accept(sid))["status"] == 200  # the clerk is there: the call goes on as text
    state = await rig.ui.wait(lambda s: (s["view"].get("media") or {}).get("state") == "failed", "failed")
    assert "no such room" in state["view"]["media"]["reason"] and state["screen"] == "call"
    await rig.platform.command("session.message", {"id": "msg-1", "session_id": sid, "text": "请打字交流"})
    await rig.ui.wait(
        lambda s: s["view"]["messages"] and s["view"]["messages"][-1]["text"] == "请打字交流", "msg"
    )


async def test_a_text_call_sends_nothing_to_kiosk_media(rig: Rig):
    sid = await rig.to_call_waiting()
    assert (await rig.accept(sid, media=None))["status"] == 200
    state = await rig.ui.screen("call")
    assert state["view"]["media"] is None
    rig.ui.send("end")
    await rig.ui.screen("rating")
    await asyncio.sleep(0.3)
    assert rig.media.of("call_start") == [] and rig.media.of("call_stop") == []


PLAIN = [
    "ws://127.0.0.1:8188/janus",
    "http://localhost:8088/janus",
    "ws://[::1]:8188/",
    "ws://sfu.example/janus",
]


async def test_without_allow_plain_loopback_only_tls_is_accepted(rig: Rig):
    sid = await rig.to_call_waiting()
    for url in PLAIN:
        reply = await rig.accept(sid, with_(url=url))
        assert reply["status"] == 400 and reply.get("field") == "media.url", reply
        assert "not TLS" in reply["error"]
    state = await rig.ui.screen("call_waiting")  # nothing changed: the clerk may send it again
    assert state["view"]["status"] == "requesting"
    reply = await rig.accept(sid, with_(url="https://sfu.county.example.gov.cn:8089/janus"))
    assert reply["status"] == 200
    await rig.ui.screen("call")
    assert rig.media.of("call_start")[0]["media"]["url"] == "https://sfu.county.example.gov.cn:8089/janus"


@pytest.mark.parametrize("rig", [True], indirect=True)
async def test_allow_plain_loopback_allows_plain_urls_on_loopback_only(rig: Rig):
    sid = await rig.to_call_waiting()
    for url in ("ws://sfu.example/janus", "http://10.0.0.5:8088/janus", "ws://127.0.0.1.example/janus"):
        reply = await rig.accept(sid, with_(url=url))
        assert reply["status"] == 400 and reply.get("field") == "media.url", reply
        assert "loopback" in reply["error"]
    await rig.ui.screen("call_waiting")
    assert (await rig.accept(sid, with_(url="ws://127.0.0.1:8188/janus")))["status"] == 200
    await rig.ui.screen("call")
    (start,) = await rig.until(lambda: rig.media.of("call_start"), "call_start")
    assert start["media"]["url"] == "ws://127.0.0.1:8188/janus"


async def test_malformed_media_through_the_fleet_link_is_a_400_with_its_field(rig: Rig):
    sid = await rig.to_call_waiting()
    for what, media, field in [b for b in BAD_MEDIA if b[0] != "deeply nested junk"]:
        reply = await rig.accept(sid, media)
        assert reply["status"] == 400 and reply.get("field") == field, (what, reply)
    # JSON nested deeper than the fleet decoder takes is refused before any model sees it
    deep = await rig.accept(sid, with_(junk=json.loads("[" * 200 + "]" * 200)))
    assert deep["status"] == 400 and "deep" in deep["error"], deep
    await rig.ui.screen("call_waiting", status="requesting")
    assert rig.media.of("call_start") == []
    assert (await rig.accept(sid))["status"] == 200
    await rig.ui.screen("call")
