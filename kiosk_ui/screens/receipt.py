"""``receipt``: the clerk accepted the application: its number, large, and a QR code to check progress."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical

from kiosk_ui.qr import QrError, qr_text
from kiosk_ui.screens.base import KioskScreen, as_dict
from kiosk_ui.widgets.plain import Plain


class ReceiptScreen(KioskScreen):
    SCREEN = "receipt"
    TITLE_KEY = "receipt.title"

    def body(self) -> ComposeResult:
        data = self.view.data
        with Horizontal(id="receipt"):
            try:
                yield Plain(qr_text(str(data.get("qr_text") or "")), id="qr")
            except QrError:
                yield Plain(self.t("receipt.no_qr"), id="qr", classes="detail")
            with Vertical():
                item = as_dict(data.get("item"))
                yield Plain(self.view.pick(item.get("name")), classes="message")
                yield Plain(self.t("receipt.number"), classes="detail")
                yield Plain(str(data.get("application_no", "")), classes="big-message", id="application-no")
                if data.get("note"):
                    yield Plain(str(data["note"]), classes="message")
                yield Plain(self.t("receipt.scan"), classes="detail")
                if as_dict(data.get("print")).get("status") == "failed":
                    yield Plain(self.t("print.failed"), classes="message", id="print-failed")
                yield from self.choice_area()
