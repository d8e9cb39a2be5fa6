"""``KioskApp``: the Textual face of the kiosk. It renders retained state and sends intents, nothing more.

Flow: the ``local-bus`` worker (``kiosk_ui.bus.BusLink``) posts ``StatesChanged``/``BusStatus``; the app
keeps the latest value of every retained state, asks ``kiosk_ui.router`` which screen the session state
calls for, and either switches to it or hands the current screen the new view. Screens post
``IntentRequested``; the app publishes it with a ``ref`` (echoed by the appliance, so intent -> screen
latency is measurable) and the ``screen`` the person saw (so a stale double tap is ignored).

The only thing decided here is whether the appliance can be reached at all (``router.availability``);
if not, "service briefly unavailable" shows until fresh state arrives, with no action from anyone.
"""

from __future__ import annotations

import gc
import itertools
import logging
import time
from typing import Any

from textual import events, on, work
from textual.app import App

from kiosk_ui import router
from kiosk_ui.bus import BusLink
from kiosk_ui.i18n import DEFAULT_LANGUAGE, LANGUAGES, Catalog
from kiosk_ui.messages import BusStatus, IntentRequested, PreviewArrived, StatesChanged
from kiosk_ui.screens.base import KioskScreen, View
from kiosk_ui.screens.call import CallScreen
from kiosk_ui.screens.capture import CaptureScreen
from kiosk_ui.screens.unavailable import UnavailableScreen

try:  # private to Textual: see release_dead_styles(); without it the kiosk only collects later
    from textual._styles_cache import StylesCache
except ImportError:  # pragma: no cover - a Textual that moved it
    StylesCache = None  # type: ignore[assignment,misc]

log = logging.getLogger("kiosk.ui")

# A villager tapping away must not flood the bus: activity is reported at most this often.
ACTIVITY_MIN_INTERVAL_S = 1.0
# Screens where a key or touch is not "activity" of a villager session.
NO_ACTIVITY_SCREENS = frozenset({"attract", "ended", "unavailable", "technician_pin", "technician"})
FRESHNESS_CHECK_S = 0.5


def release_dead_styles() -> None:
    """Drop Textual's memo of per-widget style caches after a screen change.

    ``StylesCache.get_inner_outer`` is an ``lru_cache`` keyed by the cache object itself, so it keeps up to
    1024 caches of widgets that no longer exist (with all their rendered lines). On a kiosk that changes
    screen all day the collector then walks hundreds of thousands of dead objects: full collections of
    100-300 ms measured (bench/ui_timing.py), which is a frozen screen for a villager. Clearing the memo
    lets them go; it refills in microseconds.
    """
    clear = getattr(getattr(StylesCache, "get_inner_outer", None), "cache_clear", None)
    if clear is not None:
        clear()


