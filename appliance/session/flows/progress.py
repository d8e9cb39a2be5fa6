"""Checking the progress of earlier applications (办件进度): the platform answers with a list.

Screen: ``progress`` (loading, result or failed). The kiosk asks with ``session.progress.requested``;
the platform answers with the ``session.progress.result`` command within ``platform_timeout_s``.
"""

from __future__ import annotations

from collections.abc import Container
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from appliance.session.effects import Effect, Emit
from appliance.session.flows import IntentHandler, LocalizedName, SessionCommand, SessionParams, trimmed
from appliance.session.state import Screen, Session, localized
from kiosk_core.commands import Params
from kiosk_core.errors import Conflict

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine

# What the villager may do in each phase of the lookup.
PHASES: dict[str, frozenset[str]] = {
    "loading": frozenset({"end"}),
    "result": frozenset({"done"}),
    "failed": frozenset({"retry", "end"}),
}


def progress_view(m: SessionMachine) -> dict[str, Any]:
    s = m.session
    assert s is not None
    return {"phase": s.progress_phase, "applications": s.applications}


def progress_offers(m: SessionMachine) -> Container[str]:
    return PHASES[m.session.progress_phase] if m.session is not None else ()


def request(m: SessionMachine, s: Session) -> list[Effect]:
    """Ask the platform for the villager's applications and wait on ``progress``."""
    s.progress_phase, s.applications = "loading", []
    s.waiting_since = m.clock.monotonic()
    m._go(Screen.PROGRESS)
    return [Emit("session.progress.requested", {"session_id": s.id, "id_masked": s.id_masked})]


# --- intents -----------------------------------------------------------------------------------------


def progress(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s = m._session()
    s.purpose = "progress"
    return m._identified_next(s, "progress")


def retry(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    return request(m, m._session())


def done(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    s = m._session()
    shown = Emit("session.progress.shown", {"session_id": s.id, "count": len(s.applications)})
    return [shown, *m._end("completed")]


INTENTS: dict[str, IntentHandler] = {"progress": progress}

# --- platform commands -------------------------------------------------------------------------------


class Application(Params):
    application_no: Annotated[str, trimmed(64)]
    item_name: LocalizedName
    status: Annotated[str, trimmed(32)]
    submitted_at: Annotated[str, trimmed(32)] | None = None  # when it was accepted (受理日期)
    updated_at: Annotated[str, trimmed(32)] | None = None  # when its status last changed (更新时间)
    note: Annotated[str, trimmed(200)] | None = None


class ResultParams(SessionParams):
    applications: Annotated[list[Application], Field(max_length=50)]


def progress_result(m: SessionMachine, params: ResultParams) -> tuple[dict[str, Any], list[Effect]]:
    s = m.session_for(params.session_id)
    if m.screen is not Screen.PROGRESS or s.progress_phase not in ("loading", "failed"):
        raise Conflict(f"no progress lookup is waiting (screen {m.screen.value})")
    s.applications = [a.model_dump() | {"item_name": localized(a.item_name)} for a in params.applications]
    s.progress_phase, s.waiting_since = "result", None
    m.notice = None
    return {"ok": True}, []


COMMANDS: dict[str, SessionCommand] = {
    "session.progress.result": SessionCommand(
        "the answer to a progress look-up", ResultParams, progress_result
    )
}
