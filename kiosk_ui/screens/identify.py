"""``identify``: "place your ID card on the reader" (for an application, a progress lookup or a booking)."""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen, as_dict
from kiosk_ui.widgets.plain import Plain


class IdentifyScreen(KioskScreen):
    SCREEN = "identify"
    TITLE_KEY = "identify.title"

    def body(self) -> ComposeResult:
        data = self.view.data
        item = as_dict(data.get("item")) or as_dict(data.get("department"))
        nxt = str(data.get("next") or "documents")
        if not self.t.has(f"identify.for.{nxt}"):
            nxt = "documents"
        if item:
            yield Plain(
                self.t(f"identify.for.{nxt}", name=self.view.pick(item.get("name"))), classes="message"
            )
        else:
            yield Plain(self.t(f"identify.for.{nxt}", name=""), classes="message")
        yield Plain(self.t("identify.place_card"), classes="big-message")
        yield Plain(self.t("identify.privacy"), classes="detail")
        yield from self.choice_area()
