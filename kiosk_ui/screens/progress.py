"""``progress``: the villager's applications and their status, as answered by the platform."""

from __future__ import annotations

import re
from typing import Any

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen, as_dict, as_list
from kiosk_ui.widgets.plain import Plain

SHOWN = 6


# Punctuation a clerk's note is split at, to drop the parts that only repeat the status word.
NOTE_PARTS = re.compile(r"[，,。.;；、]+")


class ProgressScreen(KioskScreen):
    SCREEN = "progress"
    TITLE_KEY = "progress.title"

    def body(self) -> ComposeResult:
        data = self.view.data
        phase = str(data.get("phase") or "loading")
        if phase != "result":
            yield Plain(self.word("progress.phase", phase), classes="big-message", id="progress-phase")
        else:
            apps = [as_dict(a) for a in as_list(data.get("applications"))]
            if not apps:
                yield Plain(self.t("progress.none"), classes="big-message", id="progress-phase")
            else:
                yield Plain(self.t("progress.count", count=len(apps)), classes="message", id="progress-phase")
            for app in apps[:SHOWN]:
                name = self.view.pick(app.get("item_name"))
                mark = self.t("progress.status_mark", status=self.status_text(app))
                yield Plain(f"{app.get('application_no', '')}  {name}  {mark}", classes="detail application")
                facts = self.facts(app)
                if facts:
                    yield Plain("    " + facts, classes="detail application-facts")
            if len(apps) > SHOWN:
                yield Plain(self.t("progress.more", count=len(apps) - SHOWN), classes="detail")
        yield from self.choice_area()

    def status_text(self, app: dict[str, Any]) -> str:
        status = str(app.get("status", ""))
        return self.word("progress.status", status)

    def facts(self, app: dict[str, Any]) -> str:
        """The line under an application: each date with its label, then the note without the parts
        that only repeat the status (no "已办结" under 【已办结】)."""
        facts = []
        if app.get("submitted_at"):
            facts.append(self.t("progress.submitted_at", date=app["submitted_at"]))
        if app.get("updated_at"):
            facts.append(self.t("progress.updated_at", date=app["updated_at"]))
        status = self.status_text(app)
        parts = [p.strip() for p in NOTE_PARTS.split(str(app.get("note") or "")) if p.strip()]
        kept = [p for p in parts if p != status]
        if kept:
            facts.append(("，" if self.t.language == "zh-CN" else ", ").join(kept))
        return "  ".join(facts)
