"""``ended``: the session is over and its personal data already wiped; back to ``attract`` shortly.

It reminds the villager to take the ID card and the papers (louder while the card is still on the
reader: ``view.card_on_reader``), and after a restart cut a visit short (reason ``restart``) it says
so, so the villager knows to start again.
"""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen
from kiosk_ui.widgets.plain import Plain


class EndedScreen(KioskScreen):
    WAKE_ON_ANY_INPUT = True
    SCREEN = "ended"
    TITLE_KEY = "ended.title"

    def body(self) -> ComposeResult:
        data = self.view.data
        reason = str(data.get("reason") or "completed")
        if reason == "completed" and data.get("outcome") == "rejected":
            reason = "not_accepted"  # not "本次办理已完成" after the clerk said no
        if reason == "restart":
            yield Plain(self.t("ended.restarted"), classes="big-message", id="ended-restarted")
        else:
            yield Plain(self.t("ended.thanks"), classes="big-message")
            yield Plain(self.word("ended.reason", reason), classes="message center", id="ended-reason")
            if data.get("card_on_reader") is True:
                yield Plain(self.t("ended.take_card"), classes="big-message warning", id="ended-take-card")
                yield Plain(self.t("ended.card_still_on_reader"), classes="message center warning")
            else:
                yield Plain(self.t("ended.take_card"), classes="message center", id="ended-take-card")
        yield Plain(self.t("ended.wiped"), classes="detail center")
        yield from self.choice_area()
