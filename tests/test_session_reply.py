"""The villager answers the clerk with a fixed reply (``reply {"code"}``, docs/session.md §2).

"听不清" pressed on the call screen must reach the clerk as ``session.villager_reply`` and show as the
villager's own line; a code the appliance does not know is refused with a clear error and changes
nothing (no event, no message), whatever the UI or an intruder on the local bus sends.
"""

from __future__ import annotations

import copy

import pytest
from fleet_schema import SCHEMA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from session_helpers import events, make_machine, to_call, to_call_waiting

from appliance.messages import EVENT_DATA, VillagerReply
from appliance.session.errors import IntentRejected
from appliance.session.flows.call import REPLY_CODES


def test_a_reply_goes_to_the_clerk_and_into_the_messages():
    m = make_machine()
    to_call(m)
    v = m.view()
    assert "reply" in v["actions"] and v["view"]["replies"] == list(REPLY_CODES)
    effects = m.intent("reply", {"code": "cant_hear", "screen": "call"})
    assert events(effects) == ["session.villager_reply"]
    assert effects[0].data == {"session_id": m.session.id, "code": "cant_hear"}
    last = m.view()["view"]["messages"][-1]
    assert (last["from"], last["code"], last["text"]) == ("villager", "cant_hear", "听不清")
    m.command("session.message", {"session_id": m.session.id, "text": "我大声一点。"})
    assert [x["from"] for x in m.view()["view"]["messages"][-2:]] == ["villager", "clerk"]


def test_the_event_fits_the_fleet_schema_and_its_model():
    m = make_machine()
    to_call(m)
    for code in REPLY_CODES:
        (effect,) = m.intent("reply", {"code": code})
        assert EVENT_DATA["session.villager_reply"] is VillagerReply
        VillagerReply.model_validate(effect.data)
        envelope = {"type": "session.villager_reply", "data": effect.data}
        # The schema's conditional for this type applies to the data (the envelope's other fields are
        # checked elsewhere): a wrong code is caught by the published schema too.
        bad = copy.deepcopy(envelope)
        bad["data"]["code"] = "shout"
        assert any("data/code" in e for e in SCHEMA.errors("event", bad))
        assert not any("data" in e.split(":")[0] for e in SCHEMA.errors("event", envelope))
    # No personal data: only the session and the code.
    assert set(VillagerReply.model_fields) == {"session_id", "code"}


@pytest.mark.parametrize(
    "body, why",
    [
        ({}, "code must be one of"),
        ({"code": "shout"}, "code must be one of cant_hear, dont_understand, wait, need_official"),
        ({"code": 1}, "code must be one of"),
        ({"code": None}, "code must be one of"),
        ({"code": ["cant_hear"]}, "code must be one of"),
        ({"code": "CANT_HEAR"}, "code must be one of"),
        ({"code": "x" * 5000}, "code must be one of"),
    ],
)
def test_an_unknown_reply_is_refused_and_changes_nothing(body, why):
    m = make_machine()
    to_call(m)
    before = m.view()
    with pytest.raises(IntentRejected, match=why):
        m.intent("reply", body)
    assert m.view() == before


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(max_size=8), st.none() | st.integers() | st.text(max_size=50), max_size=4))
def test_hostile_reply_bodies_never_break_the_call(body):
    m = make_machine()
    to_call(m)
    before = m.view()
    try:
        effects = m.intent("reply", body)
    except IntentRejected:
        assert m.view() == before
    else:
        assert body.get("code") in REPLY_CODES and events(effects) == ["session.villager_reply"]
    m.command("session.message", {"session_id": m.session.id, "text": "还在吗？"})  # the call goes on
    assert m.view()["screen"] == "call"


def test_no_reply_before_a_clerk_is_connected():
    m = make_machine()
    to_call_waiting(m)
    assert "reply" not in m.view()["actions"]
    with pytest.raises(IntentRejected, match="not available"):
        m.intent("reply", {"code": "wait"})
