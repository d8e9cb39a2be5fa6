"""``card_removed``: the ID card left the reader mid-session: put it back to continue, or end."""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen
from kiosk_ui.widgets.plain import Plain


class CardRemovedScreen(KioskScreen):
    SCREEN = "card_removed"
    TITLE_KEY = "card_removed.title"

    def body(self) -> ComposeResult:
        yield Plain(self.t("card_removed.put_back"), classes="big-message")
        yield Plain(self.t("card_removed.or_end"), classes="message center")
        yield from self.choice_area()
