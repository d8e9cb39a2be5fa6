"""The screen table: one frozen spec per screen, naming only intents the machine knows."""

from __future__ import annotations

import dataclasses

import pytest
from session_helpers import ZHANG_SAN, HandClock, capture, make_machine, to_documents

from appliance.session.config import SessionConfig
from appliance.session.flows import appointment, call, documents, progress, technician, visit
from appliance.session.machine import SCREENS, Screen, ScreenSpec

CHROME = {"still_here", "language"}  # added by the machine on every villager screen


def test_every_screen_has_a_frozen_spec():
    assert set(SCREENS) == set(Screen)
    for screen, spec in SCREENS.items():
        assert isinstance(spec, ScreenSpec), screen
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.actions = ("end",)  # type: ignore[misc]


def test_each_specs_actions_are_intents_the_machine_accepts():
    names = set(make_machine().intent_names)
    for screen, spec in SCREENS.items():
        assert set(spec.actions) <= names, screen
        assert len(set(spec.actions)) == len(spec.actions), f"{screen}: an action listed twice"
        assert not CHROME & set(spec.actions), f"{screen}: the machine adds still_here and language"
        assert set(spec.handlers) <= set(spec.actions), f"{screen}: a handler for an intent not offered"


def test_an_intent_has_one_handler_per_screen():
    flows = [visit.INTENTS, documents.INTENTS, call.INTENTS, progress.INTENTS]
    flows += [appointment.INTENTS, technician.INTENTS]
    everywhere = [name for table in flows for name in table]
    assert len(everywhere) == len(set(everywhere))
    for screen, spec in SCREENS.items():
        assert not set(spec.handlers) & set(everywhere), f"{screen}: two handlers for one intent"
    names = set(everywhere) | {name for spec in SCREENS.values() for name in spec.handlers}
    assert names == set(make_machine().intent_names)


def test_phase_tables_offer_only_their_screens_actions():
    for phase, offered in documents.CAPTURE_PHASES.items():
        assert offered <= set(SCREENS[Screen.CAPTURE].actions), phase
    for phase, offered in progress.PHASES.items():
        assert offered <= set(SCREENS[Screen.PROGRESS].actions), phase


def test_idle_timer_runs_on_every_villager_session_screen_with_the_configured_timeout():
    idle = {screen for screen, spec in SCREENS.items() if spec.idle_timeout is not None}
    never = {
        Screen.ATTRACT,
        Screen.ENDED,
        Screen.TECHNICIAN_PIN,
        Screen.TECHNICIAN,
        Screen.UNAVAILABLE,
        Screen.STANDBY,
    }
    assert idle == set(Screen) - never
    config = SessionConfig(idle_timeout_s=60, idle_warning_s=10)
    assert {SCREENS[s].idle_timeout(config) for s in idle} == {60}


def test_the_card_is_guarded_where_the_papers_and_the_call_need_it():
    guarded = {screen for screen, spec in SCREENS.items() if spec.card_guard is not None}
    assert guarded == {
        Screen.CONFIRM_IDENTITY,  # back to identify: the candidate is forgotten
        Screen.DOCUMENTS,
        Screen.CAPTURE,
        Screen.CALL_WAITING,
        Screen.CALL,
    }


def test_offered_actions_follow_the_specs_order_through_a_whole_visit():
    clock = HandClock()
    m = make_machine(clock)
    seen: set[Screen] = set()

    def check() -> None:
        spec = SCREENS[m.screen]
        shown = [a for a in m.actions() if a not in CHROME]
        assert shown == [a for a in spec.actions if a in shown], m.screen
        assert m.view()["view"] == spec.view(m)
        seen.add(m.screen)

    check()
    to_documents(m)
    check()
    for n, doc in enumerate(("hukou_book",)):
        capture(m, doc, n)
        check()
    m.intent("capture", {"doc_id": "income_proof"})
    check()
    m.card_removed()  # the capture is abandoned; put the card back to continue
    check()
    m.card_read(ZHANG_SAN)
    check()
    capture(m, "income_proof", 3)
    clock.advance(80)  # the countdown shows over the checklist
    assert m.actions()[0] == "still_here"
    check()
    m.intent("call", {})
    check()
    clock.advance(80)  # waiting in the clerk's queue is activity: no countdown there
    assert m.actions()[0] == "cancel_call" and m.countdown() is None
    check()
    m.command(
        "session.call.accepted",
        {"session_id": m.session.id, "clerk": {"id": "c-0042", "name": "李明", "department": "minzheng"}},
    )
    check()
    m.command("session.approve", {"session_id": m.session.id, "application_no": "MZ-1"})
    check()
    m.intent("continue", {})
    check()
    m.intent("rate", {"score": 5})
    check()
    assert seen >= {Screen.CAPTURE, Screen.CARD_REMOVED, Screen.CALL_WAITING, Screen.CALL, Screen.RECEIPT}
