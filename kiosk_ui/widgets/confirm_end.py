"""The question before a destructive key: "确定结束吗？" with "1 继续办理" and "0 确定结束".

Ending the visit (or hanging up on the clerk) throws away what the villager did so far, so ``0``
asks first (``KioskScreen``): the overlay is mounted over the current screen, only its "0 确定结束"
sends ``end``, its "1 继续办理" (or touch) closes it, and while it shows the digits and buttons beneath
it do nothing.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical

from kiosk_ui.i18n import Catalog
from kiosk_ui.widgets.choice import UI_END_CONFIRMED, UI_END_KEEP, ChoiceButton
from kiosk_ui.widgets.plain import Plain


class ConfirmEnd(Vertical):
    def __init__(self, catalog: Catalog, *, question_key: str = "confirm_end.question") -> None:
        super().__init__(id="confirm-end")
        self.catalog = catalog
        self.question_key = question_key

    def compose(self) -> ComposeResult:
        yield Plain(self.catalog(self.question_key), id="confirm-end-question")
        with Horizontal(id="confirm-end-choices"):
            yield ChoiceButton("1", self.catalog("confirm_end.keep"), UI_END_KEEP, variant="success")
            yield ChoiceButton("0", self.catalog("confirm_end.end"), UI_END_CONFIRMED, variant="error")
