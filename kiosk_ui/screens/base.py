"""What every kiosk screen shares: a header, numbered choices, the idle countdown, a hint line.

A screen is built from a ``View`` (the session state as it is now, the other retained states, the
message catalog) and keeps nothing the appliance should know: it renders and posts intents. The
session's ``actions`` list decides which buttons exist (docs/session.md §1.1): a screen turns the
entity-bound ones (``select_item``, ``capture``, ``book``, ...) into one button per entity and every
other listed action into a plain button, in the listed order.

Number keys (the whole map is the table in docs/ui.md): a villager learns them once, so an action has
the same digit on every screen that offers it (``FIXED_DIGITS``): ``0`` the way out (``end`` asks
first), ``1`` the main action (continue, confirm, shoot, accept, call the clerk, ...), ``2`` the other
answer (not me, retake), ``5`` progress, ``6`` appointment, ``7`` "more" (the next page), ``8`` back,
``9`` the language. A screen that offers two main actions keeps ``1`` for the one of the map and puts
the other, its way out, on ``0`` (``DIGITS``: ``rejected``'s 1 再次呼叫 and 0 结束并评价). Entities
(departments, items, documents, slots, stars, replies, peripherals) take the digits ``2``-``6`` that
no listed action holds, in order; they never take ``1``, so a double press of "continue" cannot pick
anything. When they do not fit, ``7`` pages through them. Paging is
presentation only and never reaches the appliance.

When new state arrives the app calls ``show(view)``; the screen rebuilds only if what it draws
(``signature``) changed, so heartbeats and countdown ticks cost nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import events, on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen

from kiosk_ui.i18n import Catalog
from kiosk_ui.messages import IntentRequested
from kiosk_ui.widgets.choice import (
    UI_CLOSE,
    UI_END_CONFIRMED,
    UI_END_KEEP,
    UI_PAGE_NEXT,
    ChoiceButton,
)
from kiosk_ui.widgets.confirm_end import ConfirmEnd
from kiosk_ui.widgets.countdown import IdleCountdown
from kiosk_ui.widgets.plain import Plain

# Keys with a fixed meaning on every screen, so a villager learns them once (docs/ui.md, "Number keys").
MAIN_DIGIT = "1"
MORE_DIGIT = "7"
FIXED_DIGITS: dict[str, str] = {
    # 0: the way out
    "end": "0",
    "technician_exit": "0",
    "skip": "0",  # leave the rating without one: the business is done, nothing to confirm
    # 1: the main action, the step forward
    "wake": MAIN_DIGIT,
    "confirm": MAIN_DIGIT,
    "shoot": MAIN_DIGIT,
    "accept": MAIN_DIGIT,
    "call": MAIN_DIGIT,  # 呼叫工作人员 (and "call again" after no answer)
    "continue": MAIN_DIGIT,
    "done": MAIN_DIGIT,
    "retry": MAIN_DIGIT,
    "reply": MAIN_DIGIT,  # the call screen: answer the clerk
    "technician_refresh": MAIN_DIGIT,
    "technician_end_session": MAIN_DIGIT,  # the PIN pad's confirm step: end the paused session, enter
    # 2: the other answer on a yes/no screen
    "not_me": "2",
    "retake": "2",
    # 5, 6: the two services besides the departments
    "progress": "5",
    "appointment": "6",
    # 7: the next page of entities
    UI_PAGE_NEXT: MORE_DIGIT,
    # 8: one step back
    "back": "8",
    "cancel_call": "8",  # leave the queue: back to the documents
    UI_CLOSE: "8",
    # 9: the other language
    "language": "9",
}
# Below this many rows (80x24) the screens are tight (kiosk.tcss "-short"): fewer entities a page.
SHORT_ROWS = 28
# Entities take these, in order, minus the digits the screen's listed actions hold.
ENTITY_DIGITS = "23456"
# The order of the action row: the keypad's, with the way out last.
ROW_ORDER = "1234567890"
# Fields republished without meaning a change on screen (heartbeats, countdown ticks).
VOLATILE = frozenset({"seq", "ts", "boot", "idle", "ref", "heartbeat_s"})
# Actions never drawn as buttons: activity only, or shown by the countdown overlay.
HIDDEN_ACTIONS = frozenset({"touch", "still_here"})
# Intents that throw the visit away: "0" asks "确定结束吗？" first and only "0 确定结束" sends them.
ASK_FIRST = frozenset({"end"})


@dataclass(frozen=True)
class Entity:
    """One button bound to a thing on screen: a department, an item, a document, a slot, a score."""

    label: str
    intent: str
    data: Mapping[str, Any] = field(default_factory=dict)
    classes: str = ""


@dataclass(frozen=True)
class View:
    """Everything a screen may draw."""

    session: Mapping[str, Any]
    catalog: Catalog
    states: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    reason: str = ""  # why the kiosk is unavailable (only for the unavailable screen)

    @property
    def screen(self) -> str:
        value = self.session.get("screen")
        return value if isinstance(value, str) else ""

    @property
    def data(self) -> Mapping[str, Any]:
        """The screen-specific ``view`` object of the state."""
        return as_dict(self.session.get("view"))

    @property
    def actions(self) -> list[str]:
        return [a for a in as_list(self.session.get("actions")) if isinstance(a, str)]

    @property
    def notice(self) -> Mapping[str, Any]:
        return as_dict(self.session.get("notice"))

    def state(self, name: str) -> Mapping[str, Any]:
        return self.states.get(name) or {}

    def pick(self, texts: Any, default: str = "") -> str:
        return self.catalog.pick(texts, default)


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def as_dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def freeze(value: Any) -> Any:
    """A hashable, comparable copy of JSON data (for signatures)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


