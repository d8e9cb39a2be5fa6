"""``capture``: one document under the document camera: preview, capturing, review (keep or retake), failed.

The document's picture is the largest thing on the screen, the buttons in a column beside it:

- ``preview``: the document camera's live picture (``kiosk/local/media/doccam/preview``, via
  ``KioskApp.on_preview_arrived`` -> ``show_picture``), so the villager can place the paper; while no
  frame came for ``LIVE_STALE_S`` the area says the camera's picture is not there yet;
- ``capturing``: the last live frame stays (the paper being photographed);
- ``review``: the photo just taken (``kiosk/local/media/doccam/still``), shown only if its ``sha256``
  is the review state's ``image.sha256``, with its size in plain words beneath it. The checksum is not
  shown: it means nothing to a villager;
- ``failed``: no picture (the notice says why).

Pictures live only in this screen object: leaving the capture screen (accepting, going back, the session
ending) drops them, and a retake drops the photo.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical

from kiosk_ui.messages import Preview
from kiosk_ui.screens.base import KioskScreen, View, as_dict
from kiosk_ui.widgets.picture import Picture
from kiosk_ui.widgets.plain import Plain

# No live frame for this long: what the area shows is not the paper now.
LIVE_STALE_S = 2.0
LIVE_CHECK_S = 0.25


class CaptureScreen(KioskScreen):
    SCREEN = "capture"
    TITLE_KEY = "capture.title"
    # Tests may wind this clock; the kiosk uses the monotonic clock like the rest of the UI.
    clock: ClassVar[Callable[[], float]] = staticmethod(time.monotonic)

    def __init__(self, view: View) -> None:
        super().__init__(view)
        self._live: Preview | None = None
        self._live_at = self.clock()
        self._still: Preview | None = None

    # --- what the screen is showing ------------------------------------------------------------------

    @property
    def phase(self) -> str:
        return str(self.view.data.get("phase") or "preview")

    @property
    def _session_id(self) -> str | None:
        session_id = self.view.session.get("session_id")
        return session_id if isinstance(session_id, str) and session_id else None

    @property
    def live_session(self) -> str | None:
        """The session whose live document-camera frames this screen draws now (phase ``preview``)."""
        return self._session_id if self.phase == "preview" else None

    @property
    def still_session(self) -> str | None:
        """The session whose photo this screen waits for or shows (the still comes during ``capturing``,
        before the appliance has sealed it and says ``review``)."""
        return self._session_id if self.phase in ("capturing", "review") else None

    @property
    def review_sha256(self) -> str | None:
        sha = as_dict(self.view.data.get("image")).get("sha256")
        return sha if self.phase == "review" and isinstance(sha, str) else None

    async def show(self, view: View) -> bool:
        before = self.phase
        rebuilt = await super().show(view)
        if self.phase == "preview" and before != "preview":
            # A retake (or a failed shot retried): the old photo must not come back.
            self._still, self._live, self._live_at = None, None, self.clock()
        return rebuilt

    # --- layout ----------------------------------------------------------------------------------------

    def body(self) -> ComposeResult:
        data = self.view.data
        doc = as_dict(data.get("doc"))
        phase = self.phase
        yield Plain(
            self.t("capture.document", name=self.view.pick(doc.get("name"), str(doc.get("doc_id", "")))),
            classes="message",
            id="capture-doc",
        )
        if doc.get("note"):
            yield Plain(self.t("capture.note", note=doc["note"]), classes="detail", id="capture-note")
        with Horizontal(id="capture-main"):
            with Vertical(id="capture-view"):
                yield Plain(self.word("capture.phase", phase), id="capture-phase")
                yield self._picture()
                facts = self._facts()
                if facts:
                    yield Plain(facts, classes="detail center", id="capture-facts")
            with Vertical(id="capture-side"):
                yield from self.choice_area()

    def _facts(self) -> str:
        """Beneath the photo, in plain words: how big it is (no checksum, no file names)."""
        image = as_dict(self.view.data.get("image"))
        if self.phase != "review" or not image:
            return ""
        size = image.get("bytes")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            return ""
        return self.t("capture.picture.facts", size=f"{max(1, round(size / 1024))}")

    def _picture(self) -> Picture:
        picture = Picture(
            id="doc-picture", classes=f"phase-{self.phase if self.phase.isidentifier() else 'x'}"
        )
        self._draw(picture)
        return picture

    def _draw(self, picture: Picture) -> None:
        """Put what this phase shows into ``picture``."""
        phase = self.phase
        if phase == "review":
            still = self._still
            if still is not None and still.sha256 == self.review_sha256:
                picture.update_rgb(still.w, still.h, still.rgb)
            else:
                picture.clear(self.t("capture.picture.missing"))
        elif phase == "preview" or phase == "capturing":
            live = self._live
            if live is not None and (phase == "capturing" or not self._live_stale()):
                picture.update_rgb(live.w, live.h, live.rgb)
            else:
                picture.clear(self.t("capture.picture.waiting") if phase == "preview" else "")
        else:
            picture.clear("")

    # --- pictures from the bus -------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.set_interval(LIVE_CHECK_S, self._check_stale)

    def _live_stale(self) -> bool:
        return self.clock() - self._live_at > LIVE_STALE_S

    def show_picture(self, preview: Preview) -> None:
        """Take a live frame or a photo of this session, and draw it if this phase shows it."""
        if preview.kind == "doccam":
            if preview.session_id != self.live_session:
                return
            self._live, self._live_at = preview, self.clock()
        elif preview.kind == "still":
            if preview.session_id != self.still_session:
                return
            self._still = preview
        else:
            return
        for picture in self.query("#doc-picture").results(Picture):
            self._draw(picture)

    def _check_stale(self) -> None:
        if self.phase != "preview" or not self._live_stale():
            return
        for picture in self.query("#doc-picture").results(Picture):
            picture.clear(self.t("capture.picture.waiting"))
