"""Technician mode, entered by holding the help button: the PIN, then status and self-tests.

Screens: ``technician_pin`` (locked for ``pin_lockout_s`` after ``pin_attempts`` wrong PINs) and
``technician``. Any villager session is ended first; idle for ``technician_idle_s`` leaves the mode.
"""

from __future__ import annotations

import math
from collections.abc import Container
from typing import TYPE_CHECKING, Any

from appliance import __version__
from appliance.session.effects import Effect, Emit, RefreshTechnician, RunSelfTest
from appliance.session.errors import IntentRejected
from appliance.session.flows import IntentHandler
from appliance.session.state import Screen

if TYPE_CHECKING:
    from appliance.session.machine import SessionMachine


def pin_view(m: SessionMachine) -> dict[str, Any]:
    locked = None
    if m.pin_locked_until is not None:
        locked = max(1, math.ceil(m.pin_locked_until - m.clock.monotonic()))
    return {"digits": m.config.pin_digits, "attempts_left": m.pin_attempts_left, "locked_s": locked}


def pin_offers(m: SessionMachine) -> Container[str]:
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


# --- intents -----------------------------------------------------------------------------------------


def technician_pin(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    t = m.technician
    assert t is not None
    pin = body.get("pin")
    if not isinstance(pin, str) or not pin.isascii() or not pin.isdigit() or not 4 <= len(pin) <= 12:
        raise IntentRejected("technician_pin: pin must be 4..12 digits")
    if m._check_pin(pin, m.config.technician_pin_hash):
        m.pin_attempts_left = m.config.pin_attempts
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


def technician_exit(m: SessionMachine, body: dict[str, Any]) -> list[Effect]:
    entered = m.screen is Screen.TECHNICIAN
    m._to_attract()
    return [Emit("session.technician.exited", {"reason": "exit"})] if entered else []


INTENTS: dict[str, IntentHandler] = {
    "technician_pin": technician_pin,
    "technician_test": technician_test,
    "technician_refresh": technician_refresh,
    "technician_exit": technician_exit,
}
