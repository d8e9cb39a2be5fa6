"""``call_waiting``: the call to the clerk is queued: position and estimated wait, or nobody answered."""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen
from kiosk_ui.widgets.plain import Plain


class CallWaitingScreen(KioskScreen):
    SCREEN = "call_waiting"
    TITLE_KEY = "call_waiting.title"
    VOLATILE_VIEW = frozenset({"waited_s"})  # ticks with every republish; not drawn

    def body(self) -> ComposeResult:
        data = self.view.data
        status = str(data.get("status") or "requesting")
        yield Plain(self.word("call_waiting.status", status), classes="big-message", id="call-status")
        if status == "queued":
            position, wait = data.get("position"), data.get("estimated_wait_s")
            if isinstance(position, int):
                yield Plain(
                    self.t("call_waiting.position", position=position),
                    classes="message center",
                    id="call-position",
                )
            if isinstance(wait, int | float):
                minutes = max(1, round(wait / 60))
                yield Plain(self.t("call_waiting.estimate", minutes=minutes), classes="message center")
        yield from self.choice_area()
