""" "Service briefly unavailable": the appliance said so, or it is stale, or the local bus is gone.

No choices: nothing pressed here could be delivered. The screen says the kiosk recovers by itself and,
in small print for a technician, why.
"""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen, View
from kiosk_ui.widgets.plain import Plain


class UnavailableScreen(KioskScreen):
    SCREEN = "unavailable"
    TITLE_KEY = "unavailable.title"
    HINT_KEY = "unavailable.hint"

    def body(self) -> ComposeResult:
        yield Plain(self.t("unavailable.message"), classes="big-message")
        yield Plain(self.t("unavailable.recovering"), classes="message center")
        reason = self.view.reason or str(self.view.data.get("reason") or "")
        if reason:
            key = f"unavailable.reason.{reason}"
            yield Plain(
                self.t(key) if self.t.has(key) else f"({reason})", classes="detail center", id="reason"
            )

    def signature(self, view: View) -> object:
        return (view.catalog.language, view.reason, str(view.data.get("reason") or ""))
