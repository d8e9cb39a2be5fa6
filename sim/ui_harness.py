"""Driving the UI from the appliance's side of a real local bus (for tests, the benchmark and demos).

``StateFeed`` publishes retained ``kiosk/local/state/{name}`` messages the way the session service does
(with ``v``/``boot``/``seq``/``ts``) and records every intent the UI sends. ``session_state()`` builds a
complete state from the parts a screen needs. Nothing here is used by the kiosk itself.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kiosk_core.localbus import INTENT_PREFIX, STATE_PREFIX, LocalBus, decode_json_object, dumps
from kiosk_core.mqtt import Message

COMMON: dict[str, Any] = {
    "v": 1,
    "heartbeat_s": 5,
    "lang": "zh-CN",
    "session_id": None,
    "purpose": None,
    "identity": None,
    "idle": None,
    "notice": None,
    "ref": None,
}


def session_state(
    screen: str, actions: list[str] | None = None, view: dict[str, Any] | None = None, **fields: Any
) -> dict[str, Any]:
    """A session state as docs/session.md §1.1 describes it (``boot``/``seq``/``ts`` added on publish)."""
    return {**COMMON, "screen": screen, "actions": list(actions or []), "view": dict(view or {}), **fields}


@dataclass(frozen=True)
class Intent:
    name: str
    body: dict[str, Any]
    received: float  # perf_counter


class StateFeed:
    """The appliance's half of the bus, as a test sees it."""

    def __init__(self, host: str, port: int) -> None:
        self.bus = LocalBus(host, port, name="ui-feed")
        self.boot = uuid.uuid4().hex[:8]
        self.seq = 0
        self.intents: list[Intent] = []
        self._arrived = asyncio.Event()
        self.on_intent: Callable[[Intent], None] | None = None

    async def __aenter__(self) -> StateFeed:
        self.bus.subscribe(f"{INTENT_PREFIX}/#", self._on_intent)
        await self.bus.start(wait_s=5)
        await self.bus.wait_connected(5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.stop()

    async def publish(self, name: str, state: dict[str, Any] | None) -> None:
        """Retain ``state`` (None clears it) and wait for the broker's PUBACK."""
        if state is None:
            payload = b""
        else:
            if name == "session":
                self.seq += 1
                state = {**state, "boot": self.boot, "seq": self.seq, "ts": time.time()}
            payload = dumps(state)
        # The feed wants the PUBACK; LocalBus.publish does not wait for it.
        if not self.bus.connected:
            raise AssertionError("state feed is not connected to the local bus")
        await self.bus.link.publish(f"{STATE_PREFIX}/{name}", payload, qos=1, retain=True)

    async def session(
        self, screen: str, actions: list[str] | None = None, view: dict[str, Any] | None = None, **fields: Any
    ) -> dict[str, Any]:
        state = session_state(screen, actions, view, **fields)
        await self.publish("session", state)
        return state

    def _on_intent(self, msg: Message) -> None:
        name = msg.topic[len(INTENT_PREFIX) + 1 :]
        try:
            body = decode_json_object(msg.payload, f"intent {name}")
        except ValueError:
            body = {"_unreadable": msg.payload[:200].decode("utf-8", "replace")}
        intent = Intent(name, body, time.perf_counter())
        self.intents.append(intent)
        self._arrived.set()
        if self.on_intent is not None:
            self.on_intent(intent)

    def names(self, *, ignore: tuple[str, ...] = ("touch",)) -> list[str]:
        return [i.name for i in self.intents if i.name not in ignore]

    async def next_intent(self, name: str, timeout_s: float = 3.0) -> Intent:
        """The first not yet taken intent called ``name`` (waits for it); it is removed from the list."""
        deadline = time.monotonic() + timeout_s
        while True:
            for i, intent in enumerate(self.intents):
                if intent.name == name:
                    return self.intents.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no intent {name!r} within {timeout_s}s; got {[i.name for i in self.intents]}"
                )
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(left, 0.1))
            except TimeoutError:
                pass


# --- one sample state per screen (docs/session.md §1.2), for snapshots, tests and the benchmark -----------


def _name(zh: str, en: str) -> dict[str, str]:
    return {"zh-CN": zh, "en": en}


