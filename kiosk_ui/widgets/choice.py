"""A numbered choice: the digit is drawn beside the label and pressing it (key or touch) sends an intent.

Every action on every screen is a ``ChoiceButton``, so "usable by touch and by number keys alone"
holds by construction: ``KioskScreen`` maps a digit key to the button carrying that digit.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Button

from kiosk_ui.messages import IntentRequested

# Handled inside the screen (presentation only), never sent to the appliance.
UI_PAGE_NEXT = "ui:page_next"
UI_CLOSE = "ui:close"  # close a sub-menu (the call's replies)
UI_END_KEEP = "ui:end_keep"  # "1 继续办理" on the "end?" question
UI_END_CONFIRMED = "ui:end_confirmed"  # "0 确定结束": only this sends ``end``
UI_STILL_HERE = "ui:still_here"  # the countdown's button: the key or touch itself already said so


class ChoiceButton(Button):
    """A touch target with its number key. ``intent`` is sent with ``data`` when pressed."""

    def __init__(
        self,
        digit: str,
        label: str,
        intent: str,
        data: dict[str, Any] | None = None,
        *,
        variant: str = "default",
        id: str | None = None,
        classes: str = "",
        disabled: bool = False,
    ) -> None:
        if len(digit) != 1 or not digit.isdigit():
            raise ValueError(f"a choice needs one digit key, got {digit!r}")
        text = Text.assemble((f" {digit} ", "bold reverse"), " ", label)
        super().__init__(
            text,
            variant=variant,
            id=id,
            classes=f"choice {classes}".strip(),  # type: ignore[arg-type]
            disabled=disabled,
        )
        self.digit = digit
        self.choice_label = label
        self.intent = intent
        self.data = dict(data or {})

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.post_message(IntentRequested(self.intent, dict(self.data)))