class KioskScreen(Screen[None]):
    """Base of every screen. Subclasses set ``SCREEN``/``TITLE_KEY`` and write ``body()``."""

    SCREEN: ClassVar[str] = ""
    # No button is focused by itself: Enter on a numeric keypad must not press whatever came first.
    AUTO_FOCUS = ""
    TITLE_KEY: ClassVar[str] = "app.title"
    HINT_KEY: ClassVar[str] = "hint.choose"
    # Actions this screen draws itself as entity buttons (never as plain buttons).
    ENTITY_ACTIONS: ClassVar[frozenset[str]] = frozenset()
    #: How many entity buttons fit on the 30-row screen above the action row (None: only digits limit).
    MAX_ENTITIES: ClassVar[int | None] = None
    #: The same below 28 rows (80x24): two rows of the two-column grid above a two-row action row.
    SHORT_MAX_ENTITIES: ClassVar[int | None] = 4
    # Where a screen offers two actions of one key, the one that is this screen's way out instead
    # (``rejected``: 1 calls again, so 结束并评价 is its 0). Merged over ``FIXED_DIGITS``.
    DIGITS: ClassVar[Mapping[str, str]] = {}
    # Keys of ``view`` that change on every republish without changing what is drawn.
    VOLATILE_VIEW: ClassVar[frozenset[str]] = frozenset()
    # Attract-style screens: any key or touch (not only the buttons) starts a session.
    WAKE_ON_ANY_INPUT: ClassVar[bool] = False
    # Large print: the console's size puts one of these classes on the screen and kiosk.tcss grows the
    # buttons, messages and gaps with it (80x24 tight, 100x30 the design size, 160x45 large).
    VERTICAL_BREAKPOINTS = [(0, "-short"), (28, "-regular"), (40, "-tall")]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (90, "-regular-width"), (140, "-wide")]

    def __init__(self, view: View) -> None:
        super().__init__(classes=f"kiosk-screen screen-{self.SCREEN or 'none'}")
        self.view = view
        self.page = 0
        self._signature = self.signature(view)
        self._idle: int | None = None
        self._asking_end = False  # the "确定结束吗？" overlay shows
        self._end_confirmed = False  # the next ``end`` is the one the villager confirmed

    # --- what subclasses provide -------------------------------------------------------------------

    def body(self) -> ComposeResult:
        yield from ()

    def signature(self, view: View) -> Any:
        """The part of the view this screen draws; a change rebuilds the screen."""
        stable = {k: v for k, v in view.session.items() if k not in VOLATILE}
        stable["actions"] = [a for a in view.actions if a not in HIDDEN_ACTIONS]
        stable["view"] = {k: v for k, v in view.data.items() if k not in self.VOLATILE_VIEW}
        return (view.catalog.language, freeze(stable), view.reason)

    # --- shared frame ------------------------------------------------------------------------------

    @property
    def t(self) -> Catalog:
        return self.view.catalog

    def compose(self) -> ComposeResult:
        # Few widgets on purpose: mounting is what a screen change costs (about 1-3 ms per widget).
        yield Plain(self.header(), id="header")
        notice = self.notice_text()
        if notice:
            yield Plain(notice, id="notice", classes="warning")
        with Vertical(id="body"):
            yield from self.body()
        if self._asking_end:
            yield ConfirmEnd(self.t)
        if self._idle is not None:
            yield IdleCountdown(self.t, self._idle)
        yield Plain(self.t(self.HINT_KEY), id="hint")

    def header(self) -> Table:
        """Station name, screen title and who is identified, in one line of three columns."""
        grid = Table.grid(expand=True, padding=(0, 1))
        who = Text(self.identity_text())
        # Who is identified is never cut (the masked number is how the villager checks it is them);
        # the station name gives way first, then the title.
        grid.add_column(ratio=1, justify="left", no_wrap=True, overflow="ellipsis")
        grid.add_column(ratio=2, justify="center", no_wrap=True, overflow="ellipsis", style="bold yellow")
        if who:
            grid.add_column(justify="right", no_wrap=True, min_width=who.cell_len)
        else:
            grid.add_column(ratio=1, justify="right", no_wrap=True)
        site = self.site_name()
        if who and self.is_attached and self.app.size.width < 90:
            site = ""  # a narrow console: what the villager is doing and who they are come first
        grid.add_row(Text(site, style="bold"), Text(self.title_text()), who)
        return grid

    def site_name(self) -> str:
        site = self.view.data.get("site") if self.SCREEN == "attract" else None
        return site if isinstance(site, str) and site else self.t("app.station")

    def word(self, prefix: str, code: Any) -> str:
        """The catalog's words for a code sent by the appliance; an unknown code is shown as sent."""
        key = f"{prefix}.{code}"
        return self.t(key) if self.t.has(key) else str(code)

    def title_text(self) -> str:
        return self.t(self.TITLE_KEY)

    def identity_text(self) -> str:
        identity = as_dict(self.view.session.get("identity"))
        if identity.get("id_masked"):
            return f"{identity.get('name', '')} {identity['id_masked']}"
        return ""

    def notice_text(self) -> str:
        notice = self.view.notice
        code = notice.get("code")
        if not isinstance(code, str) or not code:
            return ""
        params = {k: v for k, v in as_dict(notice.get("params")).items()}
        if "name" in params:
            params["name"] = self.view.pick(params["name"], str(params["name"]))
        key = f"notice.{code}"
        return self.t(key, **params) if self.t.has(key) else code

    async def show(self, view: View) -> bool:
        """Take a newer view; rebuild only if what this screen draws changed. True if rebuilt."""
        signature = self.signature(view)
        self.view = view
        if self._asking_end and not ASK_FIRST.intersection(view.actions):
            self._asking_end = False  # nothing to end any more (the actions are in the signature)
        if signature == self._signature:
            return False
        self._signature = signature
        await self.recompose()
        return True

    def set_idle(self, countdown: int | None) -> None:
        """Show, update or hide the idle countdown overlay (mounted only while it is visible)."""
        self._idle = countdown
        shown = list(self.query(IdleCountdown))
        if countdown is None:
            for widget in shown:
                widget.remove()
        elif shown:
            shown[0].set_remaining(countdown)
        elif self.is_attached:
            self.mount(IdleCountdown(self.t, countdown), before="#hint")

    # --- choices -----------------------------------------------------------------------------------

    def action_label(self, action: str) -> str:
        return self.word("action", action)

    def action_data(self, action: str) -> dict[str, Any]:
        if action == "language":
            return {"lang": "en" if self.t.language == "zh-CN" else "zh-CN"}
        return {}

    def choices(
        self,
        entities: Sequence[Entity] = (),
        *,
        actions: Sequence[str] | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> tuple[list[ChoiceButton], list[ChoiceButton]]:
        """Numbered buttons for ``entities`` and for the other listed actions of this screen.

        Returns (entity buttons, action buttons). Actions take their ``FIXED_DIGITS``; ``extra`` are
        presentation-only (intent, label) pairs with a fixed digit too (``ui:close``). Entities take
        ``ENTITY_DIGITS`` not held by a listed action, in order, so a document keeps its digit while the
        list stays the same; if they do not fit, ``7`` pages through them.
        """
        listed = self.view.actions if actions is None else [a for a in actions if a in self.view.actions]
        # An action this UI has no words for (a newer appliance) cannot be offered meaningfully: skip it.
        actions = [
            a
            for a in listed
            if a not in HIDDEN_ACTIONS
            and a not in self.ENTITY_ACTIONS
            and isinstance(a, str)
            and self.t.has(f"action.{a}")
        ]
        plain: list[tuple[str, str, str, dict[str, Any]]] = []  # digit, intent, label, data
        taken: set[str] = set()
        for intent, label in [(a, self.action_label(a)) for a in actions] + list(extra):
            digit = self.DIGITS.get(intent, FIXED_DIGITS.get(intent))
            if digit is None:
                # A listed action without a key of its own (none today): the highest free entity digit,
                # so the entities keep theirs.
                digit = next((d for d in reversed(ENTITY_DIGITS) if d not in taken), None)
            if digit is None or digit in taken:  # two actions on one key: the contract never lists that
                continue
            taken.add(digit)
            data = self.action_data(intent) if intent in actions else {}
            plain.append((digit, intent, label, data))
        pool = [d for d in ENTITY_DIGITS if d not in taken]
        # Height, not only digits, limits a page: a button below the screen's edge cannot be seen or touched.
        per_page = len(pool) if self.MAX_ENTITIES is None else max(1, min(len(pool), self.MAX_ENTITIES))
        if self.SHORT_MAX_ENTITIES is not None and self.is_attached and self.app.size.height < SHORT_ROWS:
            per_page = max(1, min(per_page, self.SHORT_MAX_ENTITIES))
        shown: Sequence[Entity] = entities
        if pool and len(entities) > per_page:
            pages = -(-len(entities) // per_page)
            self.page %= pages
            shown = entities[self.page * per_page : (self.page + 1) * per_page]
            pages_text = self.t("choice.more", page=self.page + 1, pages=pages)
            plain.append((MORE_DIGIT, UI_PAGE_NEXT, pages_text, {}))
        elif not pool:
            shown = ()
        entity_buttons = [
            ChoiceButton(digit, e.label, e.intent, dict(e.data), classes=e.classes)
            for digit, e in zip(pool, shown, strict=False)
        ]
        action_buttons: list[ChoiceButton] = []
        for digit, intent, label, data in sorted(plain, key=lambda p: ROW_ORDER.index(p[0])):
            variant = {"0": "error", MAIN_DIGIT: "success"}.get(digit, "default")
            css = "paging" if intent == UI_PAGE_NEXT else f"action-{intent.replace(':', '-')}"
            action_buttons.append(ChoiceButton(digit, label, intent, data, variant=variant, classes=css))
        return entity_buttons, action_buttons

    def choice_area(
        self,
        entities: Sequence[Entity] = (),
        *,
        entity_class: str = "choices",
        actions: Sequence[str] | None = None,
    ) -> ComposeResult:
        """The usual layout: entity buttons in a grid, then a row of action buttons."""
        entity_buttons, action_buttons = self.choices(entities, actions=actions)
        if entity_buttons:
            with Vertical(classes=entity_class):
                yield from entity_buttons
        with Horizontal(classes="actions"):
            yield from action_buttons

    @on(IntentRequested)
    async def _page(self, event: IntentRequested) -> None:
        name = event.name
        if self._asking_end and name not in (UI_END_KEEP, UI_END_CONFIRMED):
            event.stop()  # a touch on a button under the question does nothing
            return
        if name == UI_PAGE_NEXT:
            event.stop()
            self.page += 1
            await self.recompose()
        elif name == UI_END_KEEP:
            event.stop()
            await self.ask_end(False)
        elif name == UI_END_CONFIRMED:
            event.stop()
            await self.ask_end(False)
            self._end_confirmed = True
            self.post_message(IntentRequested("end", {"screen": self.SCREEN}))
        elif name in ASK_FIRST and not self._end_confirmed:
            event.stop()
            await self.ask_end(True)
        else:
            self._end_confirmed = False
            # Every intent says which screen the person saw, so a stale double tap is ignored.
            event.data.setdefault("screen", self.SCREEN)

    @property
    def asking_end(self) -> bool:
        """True while "确定结束吗？" shows."""
        return self._asking_end

    async def ask_end(self, ask: bool) -> None:
        """Show or hide the "确定结束吗？" overlay (over the screen, which is not rebuilt)."""
        if ask == self._asking_end:
            return
        self._asking_end = ask
        if ask:
            await self.mount(ConfirmEnd(self.t), before="#hint")
        else:
            for widget in self.query(ConfirmEnd):
                await widget.remove()

    # --- number keys -------------------------------------------------------------------------------

    def choice_for(self, digit: str) -> ChoiceButton | None:
        """The button a digit presses: the overlay's only while one shows (the countdown first)."""
        scope: Any = self
        for overlay in (IdleCountdown, ConfirmEnd):
            shown = list(self.query(overlay))
            if shown:
                scope = shown[0]
                break
        for button in scope.query(ChoiceButton):
            if button.digit == digit and not button.disabled:
                return button
        return None

    @property
    def overlay_shown(self) -> bool:
        """The countdown or the "end?" question shows: digits are theirs alone."""
        return bool(self.query(IdleCountdown) or self.query(ConfirmEnd))

    def on_key(self, event: events.Key) -> None:
        if event.character and len(event.character) == 1 and event.character.isdigit():
            button = self.choice_for(event.character)
            if button is not None:
                event.stop()
                button.press()
                return
            if self.overlay_shown:
                event.stop()  # a digit the overlay does not use does nothing (and nothing beneath)
                return
        if self.WAKE_ON_ANY_INPUT:
            event.stop()
            self.wake()

    def on_click(self, event: events.Click) -> None:
        # Buttons stop their own clicks; this is a touch anywhere else on the screen.
        if self.WAKE_ON_ANY_INPUT:
            self.wake()

    def wake(self) -> None:
        if "wake" in self.view.actions:
            self.post_message(IntentRequested("wake", {}))


def lines(texts: Iterable[str]) -> str:
    return "\n".join(t for t in texts if t)