_DEPTS = [
    {"id": "shebao", "name": _name("社保", "Social insurance"), "item_count": 7},
    {"id": "yibao", "name": _name("医保", "Medical insurance"), "item_count": 6},
    {"id": "minzheng", "name": _name("民政", "Civil affairs"), "item_count": 8},
    {"id": "huji", "name": _name("户籍", "Household registration"), "item_count": 6},
    {"id": "nongye", "name": _name("农业农村", "Agriculture and rural affairs"), "item_count": 6},
    {"id": "canlian", "name": _name("残联", "Disabled persons' federation"), "item_count": 4},
]
_ITEM = {
    "id": "minzheng.low_income_allowance",
    "name": _name("最低生活保障申请", "Minimum living allowance application"),
}
_CLERK = {
    "id": "c-0042",
    "name": "李明",
    "department": {"id": "minzheng", "name": _name("民政", "Civil affairs")},
}
_IDENTITY = {"name": "张三", "id_masked": "3308**********123X"}
_CHECKLIST = [
    {
        "doc_id": "hukou_book",
        "name": _name("户口簿", "Household register"),
        "required": True,
        "status": "captured",
        "requested_by_clerk": False,
        "note": None,
        "image": {"sha256": "3f1a" + "0" * 60, "bytes": 183204, "mime": "image/jpeg"},
    },
    {
        "doc_id": "income_proof",
        "name": _name("家庭收入证明", "Household income statement"),
        "required": True,
        "status": "missing",
        "requested_by_clerk": False,
        "note": None,
        "image": None,
    },
]
_SESSION = {"session_id": "s-5d1e0a7c9b2f4e61", "idle": {"timeout_s": 90, "warn_s": 15, "countdown": None}}
_SLOTS = [
    {
        "slot_id": "sl-20261123-0900",
        "start": "2026-11-23T09:00:00+08:00",
        "end": "2026-11-23T09:20:00+08:00",
        "official": "王芳",
        "place": "县行政服务中心一楼综合窗口",
    },
    {
        "slot_id": "sl-20261123-0930",
        "start": "2026-11-23T09:30:00+08:00",
        "end": "2026-11-23T09:50:00+08:00",
        "official": "王芳",
        "place": "县行政服务中心一楼综合窗口",
    },
]

