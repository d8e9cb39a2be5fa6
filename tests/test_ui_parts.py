"""The UI's pure parts: message catalogs, the receipt QR, screen choice and staleness, hostile bus input."""

from __future__ import annotations

import json
import re
import string
from typing import Any

import pytest
import segno
from hypothesis import given, settings
from hypothesis import strategies as st

from kiosk_core.mqtt import Message
from kiosk_ui import router
from kiosk_ui.bus import BusLink
from kiosk_ui.i18n import LANGUAGES, Catalog, CatalogError
from kiosk_ui.messages import StatesChanged
from kiosk_ui.qr import MAX_QR_DATA, QrError, decode_lines, qr_lines
from sim.ui_harness import SAMPLES

# --- catalogs ----------------------------------------------------------------------------------------

# Codes the contract (docs/session.md) sends that the UI must have words for.
CONTRACT_KEYS = (
    [
        f"action.{a}"
        for a in (
            "wake",
            "language",
            "back",
            "progress",
            "appointment",
            "end",
            "confirm",
            "not_me",
            "shoot",
            "accept",
            "retake",
            "call",
            "cancel_call",
            "continue",
            "skip",
            "retry",
            "done",
            "technician_refresh",
            "technician_exit",
            "still_here",
        )
    ]
    + [
        f"notice.{n}"
        for n in (
            "card_mismatch",
            "card_unreadable",
            "card_invalid",
            "help_requested",
            "doccam_unavailable",
            "platform_timeout",
            "slot_taken",
            "wrong_pin",
            "pin_locked",
            "clerk_requested_document",
            "clerk_message",
            "test_done",
        )
    ]
    + [
        f"ended.reason.{r}"
        for r in (
            "completed",
            "cancelled",
            "idle_timeout",
            "clerk_ended",
            "card_not_returned",
            "technician",
            "restart",
        )
    ]
    + [f"rating.reason.{r}" for r in ("fast", "clear", "polite", "slow", "unclear", "not_solved")]
    + [f"progress.status.{s}" for s in ("submitted", "in_review", "approved", "rejected", "completed")]
    + [f"capture.phase.{p}" for p in ("preview", "capturing", "review", "failed")]
    + [f"call_waiting.status.{s}" for s in ("requesting", "queued", "no_answer")]
    + [f"appointment.phase.{p}" for p in ("loading", "booking", "failed")]
    + [f"progress.phase.{p}" for p in ("loading", "failed")]
    + [f"tech.test.{s}" for s in ("running", "passed", "failed", "unsupported")]
    + [f"health.{h}" for h in ("ok", "degraded", "missing")]
    + [
        f"unavailable.reason.{r}"
        for r in (
            "bus",
            "appliance",
            "restart",
            "no_state",
            "stale",
            "connecting",
            "version",
            "unknown_screen",
        )
    ]
)


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_english_and_chinese_catalogs_have_the_same_keys_and_placeholders():
    zh, en = Catalog("zh-CN"), Catalog("en")
    assert zh.keys() == en.keys()
    for key in zh.keys():
        assert placeholders(zh(key)) == placeholders(en(key)), key


def test_every_code_of_the_contract_has_words_in_both_languages():
    for lang in LANGUAGES:
        catalog = Catalog(lang)
        missing = [k for k in CONTRACT_KEYS if not catalog.has(k)]
        assert not missing, f"{lang} lacks {missing}"


def test_english_catalog_has_no_chinese_left_and_chinese_is_chinese():
    han = re.compile(r"[\u4e00-\u9fff]")
    en, zh = Catalog("en"), Catalog("zh-CN")
    # The only Chinese allowed in English is the way back to Chinese (language button, attract hint).
    assert [k for k in en.keys() if han.search(en(k)) and k not in ("action.language", "attract.hint")] == []
    assert han.search(zh("attract.welcome")) and zh("action.language") == "English"


def test_missing_key_falls_back_and_is_recorded_unknown_placeholder_stays_visible():
    catalog = Catalog("en")
    assert catalog("no.such.key") == "no.such.key" and catalog.missing == {"no.such.key"}
    assert catalog("call_waiting.position") == "{position} person(s) ahead of you"
    assert catalog("call_waiting.position", position=3) == "3 person(s) ahead of you"
    assert "{attempts_left}" in catalog("notice.wrong_pin", other=1)


def test_bilingual_bus_values_pick_the_language_and_fall_back_to_chinese():
    en = Catalog("en")
    assert en.pick({"zh-CN": "社保", "en": "Social insurance"}) == "Social insurance"
    assert en.pick({"zh-CN": "户口簿首页", "en": ""}) == "户口簿首页"
    assert en.pick("直接文本") == "直接文本"
    assert en.pick(None, "?") == "?" and en.pick([1, 2], "?") == "?" and en.pick({"en": 5}, "?") == "?"


def test_unknown_language_is_a_typed_error():
    with pytest.raises(CatalogError, match="unknown language 'fr'"):
        Catalog("fr")


# --- receipt QR --------------------------------------------------------------------------------------


