"""The villager's service session as a pure state machine (docs/session.md is its contract).

No I/O here: inputs are method calls (UI intents, peripheral events, platform commands, the passing of
time read from an injected clock); outputs are the rendered state (``view()``) and a list of
``Effect`` values the caller carries out (emit a fleet event, run the document camera, wipe a session's
stored data, run a peripheral self-test). Every input either applies completely or raises and changes
nothing: ``IntentRejected`` for a UI intent, ``BadRequest``/``Conflict`` for a platform command.

Personal data (the card's name and full number, the clerk's messages, captured documents' facts)
lives only in ``Session``; ending a session drops the object and emits ``WipeSession`` for the stored
images. Events carry the masked number only.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from appliance.session.catalog import Catalog, Department, Item
from appliance.session.config import SessionConfig, check_pin
from appliance.session.errors import IntentRejected
from kiosk_core.errors import BadRequest, Conflict

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


# --- effects the caller performs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Emit:
    """Record a durable fleet event."""

    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class CaptureDocument:
    """Ask the document camera for a picture; answer with ``capture_finished(attempt, ...)``."""

    session_id: str
    doc_id: str
    attempt: int


@dataclass(frozen=True)
class KeepCapture:
    """The villager accepted the pending capture of ``doc_id``: it becomes the document's image."""

    session_id: str
    doc_id: str


@dataclass(frozen=True)
class DropCapture:
    """Forget the pending (not accepted) capture of ``doc_id``."""

    session_id: str
    doc_id: str


@dataclass(frozen=True)
class DropDocument:
    """Forget the accepted image of ``doc_id`` (the item changed and no longer needs it)."""

    session_id: str
    doc_id: str


@dataclass(frozen=True)
class WipeSession:
    """Delete everything stored for the session (images, keys)."""

    session_id: str


@dataclass(frozen=True)
class RunSelfTest:
    peripheral: str


@dataclass(frozen=True)
class RefreshTechnician:
    """Collect device status for the technician screen and call ``set_technician_status``."""


Effect = (
    Emit
    | CaptureDocument
    | KeepCapture
    | DropCapture
    | DropDocument
    | WipeSession
    | RunSelfTest
    | RefreshTechnician
)


# --- screens and session data ------------------------------------------------------------------------


class Screen(StrEnum):
    ATTRACT = "attract"
    CATALOG = "catalog"
    IDENTIFY = "identify"
    CONFIRM_IDENTITY = "confirm_identity"
    CARD_REMOVED = "card_removed"
    DOCUMENTS = "documents"
    CAPTURE = "capture"
    CALL_WAITING = "call_waiting"
    CALL = "call"
    RECEIPT = "receipt"
    REJECTED = "rejected"
    RATING = "rating"
    PROGRESS = "progress"
    APPOINTMENT = "appointment"
    ENDED = "ended"
    TECHNICIAN_PIN = "technician_pin"
    TECHNICIAN = "technician"
    UNAVAILABLE = "unavailable"


# Screens on which the card must stay on the reader (taking it away asks to put it back).
CARD_GUARDED = {Screen.DOCUMENTS, Screen.CAPTURE, Screen.CALL_WAITING, Screen.CALL}
# Screens of a villager session on which the idle timer may run.
SESSION_SCREENS = {
    Screen.CATALOG,
    Screen.IDENTIFY,
    Screen.CONFIRM_IDENTITY,
    Screen.CARD_REMOVED,
    Screen.DOCUMENTS,
    Screen.CAPTURE,
    Screen.CALL_WAITING,
    Screen.CALL,
    Screen.RECEIPT,
    Screen.REJECTED,
    Screen.RATING,
    Screen.PROGRESS,
    Screen.APPOINTMENT,
}
LANGS = ("zh-CN", "en")
RATING_REASONS = ("fast", "clear", "polite", "slow", "unclear", "not_solved")
END_REASONS = ("completed", "cancelled", "idle_timeout", "clerk_ended", "technician", "restart")
MAX_INTENT_TEXT = 200
APPLICATION_NO = re.compile(r"^[A-Za-z0-9-]{1,64}$")
SESSION_ID = re.compile(r"^s-[0-9a-f]{16}$")


def localized(name: str | dict[str, str]) -> dict[str, str]:
    return dict(name) if isinstance(name, dict) else {"zh-CN": name, "en": name}


@dataclass
class Doc:
    """One line of the checklist. ``image`` is the accepted capture's facts (sha256, bytes, mime)."""

    doc_id: str
    name: dict[str, str]
    required: bool
    requested_by_clerk: bool = False
    note: str | None = None
    image: dict[str, Any] | None = None
    stale: bool = False  # the clerk asked for it again: the image stays until replaced

    @property
    def status(self) -> str:
        return "captured" if self.image is not None and not self.stale else "missing"

    def as_view(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "name": self.name,
            "required": self.required,
            "status": self.status,
            "requested_by_clerk": self.requested_by_clerk,
            "note": self.note,
            "image": self.image,
        }


@dataclass
class Capture:
    doc_id: str
    return_to: Screen
    phase: str = "preview"  # preview | capturing | review | failed
    attempt: int = 0
    image: dict[str, Any] | None = None


@dataclass
class Call:
    status: str = "requesting"  # requesting | queued | no_answer | connected | ended
    requested_at: float = 0.0
    position: int | None = None
    estimated_wait_s: int | None = None
    clerk: dict[str, Any] | None = None
    connected_at: float | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Session:
    id: str
    started_at: float
    trigger: str
    purpose: str | None = None
    item: Item | None = None
    department: Department | None = None  # appointment
    # identity: personal data, dropped with the session
    name: str | None = None
    id_masked: str | None = None
    id_number: str | None = None
    card_data: dict[str, Any] | None = None
    identity_confirmed: bool = False
    card_present: bool = False
    next_after_confirm: str = "documents"
    checklist: list[Doc] = field(default_factory=list)
    capture: Capture | None = None
    call: Call | None = None
    clerk_connected: bool = False
    outcome: dict[str, Any] | None = None
    returns_to: Screen | None = None
    progress_phase: str = "loading"
    applications: list[dict[str, Any]] = field(default_factory=list)
    appointment_phase: str = "department"
    slots: list[dict[str, Any]] = field(default_factory=list)
    chosen_slot: str | None = None
    booking: dict[str, Any] | None = None
    waiting_since: float | None = None  # platform answer (progress/appointment) pending since
    requests: int = 0  # capture attempts
    doc_requests: int = 0  # documents the clerk added
    idle_warned: bool = False

    def doc(self, doc_id: str) -> Doc | None:
        return next((d for d in self.checklist if d.doc_id == doc_id), None)

    @property
    def documents_complete(self) -> bool:
        return all(d.status == "captured" for d in self.checklist if d.required)


