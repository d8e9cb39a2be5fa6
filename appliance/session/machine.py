"""The villager's service session as a pure state machine (docs/session.md is its contract).

No I/O here: inputs are method calls (UI intents, peripheral events, platform commands, the passing of
time read from an injected clock); outputs are the rendered state (``view()``) and a list of
``Effect`` values the caller carries out (emit a fleet event, run the document camera, wipe a session's
stored data, run a peripheral self-test). Every input either applies completely or raises and changes
nothing: ``IntentRejected`` for a UI intent, ``BadRequest``/``Conflict`` for a platform command.

Personal data (the card's name and full number, the clerk's messages, captured documents' facts)
lives only in ``Session``; ending a session drops the object and emits ``WipeSession`` for the stored
images. Events carry the masked number only.

What each screen offers, shows, times and guards is the table in ``appliance.session.screens``; the
intent and command handlers live with their flow in ``appliance.session.flows``. This module keeps the
inputs, the transitions every flow shares (start, end, identification) and the timers.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from appliance.session import printing
from appliance.session.catalog import Catalog
from appliance.session.config import SessionConfig, check_pin
from appliance.session.effects import (
    CaptureDocument,
    DropCapture,
    DropDocument,
    Effect,
    Emit,
    KeepCapture,
    PrintReceipt,
    RefreshTechnician,
    RunSelfTest,
    WipeSession,
)
from appliance.session.errors import IntentRejected
from appliance.session.flows import (
    IntentHandler,
    SessionCommand,
    appointment,
    call,
    card,
    documents,
    progress,
    technician,
    visit,
)
from appliance.session.screens import SCREENS, ScreenSpec
from appliance.session.state import (
    APPLICATION_NO,
    END_REASONS,
    LANGS,
    MAX_INTENT_TEXT,
    RATING_REASONS,
    SESSION_ID,
    Call,
    Capture,
    Doc,
    Screen,
    Session,
    Technician,
    localized,
)
from kiosk_core.commands import parse
from kiosk_core.errors import BadRequest, Conflict

# The session's names, importable from here as before the table and the flows were split out.
__all__ = [
    "APPLICATION_NO",
    "END_REASONS",
    "LANGS",
    "MAX_INTENT_TEXT",
    "RATING_REASONS",
    "SCREENS",
    "SESSION_ID",
    "Call",
    "Capture",
    "CaptureDocument",
    "Clock",
    "Doc",
    "DropCapture",
    "DropDocument",
    "Effect",
    "Emit",
    "KeepCapture",
    "PrintReceipt",
    "RefreshTechnician",
    "RunSelfTest",
    "Screen",
    "ScreenSpec",
    "Session",
    "SessionMachine",
    "SystemClock",
    "Technician",
    "WipeSession",
    "localized",
]

# Call statuses in which the villager waits in the clerk's queue (no idle timer then).
WAITING = ("requesting", "queued")
# After a restart cut a session short, ``ended`` says so at least this long (a presence sensor does not
# skip it: the villager in front of the kiosk must read it; a touch or a card does).
RESTART_HOLD_S = 30.0
# While the last villager's card stays on the reader, ``ended`` repeats "take your card" (and beeps)
# this often, for at most ``CARD_LEFT_HOLD_S``; then ``attract`` (the next session reads the card).
CARD_REMINDER_S = 5.0
CARD_LEFT_HOLD_S = 60.0

# --- the clock ---------------------------------------------------------------------------------------


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def time(self) -> float: ...


class SystemClock:
    """Timers run on the monotonic clock (a Pi without RTC jumps its wall clock at boot)."""

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()


# --- the handlers of every flow ----------------------------------------------------------------------

H = TypeVar("H")


def _one_handler_each(*tables: Mapping[str, H]) -> dict[str, H]:
    merged: dict[str, H] = {}
    for table in tables:
        if twice := merged.keys() & table.keys():
            raise AssertionError(f"handled by two flows: {sorted(twice)}")
        merged |= table
    return merged


_INTENTS: dict[str, IntentHandler] = _one_handler_each(
    visit.INTENTS,
    documents.INTENTS,
    call.INTENTS,
    progress.INTENTS,
    appointment.INTENTS,
    technician.INTENTS,
)
_INTENT_NAMES = frozenset(_INTENTS) | {name for spec in SCREENS.values() for name in spec.handlers}
_COMMANDS: dict[str, SessionCommand] = _one_handler_each(
    visit.COMMANDS, call.COMMANDS, progress.COMMANDS, appointment.COMMANDS
)

# --- the machine ---------------------------------------------------------------------------------------


class SessionMachine:
    """One kiosk's session state. Not thread-safe: call it from one task."""

    def __init__(
        self,
        config: SessionConfig,
        catalog: Catalog,
        *,
        clock: Clock | None = None,
        new_id: Callable[[], str] | None = None,
        site: str = "",
        pin_checker: Callable[[str, str], bool] = check_pin,
        printer: bool = False,
    ) -> None:
        self.config = config
        #: a receipt printer is fitted: approvals and bookings return ``PrintReceipt``
        self.printer = printer
        self.catalog = catalog
        self.clock = clock or SystemClock()
        self._new_id = new_id or (lambda: "s-" + secrets.token_hex(8))
        self._check_pin = pin_checker
        self.site = site
        self.screen = Screen.ATTRACT
        self.lang = config.default_lang
        self.session: Session | None = None
        self.notice: dict[str, Any] | None = None
        self.ref: str | None = None
        self.last_activity = self.clock.monotonic()
        self.entered_at = self.last_activity
        self.ended_reason: str | None = None
        # The clerk's decision in the session that just ended ("approved", "rejected" or None), so
        # ``ended`` does not say "completed" after a rejection.
        self.ended_outcome: str | None = None
        # When the help_requested notice goes away by itself (None: not showing).
        self.help_notice_until: float | None = None
        self.technician: Technician | None = None
        self.pin_locked_until: float | None = None
        self.pin_attempts_left = config.pin_attempts
        self.pin_is_default = False
        self.rejected_intents = 0
        # A card lies on the reader (from card.read/card.error to card.removed). Not personal data: who
        # it belongs to is the session's, and goes with it.
        self.card_on_reader = False
        self.card_reminders = 0
        self.last_reminder = 0.0
        # On ``standby`` (the room's other terminal is active): the screen this terminal left, to which
        # ``resume()`` returns; None: attract.
        self.standby_from: Screen | None = None

    @property
    def intent_names(self) -> list[str]:
        return sorted(_INTENT_NAMES)

    @property
    def command_names(self) -> list[str]:
        return sorted(_COMMANDS)

    @property
    def commands(self) -> Mapping[str, SessionCommand]:
        """The platform commands the machine answers, each with the model its parameters must fit."""
        return _COMMANDS

    @property
    def _spec(self) -> ScreenSpec:
        """The table entry of the screen shown now."""
        return SCREENS[self.screen]

    # === inputs: UI intents ===========================================================================

    def intent(self, name: str, body: Any) -> list[Effect]:
        """Apply a UI intent or raise ``IntentRejected`` (nothing changes)."""
        if name not in _INTENT_NAMES:
            raise IntentRejected(f"unknown intent {name!r}")
        if not isinstance(body, dict):
            raise IntentRejected(f"{name}: body must be a JSON object")
        ref = body.get("ref")
        if ref is not None and (not isinstance(ref, str) or len(ref) > 64):
            raise IntentRejected(f"{name}: ref must be a string of at most 64 characters")
        shown = body.get("screen")
        if shown is not None and shown != self.screen.value:
            raise IntentRejected(f"{name}: stale (sent from screen {shown!r}, now {self.screen.value!r})")
        handler = self._spec.handlers.get(name) or _INTENTS.get(name)
        if handler is None or (name != "touch" and name not in self.actions()):
            raise IntentRejected(f"{name}: not available on screen {self.screen.value!r}")
        effects = handler(self, body)
        now = self.clock.monotonic()
        self.last_activity = now
        if self.technician is not None:
            self.technician.last_input = now
        if self.session is not None:
            self.session.idle_warned = False
        self.ref = ref
        return effects

    # === inputs: peripheral events ====================================================================

    def presence(self) -> list[Effect]:
        self.last_activity = self.clock.monotonic()
        if self.session is not None:
            self.session.idle_warned = False
        if self.screen is Screen.ENDED and (self.ended_reason == "restart" or self.card_on_reader):
            return []  # the message on ``ended`` is for the person standing there: a touch goes on
        if self.screen in (Screen.ATTRACT, Screen.ENDED):
            return self._start_session("presence")
        return []

    def interrupted(self) -> None:
        """The service found that a restart cut a session short: say so on ``ended`` (reason
        ``restart``) before ``attract``, so the villager knows to start again."""
        if self.session is None and self.screen is Screen.ATTRACT:
            self.ended_reason = "restart"
            self._go(Screen.ENDED)

    def card_read(self, data: dict[str, Any]) -> list[Effect]:
        """``card.read`` data: public fields plus ``_private`` (full number) from in-process delivery."""
        private = data.get("_private") if isinstance(data.get("_private"), dict) else {}
        number = private.get("id_number") if isinstance(private.get("id_number"), str) else None
        masked = data.get("id_number_masked") or data.get("id_masked")
        name = data.get("name") or private.get("name")
        self.card_on_reader = True
        if not isinstance(masked, str) or not masked or not isinstance(name, str) or not name:
            if self.screen in (Screen.IDENTIFY, Screen.CARD_REMOVED):
                self.notice = {"code": "card_unreadable", "params": {}}
            return []
        effects: list[Effect] = []
        if self.screen in (Screen.ATTRACT, Screen.ENDED):
            # A card placed on the idle kiosk wakes it and is remembered for identification.
            effects = self._start_session("card")
        s = self.session
        if s is None:
            return effects
        self.last_activity = self.clock.monotonic()
        s.idle_warned = False
        same = (number == s.id_number) if (number and s.id_number) else (masked == s.id_masked)
        if self.screen is Screen.CARD_REMOVED:
            return card.returned(self, s, same)
        if s.identity_confirmed and self.screen is Screen.CAPTURE and not s.card_present:
            return card.placed_during_photo(self, s, same)
        if s.identity_confirmed:
            if same:
                s.card_present = True
                if s.card_data is None:  # resumed from the other terminal: the chip's data, read here
                    s.id_number = number
                    s.card_data = {k: v for k, v in data.items() if k != "_private"} | {
                        k: v for k, v in private.items() if isinstance(v, str | int | float | bool)
                    }
            return []
        if data.get("valid") is False:
            if self.screen is Screen.IDENTIFY:
                problems = data.get("problems") if isinstance(data.get("problems"), list) else []
                self.notice = {
                    "code": "card_invalid",
                    "params": {"problems": [str(p)[:100] for p in problems][:5]},
                }
            return []
        # Not confirmed yet: this card is the candidate. Placed early (on the catalog), it is used as soon
        # as identification is needed, so the villager is not asked to place it again.
        s.name, s.id_masked, s.id_number = name, masked, number
        s.card_data = {k: v for k, v in data.items() if k != "_private"} | {
            k: v for k, v in private.items() if isinstance(v, str | int | float | bool)
        }
        s.card_present = True
        if self.screen is Screen.IDENTIFY:
            return self._ask_confirm(s)
        return effects

    def card_removed(self) -> list[Effect]:
        """The card left the reader; what that does on this screen is its spec's ``card_guard``."""
        self.card_on_reader = False
        s = self.session
        if s is None:
            if self.screen is Screen.ENDED:  # the card was taken: the usual short hold from now
                self.entered_at = self.clock.monotonic()
            return []
        s.card_present = False
        self.last_activity = self.clock.monotonic()
        if not s.identity_confirmed:
            # Nothing confirmed yet: forget the candidate.
            s.name = s.id_masked = s.id_number = None
            s.card_data = None
        guard = self._spec.card_guard
        return guard(self, s) if guard is not None else []

    def help_held(self) -> list[Effect]:
        """The help button was held long enough: the technician's PIN pad (a running session pauses)."""
        return technician.enter(self)

    def help_pressed(self) -> list[Effect]:
        """A short press of the help button: "staff have been notified", or off the PIN pad."""
        return technician.help_pressed(self)

    # === inputs: results of effects ===================================================================

    def capture_finished(
        self,
        session_id: str,
        doc_id: str,
        attempt: int,
        *,
        image: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> list[Effect] | None:
        """The camera answered an earlier ``CaptureDocument``. None when the answer is stale (the caller
        must then drop the pending image): the session ended or the villager moved on."""
        return documents.capture_finished(self, session_id, doc_id, attempt, image=image, error=error)

    def print_finished(self, session_id: str, job: str, status: str, code: str | None = None) -> bool:
        """The printer answered a ``PrintReceipt`` (printed or failed); True when the screen changes."""
        return printing.print_finished(self, session_id, job, status, code)

    def set_technician_status(self, status: dict[str, Any]) -> None:
        if self.technician is not None:
            self.technician.status = status

    def test_finished(self, peripheral: str, status: str, detail: str = "") -> list[Effect]:
        if self.technician is None:
            return []
        self.technician.tests[peripheral] = {
            "status": status,
            "detail": detail[:200],
            "ts": self.clock.time(),
        }
        if self.screen is Screen.TECHNICIAN:
            self.notice = {"code": "test_done", "params": {"peripheral": peripheral, "status": status}}
        return [
            Emit(
                "session.technician.test",
                {"peripheral": peripheral, "status": status, "detail": detail[:200]},
            )
        ]

    def set_catalog(self, catalog: Catalog) -> None:
        """A new catalog applies to new choices; a session in progress keeps its chosen item."""
        self.catalog = catalog
        if self.session is not None and self.session.department is not None:
            dep = catalog.department(self.session.department.id)
            if dep is not None and self.screen is Screen.CATALOG:
                self.session.department = dep

    # === inputs: time =================================================================================

    def tick(self) -> list[Effect]:
        """Fire whatever timers are due. Call at least at ``next_wakeup()``."""
        if self.screen is Screen.STANDBY:
            return []  # nothing runs out while the other terminal serves (the session stays as it was)
        now = self.clock.monotonic()
        s = self.session
        effects: list[Effect] = []
        if self.help_notice_until is not None and now >= self.help_notice_until:
            self.help_notice_until = None
            if (self.notice or {}).get("code") == "help_requested":
                self.notice = None
        if self.screen is Screen.ENDED:
            if now - self.entered_at >= self._ended_hold():
                self._to_attract()
            elif self.card_on_reader and now - self.last_reminder >= CARD_REMINDER_S:
                effects += card.remind(self, now)
            return effects
        if self.technician is not None:
            t = self.technician
            if self.pin_locked_until is not None and now >= self.pin_locked_until:
                self.pin_locked_until = None
                self.pin_attempts_left = self.config.pin_attempts
                t.attempts_left = self.pin_attempts_left
            if self.screen is Screen.TECHNICIAN_PIN and now - t.last_input >= self.config.pin_idle_s:
                return technician.pin_idle(self)
            if now - t.last_input >= self.config.technician_idle_s:
                effects.append(Emit("session.technician.exited", {"reason": "idle"}))
                self._to_attract()
            return effects
        if s is None:
            return effects
        timeout = self._idle_timeout()
        if timeout is not None:
            idle_for = now - self.last_activity
            if idle_for >= timeout:
                return self._end("idle_timeout")
            if idle_for >= timeout - self.config.idle_warning_s and not s.idle_warned:
                s.idle_warned = True
                effects.append(
                    Emit("session.idle.warning", {"session_id": s.id, "screen": self.screen.value})
                )
        if (
            s.call is not None
            and s.call.status in ("requesting", "queued")
            and now - s.call.requested_at >= self.config.call_wait_timeout_s
        ):
            s.call.status = "no_answer"
            # The wait was activity: the idle timer starts afresh on the "nobody answered" choices.
            self.last_activity = now
            s.idle_warned = False
            effects.append(
                Emit(
                    "session.call.unanswered",
                    {"session_id": s.id, "waited_s": round(now - s.call.requested_at)},
                )
            )
        if s.waiting_since is not None and now - s.waiting_since >= self.config.platform_timeout_s:
            s.waiting_since = None
            if self.screen is Screen.PROGRESS and s.progress_phase == "loading":
                s.progress_phase = "failed"
                self.notice = {"code": "platform_timeout", "params": {}}
            elif self.screen is Screen.APPOINTMENT and s.appointment_phase in ("loading", "booking"):
                s.appointment_phase = "failed"
                self.notice = {"code": "platform_timeout", "params": {}}
        return effects

    def next_wakeup(self) -> float | None:
        """The monotonic time at which ``tick()`` or the rendered state next changes by itself."""
        if self.screen is Screen.STANDBY:
            return None
        now = self.clock.monotonic()
        times: list[float] = []
        s = self.session
        if self.help_notice_until is not None:
            times.append(self.help_notice_until)
        if self.screen is Screen.ENDED:
            times.append(self.entered_at + self._ended_hold())
            if self.card_on_reader:
                times.append(self.last_reminder + CARD_REMINDER_S)
        if self.technician is not None:
            idle_s = (
                self.config.pin_idle_s
                if self.screen is Screen.TECHNICIAN_PIN
                else self.config.technician_idle_s
            )
            times.append(self.technician.last_input + idle_s)
            if self.pin_locked_until is not None:
                times.append(self.pin_locked_until)
                times.append(now + 1.0)  # locked_s counts down
        if s is not None:
            timeout = self._idle_timeout()
            if timeout is not None:
                deadline = self.last_activity + timeout
                warn_at = deadline - self.config.idle_warning_s
                if now < warn_at:
                    times.append(warn_at)
                else:  # the countdown changes whenever the remaining time crosses a whole second
                    frac = (deadline - now) - math.floor(deadline - now)
                    times.append(min(deadline, now + (frac if frac > 1e-6 else 1.0)))
            if s.call is not None and s.call.status in ("requesting", "queued"):
                times.append(s.call.requested_at + self.config.call_wait_timeout_s)
                times.append(now + 1.0)  # waited_s
            if s.waiting_since is not None:
                times.append(s.waiting_since + self.config.platform_timeout_s)
        return min(times) if times else None

    def _ended_hold(self) -> float:
        """How long ``ended`` shows: longer after a restart, and while the card is left on the reader."""
        hold = self.config.ended_hold_s
        if self.ended_reason == "restart":
            hold = max(hold, RESTART_HOLD_S)
        if self.card_on_reader:
            hold = max(hold, CARD_LEFT_HOLD_S)
        return hold

    # === the rendered state ===========================================================================

    def _idle_timeout(self) -> float | None:
        """The idle timeout running now: the screen's, in a session, unless a clerk is connected or the
        villager waits in the clerk's queue (waiting is activity; ``call_wait_timeout_s`` bounds it)."""
        s = self.session
        timeout = self._spec.idle_timeout
        if s is None or timeout is None or (s.call is not None and s.call.status == "connected"):
            return None
        if self.screen is Screen.CALL_WAITING and s.call is not None and s.call.status in WAITING:
            return None
        return timeout(self.config)

    def countdown(self) -> int | None:
        timeout = self._idle_timeout()
        if timeout is None:
            return None
        remaining = timeout - (self.clock.monotonic() - self.last_activity)
        if remaining > self.config.idle_warning_s:
            return None
        # Tolerate float noise: 90 - (t0 + 76 - t0) can come out as 14.000000000001 for a large t0.
        return max(1, math.ceil(remaining - 1e-6))

    def actions(self) -> list[str]:
        """The intents accepted now, in the order the UI shows them (number keys follow this order)."""
        spec = self._spec
        out = list(spec.actions)
        if spec.offers is not None:
            offered = spec.offers(self)
            out = [name for name in out if name in offered]
        if not spec.villager:
            return out
        if self.countdown() is not None:
            out = ["still_here", *out]
        return [*out, "language"]

    def view(self) -> dict[str, Any]:
        """The state for ``kiosk/local/state/session`` without the envelope (v, boot, seq, ts, heartbeat_s)."""
        # On standby the held session is not this screen's business (and its identity is not shown).
        s = self.session if self.screen is not Screen.STANDBY else None
        timeout = self._idle_timeout()
        idle = None
        if timeout is not None:
            idle = {
                "timeout_s": timeout,
                "warn_s": self.config.idle_warning_s,
                "countdown": self.countdown(),
            }
        identity = {"name": s.name, "id_masked": s.id_masked} if s is not None and s.id_masked else None
        return {
            "screen": self.screen.value,
            "lang": self.lang,
            "session_id": s.id if s else None,
            "purpose": s.purpose if s else None,
            "identity": identity,
            "actions": self.actions(),
            "idle": idle,
            "notice": self.notice,
            "ref": self.ref,
            "view": self._spec.view(self),
        }

    # === transitions every flow shares ================================================================

    def _go(self, screen: Screen) -> None:
        if screen is not self.screen:
            self.notice = None
        self.screen = screen
        self.entered_at = self.clock.monotonic()

    def _to_attract(self) -> None:
        self.technician = None
        self.lang = self.config.default_lang
        self.ended_reason = None
        self.ended_outcome = None
        self._go(Screen.ATTRACT)

    def _session(self) -> Session:
        if self.session is None:  # cannot happen once actions() said yes; a guard for refactors
            raise IntentRejected("no session")
        return self.session

    def _start_session(self, trigger: str) -> list[Effect]:
        now = self.clock.monotonic()
        after_restart = self.screen is Screen.ENDED and self.ended_reason == "restart"
        if self.screen is Screen.ENDED:  # the next villager starts in the default language
            self.lang = self.config.default_lang
        s = Session(id=self._new_id(), started_at=now, trigger=trigger)
        self.session = s
        self.last_activity = now
        self.card_reminders = 0
        self._go(Screen.CATALOG)
        if after_restart:  # (a card left on the reader woke it): the catalog says it still
            self.notice = {"code": "restarted", "params": {}}
        started = Emit("session.started", {"session_id": s.id, "trigger": trigger, "lang": self.lang})
        return [started, *card.read_again(self, trigger)]

    def _end(self, reason: str) -> list[Effect]:
        """End the session: emit ``session.ended``, wipe everything it held, show ``ended``."""
        s = self.session
        if s is None:
            return []
        now = self.clock.monotonic()
        data = {
            "session_id": s.id,
            "reason": reason,
            "purpose": s.purpose,
            "last_screen": self.screen.value,
            "duration_s": round(now - s.started_at, 1),
            "item_id": s.item.id if s.item else None,
        }
        self.session = None  # every reference to the identity, messages and documents goes with it
        self.ended_reason = reason
        self.ended_outcome = (
            None if s.outcome is None else ("approved" if s.outcome.get("approved") else "rejected")
        )
        self.ref = None
        self.card_reminders = 0
        self._go(Screen.ENDED)
        effects: list[Effect] = [Emit("session.ended", data), WipeSession(s.id)]
        if self.card_on_reader and reason != "restart":  # "take your card": now, then every 5 s
            effects += card.remind(self, now)
        return effects

    def _ask_confirm(self, s: Session) -> list[Effect]:
        self._go(Screen.CONFIRM_IDENTITY)
        return [
            Emit("session.identified", {"session_id": s.id, "id_masked": s.id_masked, "purpose": s.purpose})
        ]

    def _identified_next(self, s: Session, next_step: str) -> list[Effect]:
        """Continue to ``next_step`` once the identity is known, or ask for the card first."""
        s.next_after_confirm = next_step
        if not s.identity_confirmed:
            if s.id_masked and s.card_present:
                return self._ask_confirm(s)
            self._go(Screen.IDENTIFY)
            return []
        if not s.card_present and next_step == "documents":
            s.returns_to = Screen.DOCUMENTS
            self._go(Screen.CARD_REMOVED)
            return []
        return self._after_confirm(s)

    def _after_confirm(self, s: Session) -> list[Effect]:
        if s.next_after_confirm == "progress":
            return progress.request(self, s)
        if s.next_after_confirm == "appointment":
            return appointment.request_slots(self, s)
        self._go(Screen.DOCUMENTS)
        return []

    # === inputs: platform commands ====================================================================

    def command(self, name: str, params: Any) -> tuple[dict[str, Any], list[Effect]]:
        """Apply a platform command: returns (reply body, effects) or raises ``CommandError``.

        ``params`` is the JSON body, validated here with the command's model (a 400 naming the field,
        as the dispatcher answers), or that model already validated by the dispatcher."""
        cmd = _COMMANDS.get(name)
        if cmd is None:
            raise BadRequest(f"unknown session command {name!r}")
        if not isinstance(params, cmd.params):
            params = parse(name, cmd.params, params)
        return cmd.handler(self, params)

    def session_for(self, session_id: str) -> Session:
        """The current session if ``session_id`` (validated by ``SessionParams``) names it, else 409."""
        if self.session is None or self.session.id != session_id:
            raise Conflict(f"session {session_id} is not active on this kiosk (screen {self.screen.value})")
        if self.technician is not None:
            # Paused under the PIN pad (at most pin_idle_s): nothing may move it on from behind the pad.
            raise Conflict(f"session {session_id} is paused: the technician's PIN pad is showing; try again")
        return self.session

    # === queries for the service ======================================================================

    def document_meta(self, params: documents.DocumentGetParams) -> tuple[str, Doc]:
        """(session id, checklist entry) for ``session.document.get``; 400/409 as the contract says."""
        return documents.document_meta(self, params)

    # === failover: standby, resume, take over (docs/session.md §10) ====================================

    def standby(self) -> None:
        """The other terminal of the room is active: show ``standby`` and keep the session as it is
        (nothing times out meanwhile). The technician's screens close; a session paused under them
        resumes on the screen it paused on."""
        if self.screen is Screen.STANDBY:
            return
        back: Screen | None = self.screen
        if self.technician is not None:
            back = self.technician.returns_to
            self.technician = None
        if self.session is None or back in (None, Screen.ATTRACT, Screen.ENDED, Screen.UNAVAILABLE):
            back = None
        self.standby_from = back
        self.help_notice_until = None
        self._go(Screen.STANDBY)

    def resume(self, notice: str | None = None) -> Screen:
        """Active again: back to the screen left for ``standby`` (attract without a session). The idle
        timer starts afresh: the switch was not the villager's doing."""
        if self.screen is not Screen.STANDBY:
            return self.screen
        back = self.standby_from if self.session is not None else None
        self.standby_from = None
        self.last_activity = self.clock.monotonic()
        if back is None:
            self.session = None
            self._to_attract()
        else:
            self.session.idle_warned = False  # type: ignore[union-attr]
            self._go(back)
            if notice is not None:
                self.notice = {"code": notice, "params": {}}
        return self.screen

    def forget(self) -> str | None:
        """The other terminal holds the session now: drop it here without ending it (no
        ``session.ended``; the caller wipes what it stored). Returns its id."""
        s = self.session
        self.session = None
        self.standby_from = None
        self.ref = None
        if self.screen is not Screen.STANDBY:
            self.technician = None
            self._to_attract()
        return s.id if s is not None else None

    def adopt(self, session: Session, screen: Screen, lang: str, notice: str | None) -> None:
        """Take over ``session`` from the other terminal (``snapshot.restore`` built it) on ``screen``."""
        self.session = session
        self.technician = None
        self.standby_from = None
        self.help_notice_until = None
        self.ended_reason = self.ended_outcome = None
        self.ref = None
        self.lang = lang
        self.last_activity = self.clock.monotonic()
        self._go(screen)
        if notice is not None:
            self.notice = {"code": notice, "params": {}}

    def stop(self) -> list[Effect]:
        """The service stops: end any session (reason ``restart``) and show ``unavailable``."""
        effects = self._end("restart") if self.session is not None else []
        self.technician = None
        self._go(Screen.UNAVAILABLE)
        return effects
