"""``technician_pin``: the PIN pad shown after the help button was held >= 3 s.

The digits are collected here only to mask them on screen; the whole PIN goes to the appliance in one
``technician_pin`` intent and the appliance decides. It is sent by itself once it has ``view.digits``
digits, or by ✓ / Enter. ← / Backspace deletes; ✗ / Escape, and Backspace on an empty PIN, leave
(``technician_exit``); the screen says so, and that a short press of the help button and
``view.leave_s`` seconds untouched (the appliance's timers) leave too. On this screen the number keys
type the PIN.

When a villager's session is paused under the pad (``view.session_running``) the screen says it is
kept; after the right PIN (``view.phase`` ``confirm_end``) it asks the technician to confirm ending it:
1 = ``technician_end_session``, 0 = ``technician_exit`` (back to the villager's screen).
"""

from __future__ import annotations

from typing import Any

from textual import events, on
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Button

from kiosk_ui.messages import IntentRequested
from kiosk_ui.screens.base import KioskScreen, View
from kiosk_ui.widgets.plain import Plain

MAX_PIN = 12


class PinKey(Button):
    def __init__(self, key: str, label: str, **kw: Any) -> None:
        super().__init__(label, **kw)
        self.key = key


class TechnicianPinScreen(KioskScreen):
    SCREEN = "technician_pin"
    TITLE_KEY = "pin.title"
    HINT_KEY = "pin.hint"
    ENTITY_ACTIONS = frozenset({"technician_pin"})

    def __init__(self, view: View) -> None:
        super().__init__(view)
        self.entered = ""

    @property
    def digits(self) -> int | None:
        digits = self.view.data.get("digits")
        return digits if isinstance(digits, int) and 0 < digits <= MAX_PIN else None

    @property
    def accepting(self) -> bool:
        return "technician_pin" in self.view.actions

    @property
    def confirming(self) -> bool:
        return self.view.data.get("phase") == "confirm_end"

    def body(self) -> ComposeResult:
        if self.confirming:
            yield Plain(self.t("pin.session_running"), classes="big-message", id="pin-session")
            yield Plain(self.t("pin.confirm_end"), classes="message")
            yield from self.choice_area(actions=["technician_end_session", "technician_exit"])
            return
        locked = self.view.data.get("locked_s")
        if isinstance(locked, int | float) and locked > 0:
            yield Plain(self.t("pin.locked", seconds=int(locked)), classes="big-message", id="pin-locked")
        else:
            yield Plain(self.t("pin.prompt"), classes="message")
            yield Plain(self._masked(), id="pin-display", classes="big-message")
        with Horizontal(id="pin-area"):
            with Grid(id="pin-pad"):
                for digit in "123456789":
                    yield PinKey(digit, digit, id=f"pin-{digit}", disabled=not self.accepting)
                yield PinKey("back", self.t("pin.delete"), id="pin-back", disabled=not self.accepting)
                yield PinKey("0", "0", id="pin-0", disabled=not self.accepting)
                yield PinKey(
                    "ok", self.t("pin.submit"), id="pin-ok", variant="success", disabled=not self.accepting
                )
            with Vertical(id="pin-side"):
                yield Button(self.t("pin.cancel"), id="pin-cancel", variant="error")
                yield Plain(self.t("pin.leave"), classes="detail", id="pin-leave")
                leave_s = self.view.data.get("leave_s")
                if isinstance(leave_s, int) and not isinstance(leave_s, bool) and leave_s > 0:
                    yield Plain(self.t("pin.leave_after", seconds=leave_s), classes="detail")
                if self.view.data.get("session_running") is True:
                    yield Plain(self.t("pin.session_kept"), classes="detail", id="pin-session")

    def action_label(self, action: str) -> str:
        if action == "technician_exit" and self.confirming:
            return self.t("pin.back_to_villager")
        return super().action_label(action)

    def _masked(self) -> str:
        slots = self.digits or max(len(self.entered), 4)
        return " ".join(["●"] * len(self.entered) + ["_"] * max(0, slots - len(self.entered)))

    def _refresh_display(self) -> None:
        for display in self.query("#pin-display").results(Plain):
            display.update(self._masked())

    def type_key(self, key: str) -> None:
        if key == "back" and not self.entered:  # Backspace on an empty PIN: the way out a keypad has
            self.leave()
            return
        if not self.accepting:
            return
        if key == "back":
            self.entered = self.entered[:-1]
        elif key == "ok":
            self.submit()
            return
        elif key.isdigit() and len(self.entered) < MAX_PIN:
            self.entered += key
            if self.digits is not None and len(self.entered) >= self.digits:
                self.submit()
                return
        self._refresh_display()

    def submit(self) -> None:
        if self.entered:
            pin, self.entered = self.entered, ""
            self._refresh_display()
            self.post_message(IntentRequested("technician_pin", {"pin": pin}))

    def leave(self) -> None:
        self.entered = ""
        self.post_message(IntentRequested("technician_exit", {}))

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if isinstance(event.button, PinKey):
            self.type_key(event.button.key)
        elif event.button.id == "pin-cancel":
            self.leave()

    def on_key(self, event: events.Key) -> None:
        if self.confirming:  # no PIN to type: the number keys choose, as on every other screen
            super().on_key(event)
            return
        if event.character and len(event.character) == 1 and event.character.isdigit():
            key = event.character
        elif event.key in ("backspace", "enter"):
            key = "back" if event.key == "backspace" else "ok"
        elif event.key == "escape":
            event.stop()
            self.leave()
            return
        else:
            return
        event.stop()
        self.type_key(key)
