"""``attract``: nobody is using the kiosk. A touch, any key or the presence sensor starts a session."""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen
from kiosk_ui.widgets.plain import Plain


class AttractScreen(KioskScreen):
    WAKE_ON_ANY_INPUT = True
    SCREEN = "attract"
    TITLE_KEY = "attract.title"
    HINT_KEY = "attract.hint"

    def body(self) -> ComposeResult:
        yield Plain(self.t("attract.welcome"), classes="big-message")
        yield Plain(self.t("attract.what"), classes="message center")
        yield from self.choice_area()
