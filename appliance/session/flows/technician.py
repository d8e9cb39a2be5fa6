"""Technician mode, entered by holding the help button: the PIN, then status and self-tests.

Screens: ``technician_pin`` (locked for ``pin_lockout_s`` after ``pin_attempts`` wrong PINs) and
``technician``. A villager's running session is never ended by the hold alone: it stays paused under
the PIN pad, and only the right PIN *and* the explicit ``technician_end_session`` end it. Leaving the
PIN pad (``technician_exit``, a short press of the help button, or ``pin_idle_s`` untouched) goes back
to the screen it was opened from. Idle for ``technician_idle_s`` on ``technician`` leaves the mode.
"""

from __future__ import annotations

import math
from collections.abc import Container
from typing import TYPE_CHECKING, Any

from appliance import __version__
from appliance.session.effects import Effect, Emit, RefreshTechnician, RunSelfTest
from appliance.session.errors import IntentRejected
from appliance.session.flows import IntentHandler
from appliance.session.state import Screen, Technician

# How long "staff have been notified" stays over a screen (so the idle kiosk does not say it for hours).
HELP_NOTICE_S = 60.0

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine


def pin_view(m: SessionMachine) -> dict[str, Any]:
    locked = None
    if m.pin_locked_until is not None:
        locked = max(1, math.ceil(m.pin_locked_until - m.clock.monotonic()))
    t = m.technician
    return {
        "digits": m.config.pin_digits,
        "attempts_left": m.pin_attempts_left,
        "locked_s": locked,
        "session_running": m.session is not None,
        "phase": "confirm_end" if t is not None and t.confirm_end else "pin",
        "leave_s": math.ceil(m.config.pin_idle_s),
    }


def pin_offers(m: SessionMachine) -> Container[str]:
    t = m.technician
    if t is not None and t.confirm_end:
        return {"technician_end_session", "technician_exit"}
    return {"technician_exit"} if m.pin_locked_until is not None else {"technician_pin", "technician_exit"}


# Parts of the appliance in its health map that are not devices a technician plugs in or tests.
NOT_PERIPHERALS = frozenset({"session", "fleet", "bus", "local_bus", "outbox", "ota", "media"})


def technician_view(m: SessionMachine) -> dict[str, Any]:
    """What the technician screen shows: the device (with its firmware version), the peripherals (not
    the appliance's own parts such as the session), the network, the clock's sync state when the
    status has it (``clock: {"synced": bool}``), the test results and the factory-PIN warning."""
    t = m.technician
    status = t.status if t else {}
    device = dict(status.get("device") or {})
    device.setdefault("firmware", __version__)
    peripherals = [
        p
        for p in status.get("peripherals", [])
        if not (isinstance(p, dict) and p.get("name") in NOT_PERIPHERALS)
    ]
    view = {
        "device": device,
        "peripherals": peripherals,
        "network": status.get("network", {}),
        "tests": dict(t.tests) if t else {},
        "pin_is_default": m.pin_is_default,
    }
    if isinstance(status.get("clock"), dict):
        view["clock"] = status["clock"]
    return view


# --- entry and exit ----------------------------------------------------------------------------------


def enter(m: SessionMachine) -> list[Effect]:
    """The help button was held: the PIN pad, over a villager's session that stays paused (not ended)."""
    if m.screen in (Screen.TECHNICIAN_PIN, Screen.TECHNICIAN, Screen.UNAVAILABLE):
        return []
    returns_to = m.screen if m.session is not None else None
    m.technician = Technician(
        attempts_left=m.pin_attempts_left, last_input=m.clock.monotonic(), returns_to=returns_to
    )
    m._go(Screen.TECHNICIAN_PIN)
    return []


