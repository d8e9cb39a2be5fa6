"""Which screen the session state calls for, and whether the appliance can be reached at all.

Pure functions over the retained states (no I/O), following docs/session.md §1: the state's ``screen``
names the screen; "service briefly unavailable" shows when the bus is down, when no state arrived for
``3 × heartbeat_s`` (by the UI's own monotonic clock), or when the state itself says ``unavailable``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kiosk_ui.screens.appointment import AppointmentScreen
from kiosk_ui.screens.attract import AttractScreen
from kiosk_ui.screens.base import KioskScreen
from kiosk_ui.screens.call import CallScreen
from kiosk_ui.screens.call_waiting import CallWaitingScreen
from kiosk_ui.screens.capture import CaptureScreen
from kiosk_ui.screens.card_removed import CardRemovedScreen
from kiosk_ui.screens.catalog import CatalogScreen
from kiosk_ui.screens.confirm_identity import ConfirmIdentityScreen
from kiosk_ui.screens.documents import DocumentsScreen
from kiosk_ui.screens.ended import EndedScreen
from kiosk_ui.screens.identify import IdentifyScreen
from kiosk_ui.screens.progress import ProgressScreen
from kiosk_ui.screens.rating import RatingScreen
from kiosk_ui.screens.receipt import ReceiptScreen
from kiosk_ui.screens.rejected import RejectedScreen
from kiosk_ui.screens.standby import StandbyScreen
from kiosk_ui.screens.technician import TechnicianScreen
from kiosk_ui.screens.technician_pin import TechnicianPinScreen
from kiosk_ui.screens.unavailable import UnavailableScreen

SESSION = "session"  # kiosk/local/state/session
SCHEMA_VERSION = 1
DEFAULT_HEARTBEAT_S = 5.0
STALE_HEARTBEATS = 3  # no state for 3 x heartbeat_s: the appliance is gone
# Before any state: how long "connecting" may last before it is called a missing appliance.
FIRST_STATE_WAIT_S = 3 * DEFAULT_HEARTBEAT_S

SCREENS: dict[str, type[KioskScreen]] = {
    cls.SCREEN: cls
    for cls in (
        AttractScreen,
        CatalogScreen,
        IdentifyScreen,
        ConfirmIdentityScreen,
        CardRemovedScreen,
        DocumentsScreen,
        CaptureScreen,
        CallWaitingScreen,
        CallScreen,
        ReceiptScreen,
        RejectedScreen,
        RatingScreen,
        ProgressScreen,
        AppointmentScreen,
        EndedScreen,
        TechnicianPinScreen,
        TechnicianScreen,
        UnavailableScreen,
        StandbyScreen,
    )
}


def screen_of(session: Mapping[str, Any]) -> str:
    screen = session.get("screen")
    return screen if isinstance(screen, str) else ""


def heartbeat_of(session: Mapping[str, Any]) -> float:
    beat = session.get("heartbeat_s")
    if isinstance(beat, int | float) and not isinstance(beat, bool) and 0 < beat <= 3600:
        return float(beat)
    return DEFAULT_HEARTBEAT_S


def language_of(session: Mapping[str, Any]) -> str:
    lang = session.get("lang")
    return lang if isinstance(lang, str) else ""


def idle_countdown(session: Mapping[str, Any]) -> int | None:
    """Seconds left while the appliance wants the idle warning visible, else None."""
    idle = session.get("idle")
    if isinstance(idle, Mapping):
        left = idle.get("countdown")
        if isinstance(left, int) and not isinstance(left, bool):
            return max(0, left)
    return None


def availability(
    session: Mapping[str, Any] | None,
    *,
    bus_connected: bool,
    connected_at: float | None,
    state_seen_at: float | None,
    now: float,
) -> str:
    """ "" when the state can be rendered, else why the kiosk shows "service briefly unavailable"."""
    if not bus_connected:
        return "bus"
    if session is None or state_seen_at is None:
        if connected_at is not None and now - connected_at > FIRST_STATE_WAIT_S:
            return "no_state"
        return "connecting"
    if now - state_seen_at > STALE_HEARTBEATS * heartbeat_of(session):
        return "stale"
    if session.get("v") != SCHEMA_VERSION:
        return "version"
    screen = screen_of(session)
    if screen == "unavailable":
        return "appliance"
    if screen not in SCREENS:
        return "unknown_screen"
    return ""
