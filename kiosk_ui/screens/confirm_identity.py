"""``confirm_identity``: the name and the masked number read from the card; "is this you?"."""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen, as_dict
from kiosk_ui.widgets.plain import Plain


class ConfirmIdentityScreen(KioskScreen):
    SCREEN = "confirm_identity"
    TITLE_KEY = "confirm.title"

    def body(self) -> ComposeResult:
        identity = as_dict(self.view.session.get("identity"))
        yield Plain(self.t("confirm.question"), classes="message")
        yield Plain(str(identity.get("name", "")), classes="big-message", id="identity-name")
        yield Plain(
            self.t("confirm.number", number=identity.get("id_masked", "")),
            classes="message center",
            id="identity-number",
        )
        yield from self.choice_area()
