"""``rejected``: the clerk did not accept the application, says why, and the villager's next steps."""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen, as_dict
from kiosk_ui.widgets.plain import Plain

# The rejected screen's words for its actions: what each does next, not the generic labels.
LABELS = {
    "call": "action.call_again",
    "appointment": "action.book_instead",
    "continue": "action.rejected_continue",
}


class RejectedScreen(KioskScreen):
    SCREEN = "rejected"
    TITLE_KEY = "rejected.title"
    # 1 再次呼叫 (call, as everywhere) and 6 预约窗口办理 (appointment) take their keys of the map; 结束并评价
    # (continue, to the rating) is this screen's way out, so 0: nothing is lost, so it asks nothing.
    DIGITS = {"continue": "0"}

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
        if {"call", "appointment"} & set(self.view.actions):
            yield Plain(self.t("rejected.next"), classes="message", id="reject-next")
        yield from self.choice_area()

    def action_label(self, action: str) -> str:
        key = LABELS.get(action)
        return self.t(key) if key and self.t.has(key) else super().action_label(action)
