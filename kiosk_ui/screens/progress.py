"""``progress``: the villager's applications and their status, as answered by the platform."""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen, as_dict, as_list
from kiosk_ui.widgets.plain import Plain

SHOWN = 6


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
                status = str(app.get("status", ""))
                key = f"progress.status.{status}"
                status_text = self.t(key) if self.t.has(key) else status
                mark = self.t("progress.status_mark", status=status_text)
                line = f"{app.get('application_no', '')}  {self.view.pick(app.get('item_name'))}  {mark}"
                if app.get("updated_at"):
                    line += f"  {app['updated_at']}"
                if app.get("note"):
                    line += f"  {app['note']}"
                yield Plain(line, classes="detail application")
            if len(apps) > SHOWN:
                yield Plain(self.t("progress.more", count=len(apps) - SHOWN), classes="detail")
        yield from self.choice_area()
