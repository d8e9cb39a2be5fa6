"""``capture``: one document under the document camera: preview, capturing, review (keep or retake), failed."""

from __future__ import annotations

from textual.app import ComposeResult

from kiosk_ui.screens.base import KioskScreen, as_dict
from kiosk_ui.widgets.plain import Plain


class CaptureScreen(KioskScreen):
    SCREEN = "capture"
    TITLE_KEY = "capture.title"

    def body(self) -> ComposeResult:
        data = self.view.data
        doc = as_dict(data.get("doc"))
        phase = str(data.get("phase") or "preview")
        yield Plain(
            self.t("capture.document", name=self.view.pick(doc.get("name"), str(doc.get("doc_id", "")))),
            classes="message",
        )
        if doc.get("note"):
            yield Plain(self.t("capture.note", note=doc["note"]), classes="detail")
        yield Plain(self.word("capture.phase", phase), classes="big-message", id="capture-phase")
        image = as_dict(data.get("image"))
        if phase == "review" and image:
            size_kb = int(image.get("bytes") or 0) / 1024
            digest = str(image.get("sha256") or "")[:12]
            yield Plain(
                self.t("capture.image", size=f"{size_kb:.0f}", digest=digest), classes="detail center"
            )
        yield from self.choice_area()
