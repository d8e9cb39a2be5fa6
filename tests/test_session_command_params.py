"""The session's platform commands take any JSON object: the dispatcher's validation (``spec.parse``)
and the machine's own (``SessionMachine.command`` with a dict) are one model, so they answer alike,
with a 400 naming the field, a 409 saying the step, or a reply; never anything else."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from session_helpers import SESSION_ID, HandClock, make_machine, to_call

from appliance.config import parse
from appliance.session.service import SessionService
from kiosk_core.commands import CommandSpec
from kiosk_core.errors import BadRequest, CommandError

REGION = ["33", "3308", "330803", "330803100", "330803100201"]


@pytest.fixture(scope="module")
def specs(tmp_path_factory) -> dict[str, CommandSpec]:
    data_dir = tmp_path_factory.mktemp("session")
    config = parse(
        {
            "device": {"id": "kiosk-0001", "name": "赤柯山村便民服务站", "region": REGION},
            "storage": {"data_dir": str(data_dir)},
        }
    )
    service = SessionService(SimpleNamespace(config=config, data_dir=data_dir), clock=HandClock())
    return dict(service.commands())


def in_a_call():
    m = make_machine()
    to_call(m)
    return m


def outcome(run: Any) -> tuple[Any, ...]:
    """("reply", body, effects) or ("error", status, message); any other exception fails the test."""
    try:
        reply, effects = run()
    except CommandError as exc:
        assert isinstance(exc.status, int) and 400 <= exc.status < 600
        return ("error", exc.status, str(exc))
    assert isinstance(reply, dict)
    return ("reply", reply, effects)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
# Values a platform would plausibly send, so that bodies get past validation and reach the handlers.
LIKELY = st.sampled_from(
    [
        SESSION_ID,
        "s-ffffffffffffffff",
        "sl-1",
        "minzheng",
        "income_proof",
        "SQ-1",
        "  户口簿  ",
        "",
        0,
        1,
        -1,
        10**9,
        [{"slot_id": "sl-1", "start": "09:00", "end": "09:20"}],
        [{"application_no": "A-1", "item_name": {"zh-CN": "低保", "en": "Allowance"}, "status": "ok"}],
        {"id": "c-7", "name": "王芳", "department": {"id": "minzheng", "name": "民政"}},
        {"zh-CN": "房产证", "en": "Deed"},
        {"version": 9},
    ]
)


# ... and for some fields, values of the right kind more often than not.
LIKELY_FOR = {
    "session_id": st.just(SESSION_ID),
    "position": st.integers(-1, 10_001),
    "estimated_wait_s": st.integers(-1, 90_000),
    "text": st.text(max_size=4),
    "reason": st.text(max_size=4),
    "application_no": st.sampled_from(["SQ-1", "SQ 1", " SQ-2 "]),
    "doc_id": st.sampled_from(["income_proof", "hukou_book", "req-1", "passport"]),
    "name": st.sampled_from(["房产证", {"zh-CN": "房产证", "en": "Deed"}, {"zh-CN": "房产证"}]),
    "slot_id": st.sampled_from(["sl-1", "sl-2"]),
    "department_id": st.sampled_from(["minzheng", "shebao"]),
    "booking_no": st.just("YY-1"),
    "offset": st.integers(-1, 2000),
    "length": st.integers(0, 200_000),
    "version": st.integers(0, 3),
    "note": st.sampled_from([None, "盖章页", " "]),
    "qr_text": st.sampled_from([None, "https://x/y"]),
    "clerk": st.sampled_from(
        [
            {"id": "c-7", "name": "王芳", "department": "minzheng"},
            {"id": "c-7", "name": "王芳", "department": {"id": "x", "name": {"zh-CN": "甲", "en": "A"}}},
            {"id": "c-7", "name": "", "department": "minzheng"},
        ]
    ),
    "slots": st.lists(
        st.fixed_dictionaries(
            {
                "slot_id": st.sampled_from(["sl-1", "sl-2"]),
                "start": st.just("09:00"),
                "end": st.just("09:20"),
            },
            optional={"official": st.sampled_from(["王芳", None, 3])},
        ),
        max_size=3,
    ),
    "applications": st.lists(
        st.fixed_dictionaries(
            {
                "application_no": st.just("A-1"),
                "item_name": st.sampled_from(["低保", {"zh-CN": "低保", "en": "Allowance"}, {"en": "x"}]),
                "status": st.sampled_from(["ok", ""]),
            },
            optional={"updated_at": st.just("2026-11-01"), "note": st.just("已办结")},
        ),
        max_size=3,
    ),
}


def bodies(spec: CommandSpec) -> st.SearchStrategy[dict[str, Any]]:
    """Objects of the command's own fields (required ones always, optional ones sometimes) with values
    of the right kind, or of any kind, or any object at all."""
    fields = {f.alias or n: f for n, f in spec.params.model_fields.items()}

    def own(value: Any) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries(
            {k: value(k) for k, f in fields.items() if f.is_required()},
            optional={k: value(k) for k, f in fields.items() if not f.is_required()},
        )

    right = own(lambda k: LIKELY_FOR.get(k, LIKELY))
    mixed = own(lambda k: st.one_of(LIKELY_FOR.get(k, LIKELY), LIKELY, JSON))
    keys = st.sampled_from(sorted(fields)) if fields else st.nothing()
    anything = st.dictionaries(keys | st.text(max_size=6), LIKELY | JSON, max_size=len(fields) + 1)
    return st.one_of(right, mixed, anything)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_json_object_gets_a_status_or_a_reply_and_both_paths_agree(specs, data):
    name = data.draw(st.sampled_from(sorted(specs)), label="command")
    spec = specs[name]
    body = data.draw(bodies(spec), label="body")
    try:
        parsed = spec.parse(body)
    except BadRequest as exc:
        assert exc.status == 400 and str(exc).startswith(f"{name}: ")
        parsed = exc
    if name == "session.catalog.set":
        return  # nothing of the machine's: the catalog store checks the rest (test_session_service)
    if name == "session.document.get":
        if not isinstance(parsed, BadRequest):
            outcome(lambda: (in_a_call().document_meta(parsed) and {}, []))
        return

    def dispatched() -> tuple[dict[str, Any], list[Any]]:
        if isinstance(parsed, BadRequest):
            raise parsed
        return in_a_call().command(name, parsed)

    assert outcome(dispatched) == outcome(lambda: in_a_call().command(name, body))


@pytest.mark.parametrize(
    "name,params,message",
    [
        (
            "session.call.accepted",
            {"clerk": {"id": "c-1", "name": "李明", "department": {"id": "x", "name": {"zh-CN": "甲"}}}},
            "session.call.accepted: missing field 'clerk.department.name.en'",
        ),
        (
            "session.call.accepted",
            {"clerk": {"id": "c-1", "name": "李明", "department": 7}},
            "session.call.accepted: clerk.department must be a department id or {id, name}, got 7",
        ),
        (
            "session.request_document",
            {"name": {"zh-CN": "甲", "en": "A", "fr": "B"}},
            "session.request_document: unknown field(s) 'name.fr' (allowed in name: en, zh-CN)",
        ),
        (
            "session.request_document",
            {"name": "户" * 61},
            "session.request_document: name must be a string of at most 60 characters",
        ),
        (
            "session.progress.result",
            {
                "applications": [
                    {"application_no": "A", "item_name": {"zh-CN": "甲", "en": " "}, "status": "s"}
                ]
            },
            "session.progress.result: applications.0.item_name.en must be a non-empty string, got ' '",
        ),
        (
            "session.appointment.declined",
            {"slot_id": "sl-1", "reason": "r", "slots": [{"slot_id": "sl-1", "start": "a"}] * 51},
            "session.appointment.declined: slots must be a list of at most 50 entries",
        ),
        ("session.status", {"verbose": True}, "session.status: unknown field(s) 'verbose' (allowed: none)"),
    ],
)
def test_nested_problems_are_named_by_their_path(name, params, message):
    m = in_a_call()
    with pytest.raises(BadRequest) as info:
        m.command(name, {"session_id": m.session.id, **params} if name != "session.status" else params)
    assert info.value.status == 400 and str(info.value).startswith(message)


def test_a_name_given_once_serves_both_languages_and_text_is_stripped():
    m = in_a_call()
    reply, _ = m.command(
        "session.request_document", {"session_id": m.session.id, "name": "  房产证 ", "note": " 原件 "}
    )
    doc = next(d for d in m.view()["view"]["checklist"] if d["doc_id"] == reply["doc_id"])
    assert doc["name"] == {"zh-CN": "房产证", "en": "房产证"} and doc["note"] == "原件"
