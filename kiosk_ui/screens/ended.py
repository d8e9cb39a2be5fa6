"""``ended``: the session is over and its personal data already wiped; back to ``attract`` shortly."""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen
from kiosk_ui.widgets.plain import Plain


class EndedScreen(KioskScreen):
    WAKE_ON_ANY_INPUT = True
    SCREEN = "ended"
    TITLE_KEY = "ended.title"

    def body(self) -> ComposeResult:
        reason = str(self.view.data.get("reason") or "completed")
        if reason == "completed" and self.view.data.get("outcome") == "rejected":
            reason = "not_accepted"  # not "本次办理已完成" after the clerk said no
        yield Plain(self.t("ended.thanks"), classes="big-message")
        yield Plain(self.word("ended.reason", reason), classes="message center", id="ended-reason")
        yield Plain(self.t("ended.wiped"), classes="detail center")
        yield from self.choice_area()
