"""The idle countdown overlay: "无人操作，12 秒后自动结束".

The appliance owns the timer and republishes the state every second while the warning is visible
(``idle.countdown``, docs/session.md §1.3); this widget only shows the number it was given. The screen
mounts it only while the warning is on (``KioskScreen.set_idle``). Any key or touch anywhere tells the
appliance the villager is still here (``KioskApp`` sends ``still_here``); the button ("1 我还在") is the
obvious target for it. While the overlay shows, digits act on it only (``KioskScreen.choice_for``): a
key pressed to say "I am here" must not also capture a document under the overlay.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal

from kiosk_ui.i18n import Catalog
from kiosk_ui.widgets.choice import UI_STILL_HERE, ChoiceButton
from kiosk_ui.widgets.plain import Plain

STILL_HERE_DIGIT = "1"  # the main-action digit: "go on"


class IdleCountdown(Horizontal):
    def __init__(self, catalog: Catalog, countdown: int, *, id: str | None = "idle-countdown") -> None:
        super().__init__(id=id)
        self.catalog = catalog
        self.countdown = countdown

    def compose(self) -> ComposeResult:
        yield Plain(self._text(), id="idle-text")
        # The intent is presentation only: the key or touch that pressed it was already sent as
        # ``still_here`` by the app (exactly once, whatever the villager pressed).
        yield ChoiceButton(
            STILL_HERE_DIGIT,
            self.catalog("action.still_here"),
            UI_STILL_HERE,
            id="still-here",
            variant="warning",
        )

    def _text(self) -> str:
        return self.catalog("idle.countdown", seconds=self.countdown)

    def set_remaining(self, countdown: int) -> None:
        """Show ``countdown`` seconds left."""
        self.countdown = countdown
        if self.is_mounted:
            self.query_one("#idle-text", Plain).update(self._text())