def leave_pin(m: SessionMachine) -> list[Effect]:
    """Off the PIN pad, back to where it was opened: the villager's paused screen, or ``attract``."""
    t = m.technician
    s = m.session
    if s is None or t is None or t.returns_to is None:
        m._to_attract()
        return []
    m.technician = None
    screen = t.returns_to
    if screen is Screen.CAPTURE and s.capture is not None and s.capture.phase == "capturing":
        # The camera's answer came while paused and was dropped as stale: shoot again.
        s.capture.phase = "preview"
    m._go(screen)
    now = m.clock.monotonic()
    m.last_activity = now  # the paused minutes do not count against the villager's idle time
    s.idle_warned = False
    guard = m._spec.card_guard
    if not s.card_present and s.identity_confirmed and guard is not None:
        return guard(m, s)  # the card was taken away while paused
    return []


def help_pressed(m: SessionMachine) -> list[Effect]:
    """A short press of the help button: leaves the PIN pad; elsewhere says staff were called (the
    press itself reaches the platform as the gpio driver's ``button.help.pressed`` event)."""
    if m.screen is Screen.TECHNICIAN_PIN:
        return leave_pin(m)
    if m.screen in (Screen.TECHNICIAN, Screen.UNAVAILABLE):
        return []
    m.notice = {"code": "help_requested", "params": {}}
    m.help_notice_until = m.clock.monotonic() + HELP_NOTICE_S
    if m.session is not None:
        m.last_activity = m.clock.monotonic()
        m.session.idle_warned = False
    return []


def pin_idle(m: SessionMachine) -> list[Effect]:
    """``pin_idle_s`` without input on the PIN pad (not in technician mode yet): back where it was."""
    return leave_pin(m)


# --- intents -----------------------------------------------------------------------------------------


def technician_pin(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    t = m.technician
    assert t is not None
    pin = body.get("pin")
    if not isinstance(pin, str) or not pin.isascii() or not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise IntentRejected("technician_pin: pin must be 4..12 digits")
    if m._check_pin(pin, m.config.technician_pin_hash):
        m.pin_attempts_left = m.config.pin_attempts
        if m.session is not None:
            # A villager's session is paused under the pad: ending it needs the technician's confirm.
            t.confirm_end = True
            m.notice = None
            return []
        m._go(Screen.TECHNICIAN)
        return [Emit("session.technician.entered", {}), RefreshTechnician()]
    m.pin_attempts_left -= 1
    t.attempts_left = m.pin_attempts_left
    if m.pin_attempts_left <= 0:
        m.pin_locked_until = m.clock.monotonic() + m.config.pin_lockout_s
        m.notice = {"code": "pin_locked", "params": {}}
        return [Emit("session.technician.locked", {"lockout_s": m.config.pin_lockout_s})]
    m.notice = {"code": "wrong_pin", "params": {"attempts_left": m.pin_attempts_left}}
    return [Emit("session.technician.pin_failed", {"attempts_left": m.pin_attempts_left})]


def technician_test(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    t = m.technician
    assert t is not None
    name = body.get("peripheral")
    known = {p.get("name") for p in t.status.get("peripherals", []) if isinstance(p, dict)}
    if not isinstance(name, str) or name not in known:
        raise IntentRejected(f"technician_test: unknown peripheral {name!r}")
    t.tests[name] = {"status": "running", "detail": "", "ts": m.clock.time()}
    return [RunSelfTest(name)]


def technician_refresh(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    return [RefreshTechnician()]


def technician_end_session(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    """The technician confirmed (after the right PIN): end the paused villager session, then enter."""
    t = m.technician
    assert t is not None and t.confirm_end
    effects = m._end("technician")
    t.confirm_end, t.returns_to = False, None
    m._go(Screen.TECHNICIAN)
    return [*effects, Emit("session.technician.entered", {}), RefreshTechnician()]


def technician_exit(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    if m.screen is Screen.TECHNICIAN_PIN:
        return leave_pin(m)
    m._to_attract()
    return [Emit("session.technician.exited", {"reason": "exit"})]


INTENTS: dict[str, IntentHandler] = {
    "technician_pin": technician_pin,
    "technician_test": technician_test,
    "technician_refresh": technician_refresh,
    "technician_exit": technician_exit,
    "technician_end_session": technician_end_session,
}
