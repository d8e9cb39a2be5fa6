"""``rejected``: the clerk did not accept the application, and says why."""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen, as_dict
from kiosk_ui.widgets.plain import Plain


class RejectedScreen(KioskScreen):
    SCREEN = "rejected"
    TITLE_KEY = "rejected.title"

    def body(self) -> ComposeResult:
        data = self.view.data
        clerk = as_dict(data.get("clerk"))
        yield Plain(self.view.pick(as_dict(data.get("item")).get("name")), classes="message")
        yield Plain(self.t("rejected.not_accepted"), classes="big-message")
        yield Plain(
            self.t("rejected.reason", name=clerk.get("name", ""), reason=data.get("reason", "")),
            classes="message",
            id="reject-reason",
        )
        yield from self.choice_area()
