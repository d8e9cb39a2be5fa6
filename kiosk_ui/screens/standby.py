""" "Standby": the room's other terminal serves the villagers (terminal failover, docs/session.md §10).

No choices: this terminal acts on nothing until it takes the room over, which it does by itself. The
screen says so calmly, for whoever looks at it (the room's TV shows the active terminal).
"""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen
from kiosk_ui.widgets.plain import Plain


class StandbyScreen(KioskScreen):
    SCREEN = "standby"
    TITLE_KEY = "standby.title"
    HINT_KEY = "standby.hint"

    def body(self) -> ComposeResult:
        yield Plain(self.t("standby.message"), classes="big-message")
        yield Plain(self.t("standby.detail"), classes="message center")