@dataclass
class Technician:
    attempts_left: int
    locked_until: float | None = None
    last_input: float = 0.0
    status: dict[str, Any] = field(default_factory=dict)
    tests: dict[str, dict[str, Any]] = field(default_factory=dict)


# --- small validators for platform command params ------------------------------------------------------


def _text(
    params: dict[str, Any], key: str, *, max_len: int, required: bool = True, min_len: int = 1
) -> str | None:
    value = params.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{key}: required")
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key}: must be a string, got {type(value).__name__}")
    value = value.strip()
    if not min_len <= len(value) <= max_len:
        raise BadRequest(f"{key}: must be {min_len}..{max_len} characters, got {len(value)}")
    return value


def _int(params: dict[str, Any], key: str, *, lo: int, hi: int) -> int:
    value = params.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key}: must be an integer, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise BadRequest(f"{key}: must be {lo}..{hi}, got {value}")
    return value


def _list(params: dict[str, Any], key: str, *, max_len: int) -> list[Any]:
    value = params.get(key)
    if not isinstance(value, list):
        raise BadRequest(f"{key}: must be a list, got {type(value).__name__}")
    if len(value) > max_len:
        raise BadRequest(f"{key}: at most {max_len} entries, got {len(value)}")
    return value


def _name_param(params: dict[str, Any], key: str, *, max_len: int = 60) -> dict[str, str]:
    """A name as a string or ``{"zh-CN": ..., "en": ...}``."""
    value = params.get(key)
    if isinstance(value, dict):
        out = {}
        for lang in LANGS:
            text = value.get(lang)
            if not isinstance(text, str) or not 1 <= len(text.strip()) <= max_len:
                raise BadRequest(f"{key}.{lang}: must be a string of 1..{max_len} characters")
            out[lang] = text.strip()
        return out
    text = _text(params, key, max_len=max_len)
    assert text is not None
    return localized(text)


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
    ) -> None:
        self.config = config
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
        self.technician: Technician | None = None
        self.pin_locked_until: float | None = None
        self.pin_attempts_left = config.pin_attempts
        self.pin_is_default = False
        self.rejected_intents = 0
        self._intents: dict[str, Callable[[dict[str, Any]], list[Effect]]] = {
            "wake": self._i_wake,
            "touch": self._i_touch,
            "still_here": self._i_touch,
            "language": self._i_language,
            "select_department": self._i_select_department,
            "select_item": self._i_select_item,
            "back": self._i_back,
            "progress": self._i_progress,
            "appointment": self._i_appointment,
            "confirm": self._i_confirm,
            "not_me": self._i_not_me,
            "capture": self._i_capture,
            "shoot": self._i_shoot,
            "accept": self._i_accept,
            "retake": self._i_retake,
            "call": self._i_call,
            "cancel_call": self._i_cancel_call,
            "continue": self._i_continue,
            "rate": self._i_rate,
            "skip": self._i_skip,
            "retry": self._i_retry,
            "book": self._i_book,
            "done": self._i_done,
            "end": self._i_end,
            "technician_pin": self._i_technician_pin,
            "technician_test": self._i_technician_test,
            "technician_refresh": self._i_technician_refresh,
            "technician_exit": self._i_technician_exit,
        }
        self._commands: dict[str, Callable[[dict[str, Any]], tuple[dict[str, Any], list[Effect]]]] = {
            "session.status": self._c_status,
            "session.identity.get": self._c_identity_get,
            "session.call.queued": self._c_call_queued,
            "session.call.accepted": self._c_call_accepted,
            "session.request_document": self._c_request_document,
            "session.message": self._c_message,
            "session.approve": self._c_approve,
            "session.reject": self._c_reject,
            "session.end": self._c_end,
            "session.progress.result": self._c_progress_result,
            "session.appointment.slots": self._c_appointment_slots,
            "session.appointment.confirmed": self._c_appointment_confirmed,
            "session.appointment.declined": self._c_appointment_declined,
        }

    @property
    def intent_names(self) -> list[str]:
        return sorted(self._intents)

    @property
    def command_names(self) -> list[str]:
        return sorted(self._commands)

    # === inputs: UI intents ===========================================================================

    def intent(self, name: str, body: Any) -> list[Effect]:
        """Apply a UI intent or raise ``IntentRejected`` (nothing changes)."""
        if name not in self._intents:
            raise IntentRejected(f"unknown intent {name!r}")
        if not isinstance(body, dict):
            raise IntentRejected(f"{name}: body must be a JSON object")
        ref = body.get("ref")
        if ref is not None and (not isinstance(ref, str) or len(ref) > 64):
            raise IntentRejected(f"{name}: ref must be a string of at most 64 characters")
        shown = body.get("screen")
        if shown is not None and shown != self.screen.value:
            raise IntentRejected(f"{name}: stale (sent from screen {shown!r}, now {self.screen.value!r})")
        if name != "touch" and name not in self.actions():
            raise IntentRejected(f"{name}: not available on screen {self.screen.value!r}")
        effects = self._intents[name](body)
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
        if self.screen in (Screen.ATTRACT, Screen.ENDED):
            return self._start_session("presence")
        return []

    def card_read(self, data: dict[str, Any]) -> list[Effect]:
        """``card.read`` data: public fields plus ``_private`` (full number) from in-process delivery."""
        private = data.get("_private") if isinstance(data.get("_private"), dict) else {}
        number = private.get("id_number") if isinstance(private.get("id_number"), str) else None
        masked = data.get("id_number_masked") or data.get("id_masked")
        name = data.get("name") or private.get("name")
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
            if not same:
                self.notice = {"code": "card_mismatch", "params": {}}
                return []
            s.card_present = True
            back = s.returns_to or Screen.DOCUMENTS
            s.returns_to = None
            self._go(back)
            return [Emit("session.card.returned", {"session_id": s.id, "screen": back.value})]
        if s.identity_confirmed:
            if same:
                s.card_present = True
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

    def _ask_confirm(self, s: Session) -> list[Effect]:
        self._go(Screen.CONFIRM_IDENTITY)
        return [
            Emit("session.identified", {"session_id": s.id, "id_masked": s.id_masked, "purpose": s.purpose})
        ]

    def card_removed(self) -> list[Effect]:
        s = self.session
        if s is None:
            return []
        s.card_present = False
        self.last_activity = self.clock.monotonic()
        if not s.identity_confirmed:
            # Nothing confirmed yet: forget the candidate; on the confirm screen, ask for the card again.
            s.name = s.id_masked = s.id_number = None
            s.card_data = None
            if self.screen is Screen.CONFIRM_IDENTITY:
                self._go(Screen.IDENTIFY)
            return []
        if self.screen not in CARD_GUARDED:
            return []
        s.returns_to = self.screen
        if self.screen is Screen.CAPTURE and s.capture is not None:
            # The capture is abandoned; its pending image (if any) is dropped.
            back, s.returns_to = s.capture.return_to, s.capture.return_to
            effects: list[Effect] = [DropCapture(s.id, s.capture.doc_id)]
            s.capture = None
        else:
            back, effects = self.screen, []
        self._go(Screen.CARD_REMOVED)
        return [*effects, Emit("session.card.removed", {"session_id": s.id, "screen": back.value})]

    def help_held(self) -> list[Effect]:
        """The help button was held long enough: technician mode (PIN first)."""
        if self.screen in (Screen.TECHNICIAN_PIN, Screen.TECHNICIAN):
            return []
        effects = self._end("technician") if self.session is not None else []
        now = self.clock.monotonic()
        self.technician = Technician(attempts_left=self.pin_attempts_left, last_input=now)
        self._go(Screen.TECHNICIAN_PIN)
        return effects

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
        s = self.session
        c = s.capture if s is not None else None
        if (
            s is None
            or s.id != session_id
            or c is None
            or c.doc_id != doc_id
            or c.attempt != attempt
            or c.phase != "capturing"
            or self.screen is not Screen.CAPTURE
        ):
            return None
        if image is None:
            c.phase = "failed"
            self.notice = {"code": "doccam_unavailable", "params": {"detail": (error or "")[:200]}}
            return [
                Emit(
                    "session.document.failed",
                    {"session_id": s.id, "doc_id": doc_id, "detail": (error or "")[:200]},
                )
            ]
        c.phase = "review"
        c.image = {
            "sha256": image["sha256"],
            "bytes": image["bytes"],
            "mime": image.get("mime", "image/jpeg"),
            "preview_path": None,
        }
        return []

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
        now = self.clock.monotonic()
        s = self.session
        effects: list[Effect] = []
        if self.screen is Screen.ENDED and now - self.entered_at >= self.config.ended_hold_s:
            self._to_attract()
            return effects
        if self.technician is not None:
            t = self.technician
            if self.pin_locked_until is not None and now >= self.pin_locked_until:
                self.pin_locked_until = None
                self.pin_attempts_left = self.config.pin_attempts
                t.attempts_left = self.pin_attempts_left
            if now - t.last_input >= self.config.technician_idle_s:
                effects.append(Emit("session.technician.exited", {"reason": "idle"}))
                self._to_attract()
            return effects
        if s is None:
            return effects
        if self._idle_running():
            idle_for = now - self.last_activity
            if idle_for >= self.config.idle_timeout_s:
                return self._end("idle_timeout")
            if idle_for >= self.config.idle_timeout_s - self.config.idle_warning_s and not s.idle_warned:
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
        now = self.clock.monotonic()
        times: list[float] = []
        s = self.session
        if self.screen is Screen.ENDED:
            times.append(self.entered_at + self.config.ended_hold_s)
        if self.technician is not None:
            times.append(self.technician.last_input + self.config.technician_idle_s)
            if self.pin_locked_until is not None:
                times.append(self.pin_locked_until)
                times.append(now + 1.0)  # locked_s counts down
        if s is not None:
            if self._idle_running():
                deadline = self.last_activity + self.config.idle_timeout_s
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

    # === the rendered state ===========================================================================

    def _idle_running(self) -> bool:
        s = self.session
        if s is None or self.screen not in SESSION_SCREENS:
            return False
        return not (s.call is not None and s.call.status == "connected")

    def countdown(self) -> int | None:
        if not self._idle_running():
            return None
        remaining = self.config.idle_timeout_s - (self.clock.monotonic() - self.last_activity)
        if remaining > self.config.idle_warning_s:
            return None
        # Tolerate float noise: 90 - (t0 + 76 - t0) can come out as 14.000000000001 for a large t0.
        return max(1, math.ceil(remaining - 1e-6))

    def actions(self) -> list[str]:
        """The intents accepted now, in the order the UI shows them (number keys follow this order)."""
        s = self.session
        scr = self.screen
        out: list[str] = []
        if scr in (Screen.ATTRACT, Screen.ENDED):
            out = ["wake"]
        elif scr is Screen.CATALOG:
            out = ["select_department"]
            if s is not None and s.department is not None:
                out += ["select_item", "back"]
            out += ["progress", "appointment", "end"]
        elif scr is Screen.IDENTIFY:
            out = ["back", "end"]
        elif scr is Screen.CONFIRM_IDENTITY:
            out = ["confirm", "not_me", "end"]
        elif scr is Screen.CARD_REMOVED:
            out = ["end"]
        elif scr is Screen.DOCUMENTS and s is not None:
            out = ["capture"] + (["call"] if s.documents_complete else []) + ["back", "end"]
        elif scr is Screen.CAPTURE and s is not None and s.capture is not None:
            out = {
                "preview": ["shoot", "back", "end"],
                "capturing": [],
                "review": ["accept", "retake", "end"],
                "failed": ["shoot", "back", "end"],
            }[s.capture.phase]
        elif scr is Screen.CALL_WAITING and s is not None and s.call is not None:
            out = ["call", "appointment", "end"] if s.call.status == "no_answer" else ["cancel_call", "end"]
        elif scr is Screen.CALL and s is not None:
            missing = any(d.requested_by_clerk and d.status == "missing" for d in s.checklist)
            out = (["capture"] if missing else []) + ["end"]
        elif scr in (Screen.RECEIPT, Screen.REJECTED):
            out = ["continue"]
        elif scr is Screen.RATING:
            out = ["rate", "skip"]
        elif scr is Screen.PROGRESS and s is not None:
            out = {"loading": ["end"], "result": ["done"], "failed": ["retry", "end"]}[s.progress_phase]
        elif scr is Screen.APPOINTMENT and s is not None:
            out = {
                "department": ["select_department", "back", "end"],
                "loading": ["end"],
                "slots": (["book"] if s.slots else []) + ["back", "end"],
                "booking": ["end"],
                "booked": ["done"],
                "declined": (["book"] if s.slots else []) + ["back", "end"],
                "failed": ["retry", "end"],
            }[s.appointment_phase]
        elif scr is Screen.TECHNICIAN_PIN:
            out = (
                ["technician_exit"]
                if self.pin_locked_until is not None
                else ["technician_pin", "technician_exit"]
            )
            return out
        elif scr is Screen.TECHNICIAN:
            return ["technician_test", "technician_refresh", "technician_exit"]
        if scr is Screen.UNAVAILABLE:
            return []
        if self.countdown() is not None:
            out = ["still_here", *out]
        return [*out, "language"]

    def view(self) -> dict[str, Any]:
        """The state for ``kiosk/local/state/session`` without the envelope (v, boot, seq, ts, heartbeat_s)."""
        s = self.session
        idle = None
        if self._idle_running():
            idle = {
                "timeout_s": self.config.idle_timeout_s,
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
            "view": self._screen_view(),
        }

    def _item_view(self, item: Item | None) -> dict[str, Any] | None:
        return {"id": item.id, "name": item.name.as_dict()} if item is not None else None

    def _screen_view(self) -> dict[str, Any]:
        s = self.session
        scr = self.screen
        now = self.clock.monotonic()
        if scr is Screen.ATTRACT:
            return {"site": self.site, "catalog_version": self.catalog.version}
        if scr is Screen.ENDED:
            return {"reason": self.ended_reason}
        if scr is Screen.UNAVAILABLE:
            return {"reason": "restart"}
        if scr is Screen.TECHNICIAN_PIN:
            locked = None
            if self.pin_locked_until is not None:
                locked = max(1, math.ceil(self.pin_locked_until - now))
            return {
                "digits": self.config.pin_digits,
                "attempts_left": self.pin_attempts_left,
                "locked_s": locked,
            }
        if scr is Screen.TECHNICIAN:
            t = self.technician
            status = t.status if t else {}
            return {
                "device": status.get("device", {}),
                "peripherals": status.get("peripherals", []),
                "network": status.get("network", {}),
                "tests": dict(t.tests) if t else {},
                "pin_is_default": self.pin_is_default,
            }
        assert s is not None
        if scr is Screen.CATALOG:
            dep = s.department
            items = self.catalog.items_of(dep.id) if dep else []
            return {
                "version": self.catalog.version,
                "departments": self.catalog.departments_view(),
                "department": {"id": dep.id, "name": dep.name.as_dict()} if dep else None,
                "items": [
                    {
                        "id": i.id,
                        "name": i.name.as_dict(),
                        "document_count": len(i.documents),
                        "minutes": i.minutes,
                    }
                    for i in items
                ],
            }
        if scr is Screen.IDENTIFY:
            return {
                "item": self._item_view(s.item) if s.purpose == "apply" else None,
                "department": (
                    {"id": s.department.id, "name": s.department.name.as_dict()}
                    if s.purpose == "appointment" and s.department
                    else None
                ),
                "next": s.next_after_confirm,
            }
        if scr is Screen.CONFIRM_IDENTITY:
            return {"next": s.next_after_confirm}
        if scr is Screen.CARD_REMOVED:
            return {"returns_to": (s.returns_to or Screen.DOCUMENTS).value}
        if scr is Screen.DOCUMENTS:
            return {
                "item": self._item_view(s.item),
                "checklist": [d.as_view() for d in s.checklist],
                "complete": s.documents_complete,
            }
        if scr is Screen.CAPTURE:
            c = s.capture
            assert c is not None
            d = s.doc(c.doc_id)
            doc = {
                "doc_id": c.doc_id,
                "name": d.name if d else {},
                "required": d.required if d else False,
                "requested_by_clerk": d.requested_by_clerk if d else False,
                "note": d.note if d else None,
            }
            return {"doc": doc, "phase": c.phase, "image": c.image, "return_to": c.return_to.value}
        if scr is Screen.CALL_WAITING:
            call = s.call or Call()
            return {
                "item": self._item_view(s.item),
                "status": call.status,
                "position": call.position,
                "estimated_wait_s": call.estimated_wait_s,
                "waited_s": round(max(0.0, now - call.requested_at)),
            }
        if scr is Screen.CALL:
            call = s.call or Call()
            wall, mono = self.clock.time(), now
            messages = [
                {"from": m["from"], "text": m["text"], "ts": round(wall - (mono - m["at"]), 3)}
                for m in call.messages
            ]
            return {
                "item": self._item_view(s.item),
                "clerk": call.clerk,
                "messages": messages,
                "requested_documents": [d.as_view() for d in s.checklist if d.requested_by_clerk],
                "checklist": [d.as_view() for d in s.checklist],
            }
        if scr in (Screen.RECEIPT, Screen.REJECTED):
            o = s.outcome or {}
            clerk = s.call.clerk if s.call else None
            if scr is Screen.RECEIPT:
                return {
                    "item": self._item_view(s.item),
                    "application_no": o.get("application_no"),
                    "qr_text": o.get("qr_text"),
                    "note": o.get("note"),
                    "clerk": clerk,
                }
            return {"item": self._item_view(s.item), "reason": o.get("reason"), "clerk": clerk}
        if scr is Screen.RATING:
            return {
                "scores": [1, 2, 3, 4, 5],
                "reasons": list(RATING_REASONS),
                "clerk": s.call.clerk if s.call else None,
            }
        if scr is Screen.PROGRESS:
            return {"phase": s.progress_phase, "applications": s.applications}
        if scr is Screen.APPOINTMENT:
            dep = s.department
            return {
                "phase": s.appointment_phase,
                "departments": self.catalog.departments_view(),
                "department": {"id": dep.id, "name": dep.name.as_dict()} if dep else None,
                "slots": s.slots,
                "booking": s.booking,
            }
        return {}

    # === transitions ==================================================================================

    def _go(self, screen: Screen) -> None:
        if screen is not self.screen:
            self.notice = None
        self.screen = screen
        self.entered_at = self.clock.monotonic()

    def _to_attract(self) -> None:
        self.technician = None
        self.lang = self.config.default_lang
        self.ended_reason = None
        self._go(Screen.ATTRACT)

    def _start_session(self, trigger: str) -> list[Effect]:
        now = self.clock.monotonic()
        if self.screen is Screen.ENDED:  # the next villager starts in the default language
            self.lang = self.config.default_lang
        s = Session(id=self._new_id(), started_at=now, trigger=trigger)
        self.session = s
        self.last_activity = now
        self._go(Screen.CATALOG)
        return [Emit("session.started", {"session_id": s.id, "trigger": trigger, "lang": self.lang})]

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
        self.ref = None
        self._go(Screen.ENDED)
        return [Emit("session.ended", data), WipeSession(s.id)]

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
            return self._request_progress(s)
        if s.next_after_confirm == "appointment":
            return self._request_slots(s)
        self._go(Screen.DOCUMENTS)
        return []

    def _request_progress(self, s: Session) -> list[Effect]:
        s.progress_phase, s.applications = "loading", []
        s.waiting_since = self.clock.monotonic()
        self._go(Screen.PROGRESS)
        return [Emit("session.progress.requested", {"session_id": s.id, "id_masked": s.id_masked})]

    def _request_slots(self, s: Session) -> list[Effect]:
        assert s.department is not None
        s.appointment_phase, s.slots, s.chosen_slot = "loading", [], None
        s.waiting_since = self.clock.monotonic()
        self._go(Screen.APPOINTMENT)
        return [
            Emit(
                "session.appointment.requested",
                {"session_id": s.id, "department_id": s.department.id, "id_masked": s.id_masked},
            )
        ]

    def _hang_up_or_end(self, reason: str) -> list[Effect]:
        """The villager (or the clerk) ends: with a clerk connected this leads to the rating."""
        s = self.session
        assert s is not None
        if s.clerk_connected and s.outcome is None:
            effects: list[Effect] = []
            if s.capture is not None:
                effects.append(DropCapture(s.id, s.capture.doc_id))
                s.capture = None
            if s.call is not None:
                s.call.status = "ended"
            effects.append(Emit("session.call.ended", {"session_id": s.id, "by": reason}))
            self._go(Screen.RATING)
            return effects
        return self._end(reason)

    # --- intent handlers (the screen check already passed) ---------------------------------------------

    def _session(self) -> Session:
        if self.session is None:  # cannot happen once actions() said yes; a guard for refactors
            raise IntentRejected("no session")
        return self.session

    def _i_wake(self, body: dict[str, Any]) -> list[Effect]:
        return self._start_session("touch")

    def _i_touch(self, body: dict[str, Any]) -> list[Effect]:
        return []

    def _i_language(self, body: dict[str, Any]) -> list[Effect]:
        lang = body.get("lang")
        if lang not in LANGS:
            raise IntentRejected(f"language: lang must be one of {', '.join(LANGS)}")
        self.lang = lang
        return []

    def _i_select_department(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        dep_id = body.get("department_id")
        dep = self.catalog.department(dep_id) if isinstance(dep_id, str) else None
        if dep is None:
            raise IntentRejected(f"select_department: unknown department_id {dep_id!r}")
        s.department = dep
        if self.screen is Screen.APPOINTMENT:
            return self._identified_next(s, "appointment")
        return []

    def _i_select_item(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        item_id = body.get("item_id")
        item = self.catalog.item(item_id) if isinstance(item_id, str) else None
        if item is None or s.department is None or item.department != s.department.id:
            raise IntentRejected(f"select_item: {item_id!r} is not an item of the chosen department")
        effects: list[Effect] = []
        old = {d.doc_id: d for d in s.checklist}
        s.item, s.purpose = item, "apply"
        s.checklist = []
        for spec in item.documents:
            kept = old.pop(spec.id, None)
            s.checklist.append(
                Doc(
                    spec.id,
                    spec.name.as_dict(),
                    spec.required,
                    image=kept.image if kept and not kept.stale else None,
                )
            )
        # Images of the previous item that this one does not need are deleted at once.
        effects += [DropDocument(s.id, d.doc_id) for d in old.values() if d.image is not None]
        effects.append(
            Emit(
                "session.item.selected",
                {
                    "session_id": s.id,
                    "item_id": item.id,
                    "department_id": item.department,
                    "catalog_version": self.catalog.version,
                },
            )
        )
        return effects + self._identified_next(s, "documents")

    def _i_back(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        scr = self.screen
        if scr is Screen.CATALOG:
            s.department = None
        elif scr is Screen.IDENTIFY:
            self._go(Screen.APPOINTMENT if s.purpose == "appointment" else Screen.CATALOG)
            if s.purpose == "appointment":
                s.appointment_phase = "department"
        elif scr is Screen.DOCUMENTS:
            self._go(Screen.CATALOG)
        elif scr is Screen.CAPTURE:
            c = s.capture
            assert c is not None
            s.capture = None
            self._go(c.return_to)
        elif scr is Screen.APPOINTMENT:
            if s.appointment_phase == "department":
                s.department = None
                self._go(Screen.CATALOG)
            else:
                s.appointment_phase, s.slots, s.chosen_slot, s.waiting_since = "department", [], None, None
                self.notice = None
        return []

    def _i_progress(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        s.purpose = "progress"
        return self._identified_next(s, "progress")

    def _i_appointment(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        effects: list[Effect] = []
        dep = None
        if self.screen is Screen.CALL_WAITING:  # nobody answered: book a time with that department instead
            effects.append(Emit("session.call.cancelled", {"session_id": s.id, "waited_s": self._waited(s)}))
            s.call = None
            dep = self.catalog.department(s.item.department) if s.item else None
        s.purpose, s.department = "appointment", dep
        if dep is not None:
            return effects + self._identified_next(s, "appointment")
        s.appointment_phase = "department"
        self._go(Screen.APPOINTMENT)
        return effects

    def _i_confirm(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        s.identity_confirmed = True
        return [
            Emit("session.identity.confirmed", {"session_id": s.id, "id_masked": s.id_masked}),
            *self._after_confirm(s),
        ]

    def _i_not_me(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        s.name = s.id_masked = s.id_number = None
        s.card_data = None
        s.identity_confirmed = False
        self._go(Screen.IDENTIFY)
        return [Emit("session.identity.rejected", {"session_id": s.id})]

    def _i_capture(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        doc_id = body.get("doc_id")
        doc = s.doc(doc_id) if isinstance(doc_id, str) else None
        if doc is None:
            raise IntentRejected(f"capture: {doc_id!r} is not on the checklist")
        s.capture = Capture(doc_id=doc.doc_id, return_to=self.screen)
        self._go(Screen.CAPTURE)
        return []

    def _i_shoot(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        c = s.capture
        assert c is not None
        s.requests += 1
        c.attempt, c.phase, c.image = s.requests, "capturing", None
        self.notice = None
        return [CaptureDocument(s.id, c.doc_id, c.attempt)]

    def _i_accept(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        c = s.capture
        assert c is not None and c.image is not None
        doc = s.doc(c.doc_id)
        s.capture = None
        self._go(c.return_to if c.return_to in (Screen.DOCUMENTS, Screen.CALL) else Screen.DOCUMENTS)
        if doc is None:  # the item changed under the capture: cannot happen through the UI, but be safe
            return [DropCapture(s.id, c.doc_id)]
        doc.image = {k: c.image[k] for k in ("sha256", "bytes", "mime")}
        doc.stale = False
        return [
            KeepCapture(s.id, doc.doc_id),
            Emit(
                "session.document.captured",
                {
                    "session_id": s.id,
                    "doc_id": doc.doc_id,
                    "name": doc.name["zh-CN"],
                    **doc.image,
                    "requested_by_clerk": doc.requested_by_clerk,
                },
            ),
        ]

    def _i_retake(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        c = s.capture
        assert c is not None
        c.phase, c.image = "preview", None
        return [DropCapture(s.id, c.doc_id)]

    def _i_call(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        assert s.item is not None
        s.call = Call(requested_at=self.clock.monotonic())
        self._go(Screen.CALL_WAITING)
        docs = [{"doc_id": d.doc_id, **(d.image or {})} for d in s.checklist if d.status == "captured"]
        return [
            Emit(
                "session.call.requested",
                {
                    "session_id": s.id,
                    "item_id": s.item.id,
                    "department_id": s.item.department,
                    "id_masked": s.id_masked,
                    "documents": docs,
                },
            )
        ]

    def _waited(self, s: Session) -> int:
        return round(self.clock.monotonic() - s.call.requested_at) if s.call else 0

    def _i_cancel_call(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        waited = self._waited(s)
        s.call = None
        self._go(Screen.DOCUMENTS)
        return [Emit("session.call.cancelled", {"session_id": s.id, "waited_s": waited})]

    def _i_continue(self, body: dict[str, Any]) -> list[Effect]:
        self._go(Screen.RATING)
        return []

    def _i_rate(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        score = body.get("score")
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise IntentRejected("rate: score must be an integer 1..5")
        reason = body.get("reason")
        if reason is not None and (not isinstance(reason, str) or len(reason.strip()) > MAX_INTENT_TEXT):
            raise IntentRejected(
                f"rate: reason must be null or a text of at most {MAX_INTENT_TEXT} characters"
            )
        reason = reason.strip() or None if isinstance(reason, str) else None
        clerk = s.call.clerk if s.call and s.call.clerk else {}
        rated = Emit(
            "session.rated",
            {
                "session_id": s.id,
                "score": score,
                "reason": reason,
                "clerk_id": clerk.get("id"),
                "item_id": s.item.id if s.item else None,
            },
        )
        return [rated, *self._end("completed")]

    def _i_skip(self, body: dict[str, Any]) -> list[Effect]:
        return self._end("completed")

    def _i_retry(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        if self.screen is Screen.PROGRESS:
            return self._request_progress(s)
        return self._request_slots(s)

    def _i_book(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        slot_id = body.get("slot_id")
        if not any(sl["slot_id"] == slot_id for sl in s.slots):
            raise IntentRejected(f"book: {slot_id!r} is not one of the offered slots")
        assert s.department is not None
        s.chosen_slot, s.appointment_phase = slot_id, "booking"
        s.waiting_since = self.clock.monotonic()
        self.notice = None
        return [
            Emit(
                "session.appointment.book_requested",
                {"session_id": s.id, "department_id": s.department.id, "slot_id": slot_id},
            )
        ]

    def _i_done(self, body: dict[str, Any]) -> list[Effect]:
        s = self._session()
        effects: list[Effect] = []
        if self.screen is Screen.PROGRESS:
            effects.append(Emit("session.progress.shown", {"session_id": s.id, "count": len(s.applications)}))
        return effects + self._end("completed")

    def _i_end(self, body: dict[str, Any]) -> list[Effect]:
        return self._hang_up_or_end("cancelled")

    def _i_technician_pin(self, body: dict[str, Any]) -> list[Effect]:
        t = self.technician
        assert t is not None
        pin = body.get("pin")
        if not isinstance(pin, str) or not pin.isascii() or not pin.isdigit() or not 4 <= len(pin) <= 12:
            raise IntentRejected("technician_pin: pin must be 4..12 digits")
        if self._check_pin(pin, self.config.technician_pin_hash):
            self.pin_attempts_left = self.config.pin_attempts
            self._go(Screen.TECHNICIAN)
            return [Emit("session.technician.entered", {}), RefreshTechnician()]
        self.pin_attempts_left -= 1
        t.attempts_left = self.pin_attempts_left
        if self.pin_attempts_left <= 0:
            self.pin_locked_until = self.clock.monotonic() + self.config.pin_lockout_s
            self.notice = {"code": "pin_locked", "params": {}}
            return [Emit("session.technician.locked", {"lockout_s": self.config.pin_lockout_s})]
        self.notice = {"code": "wrong_pin", "params": {"attempts_left": self.pin_attempts_left}}
        return [Emit("session.technician.pin_failed", {"attempts_left": self.pin_attempts_left})]

    def _i_technician_test(self, body: dict[str, Any]) -> list[Effect]:
        t = self.technician
        assert t is not None
        name = body.get("peripheral")
        known = {p.get("name") for p in t.status.get("peripherals", []) if isinstance(p, dict)}
        if not isinstance(name, str) or name not in known:
            raise IntentRejected(f"technician_test: unknown peripheral {name!r}")
        t.tests[name] = {"status": "running", "detail": "", "ts": self.clock.time()}
        return [RunSelfTest(name)]

    def _i_technician_refresh(self, body: dict[str, Any]) -> list[Effect]:
        return [RefreshTechnician()]

    def _i_technician_exit(self, body: dict[str, Any]) -> list[Effect]:
        entered = self.screen is Screen.TECHNICIAN
        self._to_attract()
        return [Emit("session.technician.exited", {"reason": "exit"})] if entered else []

    # === inputs: platform commands ====================================================================

    def command(self, name: str, params: Any) -> tuple[dict[str, Any], list[Effect]]:
        """Apply a platform command: returns (reply body, effects) or raises ``CommandError``."""
        handler = self._commands.get(name)
        if handler is None:
            raise BadRequest(f"unknown session command {name!r}")
        if not isinstance(params, dict):
            raise BadRequest("params must be a JSON object")
        return handler(params)

    def session_for(self, params: dict[str, Any]) -> Session:
        """The current session if ``params['session_id']`` names it, else 400/409."""
        sid = params.get("session_id")
        if not isinstance(sid, str) or not SESSION_ID.match(sid):
            raise BadRequest("session_id: required, like s-0123456789abcdef")
        if self.session is None or self.session.id != sid:
            raise Conflict(f"session {sid} is not active on this kiosk (screen {self.screen.value})")
        return self.session

    def _need_call(self, s: Session, *states: str) -> Call:
        if s.call is None or s.call.status not in states:
            now = s.call.status if s.call else "no call"
            raise Conflict(
                f"the call is {now!r}; this needs {' or '.join(states)} (screen {self.screen.value})"
            )
        return s.call

    def _c_status(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
        s = self.session
        if s is None:
            return {
                "screen": self.screen.value,
                "session_id": None,
                "purpose": None,
                "item_id": None,
                "documents": [],
                "call": None,
            }, []
        docs = [
            {
                "doc_id": d.doc_id,
                "status": d.status,
                "sha256": (d.image or {}).get("sha256"),
                "bytes": (d.image or {}).get("bytes"),
            }
            for d in s.checklist
        ]
        call = {"status": s.call.status, "clerk_id": (s.call.clerk or {}).get("id")} if s.call else None
        return {
            "screen": self.screen.value,
            "session_id": s.id,
            "purpose": s.purpose,
            "item_id": s.item.id if s.item else None,
            "documents": docs,
            "call": call,
        }, []

    def _c_identity_get(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
        s = self.session_for(params)
        if not s.identity_confirmed or s.card_data is None:
            raise Conflict("the villager has not confirmed an identity in this session")
        return dict(s.card_data), []

    def _c_call_queued(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
        s = self.session_for(params)
        position = _int(params, "position", lo=0, hi=10_000)
        wait = _int(params, "estimated_wait_s", lo=0, hi=86_400)
        call = self._need_call(s, "requesting", "queued")
        call.status, call.position, call.estimated_wait_s = "queued", position, wait
        return {"ok": True}, []

    def _c_call_accepted(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
        s = self.session_for(params)
        clerk = params.get("clerk")
        if not isinstance(clerk, dict):
            raise BadRequest("clerk: must be an object {id, name, department}")
        clerk_id = _text(clerk, "id", max_len=64)
        clerk_name = _text(clerk, "name", max_len=40)
        dep = clerk.get("department")
        dep_view: dict[str, Any]
        if isinstance(dep, str):
            known = self.catalog.department(dep)
            dep_view = {"id": dep, "name": known.name.as_dict() if known else localized(dep)}
        elif isinstance(dep, dict):
            dep_id = _text(dep, "id", max_len=64)
            known = self.catalog.department(dep_id or "")
            name = (
                _name_param(dep, "name")
                if "name" in dep
                else (known.name.as_dict() if known else localized(dep_id or ""))
            )
            dep_view = {"id": dep_id, "name": name}
        else:
            raise BadRequest("clerk.department: must be a department id or {id, name}")
        call = self._need_call(s, "requesting", "queued")
        now = self.clock.monotonic()
        call.status, call.connected_at = "connected", now
        call.clerk = {"id": clerk_id, "name": clerk_name, "department": dep_view}
        s.clerk_connected = True
        if self.screen is Screen.CALL_WAITING:
            self._go(Screen.CALL)
        elif self.screen is Screen.CARD_REMOVED:
            s.returns_to = Screen.CALL
        return {"ok": True}, [
            Emit(
                "session.call.connected",
                {"session_id": s.id, "clerk_id": clerk_id, "waited_s": round(now - call.requested_at)},
            )
        ]

    def _c_request_document(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
        s = self.session_for(params)
        name = _name_param(params, "name") if "name" in params else None
        doc_id = params.get("doc_id")
        note = _text(params, "note", max_len=200, required=False)
        if doc_id is not None and (not isinstance(doc_id, str) or s.doc(doc_id) is None):
            raise BadRequest(
                f"doc_id: {doc_id!r} is not on this session's checklist (omit it to ask for a new one)"
            )
        if doc_id is None and name is None:
            raise BadRequest("name: required (or doc_id of a checklist entry)")
        self._need_call(s, "connected")
        if len(s.checklist) >= 40:
            raise Conflict("this session already has 40 documents")
        if doc_id is not None:
            doc = s.doc(doc_id)
            assert doc is not None
            doc.stale = doc.image is not None
        else:
            s.doc_requests += 1
            doc = Doc(f"req-{s.doc_requests}", name or {}, required=True)
            s.checklist.append(doc)
        doc.requested_by_clerk, doc.required, doc.note = True, True, note
        self.notice = {"code": "clerk_requested_document", "params": {"name": doc.name}}
        return {"doc_id": doc.doc_id}, [
            Emit(
                "session.document.requested",
                {"session_id": s.id, "doc_id": doc.doc_id, "name": doc.name["zh-CN"]},
            )
        ]

    def _c_message(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
        s = self.session_for(params)
        text = _text(params, "text", max_len=500)
        call = self._need_call(s, "connected")
        call.messages.append({"from": "clerk", "text": text, "at": self.clock.monotonic()})
        del call.messages[: -self.config.max_messages]
        if self.screen is Screen.CALL:
            self.notice = {"code": "clerk_message", "params": {}}
        return {"ok": True}, []

    def _outcome_screen(self, s: Session, screen: Screen) -> list[Effect]:
        effects: list[Effect] = []
        if s.capture is not None:
            effects.append(DropCapture(s.id, s.capture.doc_id))
            s.capture = None
        if s.call is not None:
            s.call.status = "ended"
        s.returns_to = None
        self._go(screen)
        self.last_activity = self.clock.monotonic()
        return effects

    def _c_approve(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
        s = self.session_for(params)
        number = _text(params, "application_no", max_len=64)
        assert number is not None
        if not APPLICATION_NO.match(number):
            raise BadRequest("application_no: 1..64 characters of A-Z a-z 0-9 -")
        qr = _text(params, "qr_text", max_len=512, required=False)
        note = _text(params, "note", max_len=200, required=False)
        self._need_call(s, "connected")
        s.outcome = {
            "approved": True,
            "application_no": number,
            "note": note,
            "qr_text": qr or self.config.receipt_url_template.format(application_no=number),
        }
        effects = self._outcome_screen(s, Screen.RECEIPT)
        return {"ok": True}, effects + [
            Emit(
                "session.approved",
                {"session_id": s.id, "application_no": number, "item_id": s.item.id if s.item else None},
            )
        ]

    def _c_reject(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
        s = self.session_for(params)
        reason = _text(params, "reason", max_len=500)
        self._need_call(s, "connected")
        s.outcome = {"approved": False, "reason": reason}
        effects = self._outcome_screen(s, Screen.REJECTED)
        return {"ok": True}, effects + [
            Emit(
                "session.rejected",
                {"session_id": s.id, "reason": reason, "item_id": s.item.id if s.item else None},
            )
        ]

    def _c_end(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
        s = self.session_for(params)
        _text(params, "reason", max_len=200, required=False)
        if self.screen is Screen.RATING or s.outcome is not None:
            # The villager is reading the receipt or rating: the clerk's end changes nothing for them.
            return {"ok": True, "screen": self.screen.value}, []
        effects = self._hang_up_or_end("clerk_ended")
        return {"ok": True, "screen": self.screen.value}, effects

    def _c_progress_result(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
        s = self.session_for(params)
        raw = _list(params, "applications", max_len=50)
        apps = []
        for n, a in enumerate(raw):
            if not isinstance(a, dict):
                raise BadRequest(f"applications.{n}: must be an object")
            apps.append(
                {
                    "application_no": _text(a, "application_no", max_len=64),
                    "item_name": _name_param(a, "item_name", max_len=60),
                    "status": _text(a, "status", max_len=32),
                    "updated_at": _text(a, "updated_at", max_len=32, required=False),
                    "note": _text(a, "note", max_len=200, required=False),
                }
            )
        if self.screen is not Screen.PROGRESS or s.progress_phase not in ("loading", "failed"):
            raise Conflict(f"no progress lookup is waiting (screen {self.screen.value})")
        s.applications, s.progress_phase, s.waiting_since = apps, "result", None
        self.notice = None
        return {"ok": True}, []

    def _parse_slots(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        slots = []
        for n, sl in enumerate(_list(params, "slots", max_len=50)):
            if not isinstance(sl, dict):
                raise BadRequest(f"slots.{n}: must be an object")
            slots.append(
                {
                    "slot_id": _text(sl, "slot_id", max_len=64),
                    "start": _text(sl, "start", max_len=40),
                    "end": _text(sl, "end", max_len=40),
                    "official": _text(sl, "official", max_len=40, required=False),
                }
            )
        return slots

    def _c_appointment_slots(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
        s = self.session_for(params)
        dep_id = _text(params, "department_id", max_len=64)
        slots = self._parse_slots(params)
        if self.screen is not Screen.APPOINTMENT or s.appointment_phase not in ("loading", "failed"):
            raise Conflict(f"no appointment request is waiting for slots (screen {self.screen.value})")
        if s.department is None or s.department.id != dep_id:
            raise Conflict(f"department_id {dep_id!r} is not the department the villager chose")
        s.slots, s.appointment_phase, s.waiting_since = slots, "slots", None
        self.notice = None
        return {"ok": True}, []

    def _need_booking(self, s: Session, params: dict[str, Any]) -> str:
        slot_id = _text(params, "slot_id", max_len=64)
        if (
            self.screen is not Screen.APPOINTMENT
            or s.appointment_phase not in ("booking", "failed")
            or s.chosen_slot is None
        ):
            raise Conflict(f"no booking is waiting for an answer (screen {self.screen.value})")
        if slot_id != s.chosen_slot:
            raise Conflict(f"slot_id {slot_id!r} is not the slot the villager asked for")
        return slot_id

    def _c_appointment_confirmed(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
        s = self.session_for(params)
        booking_no = _text(params, "booking_no", max_len=64)
        qr = _text(params, "qr_text", max_len=512, required=False)
        slot_id = self._need_booking(s, params)
        slot = next(sl for sl in s.slots if sl["slot_id"] == slot_id)
        s.booking = {"booking_no": booking_no, "slot": slot, "qr_text": qr or booking_no}
        s.appointment_phase, s.waiting_since = "booked", None
        self.notice = None
        assert s.department is not None
        return {"ok": True}, [
            Emit(
                "session.appointment.booked",
                {
                    "session_id": s.id,
                    "booking_no": booking_no,
                    "slot_id": slot_id,
                    "department_id": s.department.id,
                },
            )
        ]

    def _c_appointment_declined(self, params: dict[str, Any]) -> tuple[dict[str, Any], list[Effect]]:
        s = self.session_for(params)
        reason = _text(params, "reason", max_len=200)
        fresh = self._parse_slots(params) if "slots" in params else None
        slot_id = self._need_booking(s, params)
        s.slots = fresh if fresh is not None else [sl for sl in s.slots if sl["slot_id"] != slot_id]
        s.chosen_slot, s.appointment_phase, s.waiting_since = None, "declined", None
        self.notice = {"code": "slot_taken", "params": {"reason": reason}}
        return {"ok": True}, []

    # === queries for the service ======================================================================

    def document_meta(self, params: dict[str, Any]) -> tuple[str, Doc]:
        """(session id, checklist entry) for ``session.document.get``; 400/409 as the contract says."""
        s = self.session_for(params)
        doc_id = params.get("doc_id")
        if not isinstance(doc_id, str):
            raise BadRequest("doc_id: required string")
        doc = s.doc(doc_id)
        if doc is None:
            raise BadRequest(f"doc_id: {doc_id!r} is not on this session's checklist")
        if doc.image is None:
            raise Conflict(f"document {doc_id!r} has not been captured")
        return s.id, doc

    def stop(self) -> list[Effect]:
        """The service stops: end any session (reason ``restart``) and show ``unavailable``."""
        effects = self._end("restart") if self.session is not None else []
        self.technician = None
        self._go(Screen.UNAVAILABLE)
        return effects