def test_drawn_qr_is_exactly_the_segno_matrix():
    data = SAMPLES["receipt"]["view"]["qr_text"]
    lines = qr_lines(data)
    matrix = [
        [bool(m) for m in row]
        for row in segno.make(data, error="m", boost_error=False, micro=False).matrix_iter(scale=1, border=2)
    ]
    drawn = decode_lines(lines)
    assert drawn[: len(matrix)] == matrix
    assert all(not any(row) for row in drawn[len(matrix) :])  # at most one padding row
    assert len(lines) <= 22 and len(lines[0]) <= 45  # fits beside the text on a 100x30 screen


@pytest.mark.parametrize("bad", ["", "x" * (MAX_QR_DATA + 1), "号" * 200])
def test_qr_refuses_nothing_or_too_much(bad: str):
    with pytest.raises(QrError):
        qr_lines(bad)


# --- which screen, and is the appliance there at all -----------------------------------------------


def test_every_screen_of_the_contract_has_a_screen_class():
    contract = {
        "attract",
        "catalog",
        "identify",
        "confirm_identity",
        "card_removed",
        "documents",
        "capture",
        "call_waiting",
        "call",
        "receipt",
        "rejected",
        "rating",
        "progress",
        "appointment",
        "ended",
        "technician_pin",
        "technician",
        "unavailable",
        "standby",
    }
    assert set(router.SCREENS) == contract
    assert {s["screen"] for s in SAMPLES.values()} == contract


def availability(
    session: dict[str, Any] | None,
    *,
    connected: bool = True,
    seen_ago: float | None = 0.0,
    connected_ago: float = 1.0,
) -> str:
    now = 1000.0
    return router.availability(
        session,
        bus_connected=connected,
        connected_at=now - connected_ago,
        state_seen_at=None if seen_ago is None else now - seen_ago,
        now=now,
    )


def test_availability_rules_of_the_contract():
    ok = SAMPLES["catalog"]
    assert availability(ok) == ""
    assert availability(ok, connected=False) == "bus"
    assert availability(None, seen_ago=None) == "connecting"
    assert availability(None, seen_ago=None, connected_ago=router.FIRST_STATE_WAIT_S + 1) == "no_state"
    assert availability(ok, seen_ago=14.9) == ""  # 3 x heartbeat_s (5) = 15 s
    assert availability(ok, seen_ago=15.1) == "stale"
    assert availability({**ok, "heartbeat_s": 1}, seen_ago=3.1) == "stale"
    assert availability({**ok, "heartbeat_s": "fast"}, seen_ago=14) == ""  # bad value: the default
    assert availability(SAMPLES["unavailable"]) == "appliance"
    assert availability({**ok, "v": 2}) == "version"
    assert availability({**ok, "screen": "hologram"}) == "unknown_screen"


def test_idle_countdown_only_when_the_appliance_shows_it():
    assert router.idle_countdown(SAMPLES["documents"]) is None
    assert router.idle_countdown({"idle": {"countdown": 7}}) == 7
    assert router.idle_countdown({"idle": {"countdown": True}}) is None
    assert router.idle_countdown({"idle": "soon"}) is None


# --- hostile bus input -------------------------------------------------------------------------------


class Collector:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def post_message(self, message: Any) -> bool:
        self.messages.append(message)
        return True


def state_message(topic: str, payload: bytes) -> Message:
    return Message(topic=topic, payload=payload, qos=1, retain=True, mid=1)


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(max_size=300)
    | st.text(max_size=200).map(str.encode)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=12,
    ).map(lambda v: json.dumps(v).encode())
)
def test_any_state_payload_is_passed_on_as_an_object_or_counted_as_rejected(payload: bytes):
    link = BusLink("127.0.0.1", 1)
    target = Collector()
    link._target = target
    link._flush_scheduled = True  # flushed by hand below instead of on the loop
    link._on_state(state_message("kiosk/local/state/session", payload))
    link._flush()
    if link.rejected:
        assert target.messages == []
    else:
        (message,) = target.messages
        assert isinstance(message, StatesChanged)
        value = message.states["session"]
        assert value is None or isinstance(value, dict)


def test_burst_of_states_is_merged_latest_value_wins():
    link = BusLink("127.0.0.1", 1)
    target = Collector()
    link._target = target
    link._flush_scheduled = True  # as if a flush were pending on the loop
    for seq in range(50):
        link._on_state(state_message("kiosk/local/state/session", json.dumps({"seq": seq}).encode()))
    link._on_state(state_message("kiosk/local/state/media", b""))
    link._flush()
    (message,) = target.messages
    assert message.states == {"session": {"seq": 49}, "media": None}


@pytest.mark.parametrize("name", ["", "Wake", "wake/up", "#", "+", "a b", "wake\x00"])
def test_intent_names_that_would_break_the_topic_are_refused(name: str):
    with pytest.raises(ValueError, match="intent name"):
        BusLink("127.0.0.1", 1).send_intent(name, {})


def test_intent_while_the_bus_is_down_is_dropped_not_raised():
    assert BusLink("127.0.0.1", 1).send_intent("wake", {}) is False