class KioskApp(App[None]):
    CSS_PATH = "kiosk.tcss"
    TITLE = "village kiosk"
    # No command palette on a public kiosk; ctrl+q stays for the technician with a keyboard.
    ENABLE_COMMAND_PALETTE = False

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        language: str = DEFAULT_LANGUAGE,
        freeze_gc: bool = False,
    ) -> None:
        """``freeze_gc``: after start-up, move everything alive into the collector's permanent generation
        (``gc.freeze``) so full collections only walk what screens allocate later. Meant for the kiosk
        process (``kiosk ui`` sets it); a test process running many apps should leave it off."""
        super().__init__()
        self.freeze_gc = freeze_gc
        self.link = BusLink(host, port)
        self.catalog = Catalog(language)
        self.states: dict[str, dict[str, Any]] = {}
        self.bus_connected = False
        self.state_seen_at: float | None = None  # monotonic receipt time of the last session state
        self.connected_at: float | None = None
        # (perf_counter, screen) each time a screen was switched to or rebuilt: for tests and the bench
        self.screen_log: list[tuple[float, str]] = []
        self.sent: dict[str, float] = {}  # ref -> perf_counter when the intent was sent
        self.latencies: list[tuple[str, float]] = []  # (intent ref, seconds until its state was shown)
        self._refs = itertools.count(1)
        self._last_activity = 0.0

    # --- lifecycle ---------------------------------------------------------------------------------

    async def on_mount(self) -> None:
        await self.push_screen(UnavailableScreen(self._view("connecting")))
        self._log_screen()
        self.run_bus()
        self.set_interval(FRESHNESS_CHECK_S, self._check_fresh)
        if self.freeze_gc:
            self.call_after_refresh(self._freeze_gc)

    def _freeze_gc(self) -> None:
        gc.collect()
        gc.freeze()

    @work(exclusive=True, group="bus", name="local-bus", exit_on_error=False)
    async def run_bus(self) -> None:
        await self.link.run(self)

    # --- from the bus ------------------------------------------------------------------------------

    async def on_states_changed(self, message: StatesChanged) -> None:
        for name, state in message.states.items():
            if state is None:
                self.states.pop(name, None)
            else:
                self.states[name] = state
        session = self.states.get(router.SESSION)
        if router.SESSION in message.states:
            self.state_seen_at = time.monotonic() if session is not None else None
            language = router.language_of(session or {})
            if language in LANGUAGES and language != self.catalog.language:
                self.catalog = Catalog(language)
        await self.render_states()
        ref = (session or {}).get("ref")
        if isinstance(ref, str) and ref in self.sent:
            self.latencies.append((ref, time.perf_counter() - self.sent.pop(ref)))
            del self.latencies[:-1000]

    async def on_bus_status(self, message: BusStatus) -> None:
        self.bus_connected = message.connected
        self.connected_at = time.monotonic() if message.connected else None
        if not message.connected:
            # What was retained may be stale by the time we are back: wait for the replay.
            self.state_seen_at = None
        await self.render_states()

    def on_preview_arrived(self, message: PreviewArrived) -> None:
        # The call screen draws the clerk's picture, the capture screen the document camera's; the bus
        # link already dropped pictures of any other session, the screen checks once more in case it
        # changed since the picture was queued.
        if self._shutting_down:
            return
        screen = self.screen
        if isinstance(screen, CallScreen) and message.preview.kind == "call":
            screen.show_preview(message.preview)
        elif isinstance(screen, CaptureScreen) and message.preview.kind in ("doccam", "still"):
            screen.show_picture(message.preview)

    @property
    def _shutting_down(self) -> bool:
        return not self.screen_stack or not self.is_running or self._closing

    async def _check_fresh(self) -> None:
        if self._shutting_down:
            return  # the timer fired while the app is being torn down
        reason = self.unavailable_reason()
        screen = self.screen
        if isinstance(screen, UnavailableScreen):
            if reason != screen.view.reason:
                await self.render_states()
        elif reason:
            await self.render_states()

    # --- rendering ---------------------------------------------------------------------------------

    def unavailable_reason(self) -> str:
        return router.availability(
            self.states.get(router.SESSION),
            bus_connected=self.bus_connected,
            connected_at=self.connected_at,
            state_seen_at=self.state_seen_at,
            now=time.monotonic(),
        )

    def _view(self, reason: str = "") -> View:
        return View(
            session=self.states.get(router.SESSION) or {},
            catalog=self.catalog,
            states=dict(self.states),
            reason=reason,
        )

    @property
    def screen_name(self) -> str:
        """The contract name of the screen showing now ("" before the first one or while closing)."""
        if not self.screen_stack:
            return ""
        screen = self.screen
        return screen.SCREEN if isinstance(screen, KioskScreen) else ""

    async def render_states(self) -> None:
        """Show the screen the current states call for (switching only if it is another screen)."""
        if self._shutting_down:
            return  # a late state must not touch a screen stack being torn down
        reason = self.unavailable_reason()
        session = self.states.get(router.SESSION) or {}
        screen_cls = UnavailableScreen if reason else router.SCREENS[router.screen_of(session)]
        view = self._view(reason)
        current = self.screen
        if type(current) is screen_cls and isinstance(current, KioskScreen):
            if await current.show(view):
                self._log_screen()
        else:
            current = screen_cls(view)
            await self.switch_screen(current)
            self._log_screen()
        current.set_idle(None if reason else router.idle_countdown(session))
        # Which call's preview frames are worth parsing now (None: the bus link drops them unread).
        self.link.preview_session = current.preview_session if isinstance(current, CallScreen) else None
        capture = current if isinstance(current, CaptureScreen) else None
        self.link.doccam_session = capture.live_session if capture else None
        self.link.still_session = capture.still_session if capture else None

    def _log_screen(self) -> None:
        self.screen_log.append((time.perf_counter(), self.screen_name))
        del self.screen_log[:-1000]
        release_dead_styles()
        if self.freeze_gc:
            # Collect the old screen's garbage right after the new one is painted, while the villager
            # reads, instead of in a full collection in the middle of a later screen change.
            self.call_after_refresh(gc.collect)

    # --- to the bus --------------------------------------------------------------------------------

    @on(IntentRequested)
    def _send_intent(self, message: IntentRequested) -> None:
        if not message.name.startswith("ui:"):
            self.send_intent(message.name, message.data)

    def send_intent(self, name: str, data: dict[str, Any] | None = None) -> str:
        """Publish an intent with a fresh ``ref``; returns the ref."""
        ref = f"ui-{next(self._refs)}"
        body = {**(data or {}), "ref": ref}
        body.setdefault("screen", self.screen_name)
        if self.link.send_intent(name, body):
            self.sent[ref] = time.perf_counter()
            if len(self.sent) > 1000:
                self.sent.pop(next(iter(self.sent)))
        return ref

    async def on_event(self, event: events.Event) -> None:
        # Seen here before any screen consumes it: every key or touch is presence at the kiosk.
        if isinstance(event, events.Key | events.MouseDown):
            self._activity()
        await super().on_event(event)

    def _activity(self) -> None:
        """Restart the appliance's idle timer (``still_here`` while the countdown shows, else ``touch``)."""
        if self.screen_name in NO_ACTIVITY_SCREENS or self.unavailable_reason():
            return
        session = self.states.get(router.SESSION) or {}
        now = time.monotonic()
        if router.idle_countdown(session) is not None and "still_here" in (session.get("actions") or ()):
            self._last_activity = now
            self.send_intent("still_here", {})
        elif now - self._last_activity >= ACTIVITY_MIN_INTERVAL_S:
            self._last_activity = now
            self.send_intent("touch", {})