SAMPLES: dict[str, dict[str, Any]] = {
    "attract": session_state(
        "attract", ["wake", "language"], {"site": "赤柯山村便民服务站", "catalog_version": 1}
    ),
    "catalog": session_state(
        "catalog",
        ["select_department", "progress", "appointment", "end", "language"],
        {"version": 1, "departments": _DEPTS, "department": None, "items": []},
        **_SESSION,
    ),
    "catalog_items": session_state(
        "catalog",
        ["select_department", "select_item", "back", "progress", "appointment", "end", "language"],
        {
            "version": 1,
            "departments": _DEPTS,
            "department": {"id": "shebao", "name": _name("社保", "Social insurance")},
            "items": [
                {
                    "id": "shebao.pension_certification",
                    "name": _name("养老待遇资格认证", "Pension eligibility certification"),
                    "document_count": 1,
                    "minutes": 5,
                },
                {
                    "id": "shebao.pension_statement",
                    "name": _name("养老金发放明细查询", "Pension payment statement"),
                    "document_count": 0,
                    "minutes": 3,
                },
            ],
        },
        **_SESSION,
    ),
    "identify": session_state(
        "identify",
        ["back", "end", "language"],
        {"item": _ITEM, "next": "documents"},
        purpose="apply",
        **_SESSION,
    ),
    "confirm_identity": session_state(
        "confirm_identity",
        ["confirm", "not_me", "end", "language"],
        {"next": "documents"},
        identity=_IDENTITY,
        purpose="apply",
        **_SESSION,
    ),
    "card_removed": session_state(
        "card_removed",
        ["end", "language"],
        {"returns_to": "documents"},
        identity=_IDENTITY,
        purpose="apply",
        **_SESSION,
    ),
    "documents": session_state(
        "documents",
        ["capture", "back", "end", "language"],
        {"item": _ITEM, "checklist": _CHECKLIST, "complete": False},
        identity=_IDENTITY,
        purpose="apply",
        **_SESSION,
    ),
    "capture": session_state(
        "capture",
        ["accept", "retake", "end", "language"],
        {
            "doc": {k: v for k, v in _CHECKLIST[1].items() if k not in ("status", "image")},
            "phase": "review",
            "return_to": "documents",
            "image": {
                "sha256": "9b0c" + "1" * 60,
                "bytes": 201733,
                "mime": "image/jpeg",
                "preview_path": None,
            },
        },
        identity=_IDENTITY,
        purpose="apply",
        **_SESSION,
    ),
    "call_waiting": session_state(
        "call_waiting",
        ["cancel_call", "end", "language"],
        {"item": _ITEM, "status": "queued", "position": 2, "estimated_wait_s": 120, "waited_s": 14},
        identity=_IDENTITY,
        purpose="apply",
        **_SESSION,
    ),
    "call": session_state(
        "call",
        ["capture", "reply", "end", "language"],
        {
            "item": _ITEM,
            "replies": ["cant_hear", "dont_understand", "wait", "need_official"],
            "clerk": _CLERK,
            "messages": [
                {"from": "clerk", "text": "您好，我是民政办李明。", "ts": 1763700100.0},
                {"from": "clerk", "text": "请把户口簿首页再拍一张。", "ts": 1763700123.5},
            ],
            "requested_documents": [
                {
                    "doc_id": "req-1",
                    "name": _name("户口簿首页", "户口簿首页"),
                    "required": True,
                    "status": "missing",
                    "requested_by_clerk": True,
                    "note": "要清楚",
                    "image": None,
                }
            ],
            "checklist": _CHECKLIST,
        },
        identity=_IDENTITY,
        purpose="apply",
        session_id="s-5d1e0a7c9b2f4e61",
        notice={"code": "clerk_requested_document", "params": {"name": _name("户口簿首页", "户口簿首页")}},
    ),
    "receipt": session_state(
        "receipt",
        ["continue", "language"],
        {
            "item": _ITEM,
            "application_no": "SQ330803-20261121-0007",
            "qr_text": "https://zwfw.example.gov.cn/progress?no=SQ330803-20261121-0007",
            "note": "预计5个工作日内办结",
            "clerk": _CLERK,
        },
        identity=_IDENTITY,
        purpose="apply",
        **_SESSION,
    ),
    "rejected": session_state(
        "rejected",
        ["call", "appointment", "continue", "language"],
        {"item": _ITEM, "reason": "收入证明需村委会盖章后再申请。", "clerk": _CLERK},
        identity=_IDENTITY,
        purpose="apply",
        **_SESSION,
    ),
    "rating": session_state(
        "rating",
        ["rate", "skip", "language"],
        {
            "scores": [1, 2, 3, 4, 5],
            "reasons": ["fast", "clear", "polite", "slow", "unclear", "not_solved"],
            "clerk": _CLERK,
        },
        identity=_IDENTITY,
        purpose="apply",
        **_SESSION,
    ),
    "progress": session_state(
        "progress",
        ["done", "language"],
        {
            "phase": "result",
            "applications": [
                {
                    "application_no": "SQ330803-20261102-0031",
                    "item_name": _name("最低生活保障申请", "Minimum living allowance"),
                    "status": "in_review",
                    "submitted_at": "2026-11-02",
                    "updated_at": "2026-11-18",
                    "note": "等待入户调查",
                },
                {
                    "application_no": "SQ330803-20260915-0004",
                    "item_name": _name("养老待遇资格认证", "Pension certification"),
                    "status": "completed",
                    "updated_at": "2026-09-16",
                    "note": None,
                },
            ],
        },
        identity=_IDENTITY,
        purpose="progress",
        **_SESSION,
    ),
    "appointment": session_state(
        "appointment",
        ["book", "back", "end", "language"],
        {
            "phase": "slots",
            "departments": _DEPTS,
            "department": {"id": "shebao", "name": _name("社保", "Social insurance")},
            "slots": _SLOTS,
            "booking": None,
        },
        identity=_IDENTITY,
        purpose="appointment",
        **_SESSION,
    ),
    "ended": session_state("ended", ["wake", "language"], {"reason": "completed", "outcome": "approved"}),
    "technician_pin": session_state(
        "technician_pin",
        ["technician_pin", "technician_exit"],
        {
            "digits": 6,
            "attempts_left": 2,
            "locked_s": None,
            "session_running": False,
            "phase": "pin",
            "leave_s": 30,
        },
        notice={"code": "wrong_pin", "params": {"attempts_left": 2}},
    ),
    "technician_pin_confirm": session_state(
        "technician_pin",
        ["technician_end_session", "technician_exit"],
        {
            "digits": 6,
            "attempts_left": 3,
            "locked_s": None,
            "session_running": True,
            "phase": "confirm_end",
            "leave_s": 30,
        },
        identity=_IDENTITY,
        purpose="apply",
        session_id="s-5d1e0a7c9b2f4e61",
    ),
    "technician": session_state(
        "technician",
        ["technician_test", "technician_refresh", "technician_exit"],
        {
            "device": {"id": "kiosk-0001", "name": "赤柯山村便民服务站", "role": "main", "firmware": "0.1.0"},
            "peripherals": [
                {"name": "card_reader", "kind": "card_reader", "status": "ok", "reason": ""},
                {"name": "doccam", "kind": "doccam", "status": "missing", "reason": "no /dev/video2"},
            ],
            "network": {"fleet": "connected", "detail": "127.0.0.1:1883"},
            "tests": {"card_reader": {"status": "passed", "detail": "", "ts": 1763700300.0}},
            "pin_is_default": True,
        },
    ),
    "unavailable": session_state("unavailable", [], {"reason": "restart"}),
    "standby": session_state("standby", [], {"site": "赤柯山村便民服务站"}),
}


def screen_text(app: Any) -> str:
    """The screen as plain text, one line per terminal row (trailing blanks trimmed).

    Uses the compositor Textual itself renders from (private API, pinned by the snapshot tests).
    """
    strips = app.screen._compositor.render_strips()  # noqa: SLF001
    return "\n".join(strip.text.rstrip() for strip in strips).rstrip() + "\n"


async def wait_until(
    pilot: Any, predicate: Callable[[], bool], *, timeout_s: float = 3.0, what: str = ""
) -> float:
    """Let the app run until ``predicate()`` holds; returns the seconds it took. Bounded by ``timeout_s``."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what or predicate}")
        await pilot.pause(0.01)
    took = time.perf_counter() - start
    await pilot.pause()  # let the screen repaint before anyone reads it
    return took
