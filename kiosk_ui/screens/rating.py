"""``rating`` (满意度评价): a score from 1 to 5, then an optional reason.

The score is held here between the two steps (it is the villager's form, like a typed PIN); the
appliance receives one ``rate`` intent with both.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult

from kiosk_ui.messages import IntentRequested
from kiosk_ui.screens.base import Entity, KioskScreen, View, as_list
from kiosk_ui.widgets.plain import Plain

UI_SCORE = "ui:score"
STARS = "★"


class RatingScreen(KioskScreen):
    SCREEN = "rating"
    TITLE_KEY = "rating.title"
    ENTITY_ACTIONS = frozenset({"rate"})
    # Three rows of two 4-row buttons leave room for the action row at 100x30.
    MAX_ENTITIES = 6
    SHORT_MAX_ENTITIES = 5  # five stars on one page at 80x24 too (the action row is one row here)

    def __init__(self, view: View) -> None:
        super().__init__(view)
        self.score: int | None = None

    def body(self) -> ComposeResult:
        data = self.view.data
        if "rate" not in self.view.actions:
            yield from self.choice_area()
            return
        if self.score is None:
            yield Plain(self.t("rating.question"), classes="message")
            scores = [s for s in as_list(data.get("scores")) if isinstance(s, int)] or [1, 2, 3, 4, 5]
            entities = [
                Entity(f"{STARS * s}  {self.t(f'rating.score.{s}')}", UI_SCORE, {"score": s}) for s in scores
            ]
            yield from self.choice_area(entities)
            return
        yield Plain(self.t("rating.chosen", stars=STARS * self.score), classes="message", id="rating-chosen")
        yield Plain(self.t("rating.why"), classes="message")
        # "No reason" first: it is always on the first page, whatever the number of reasons.
        entities = [Entity(self.t("rating.no_reason"), "rate", {"score": self.score, "reason": None})]
        entities += [
            Entity(self.word("rating.reason", code), "rate", {"score": self.score, "reason": code})
            for code in as_list(data.get("reasons"))
            if isinstance(code, str)
        ]
        # The score is chosen: the reasons get every number key; "skip" is no longer on offer.
        yield from self.choice_area(entities, actions=["language"])

    @on(IntentRequested)
    async def _score(self, event: IntentRequested) -> None:
        if event.name == UI_SCORE:
            event.stop()
            self.score = int(event.data["score"])
            await self.recompose()
