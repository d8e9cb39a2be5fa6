"""``documents``: the checklist of the chosen item; a button per document to capture (or retake) it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from textual.app import ComposeResult

from kiosk_ui.screens.base import Entity, KioskScreen, View, as_dict, as_list
from kiosk_ui.widgets.plain import Plain


def document_label(view: View, doc: Mapping[str, Any]) -> str:
    t = view.catalog
    name = view.pick(doc.get("name"), str(doc.get("doc_id", "?")))
    status = t("doc.captured") if doc.get("status") == "captured" else t("doc.missing")
    flags = [t("doc.required") if doc.get("required") else t("doc.optional")]
    if doc.get("requested_by_clerk"):
        flags.append(t("doc.requested"))
    return f"{name}  {status}  {t('doc.flags', flags=t('list.comma').join(flags))}"


class DocumentsScreen(KioskScreen):
    SCREEN = "documents"
    TITLE_KEY = "documents.title"
    ENTITY_ACTIONS = frozenset({"capture"})
    # One-column document buttons are 3 rows high: four leave room for the actions at 100x30.
    MAX_ENTITIES = 4

    def title_text(self) -> str:
        return self.view.pick(as_dict(self.view.data.get("item")).get("name"), self.t("documents.title"))

    def body(self) -> ComposeResult:
        data = self.view.data
        checklist = [as_dict(d) for d in as_list(data.get("checklist"))]
        yield Plain(
            self.t("documents.complete" if data.get("complete") else "documents.instructions"),
            classes="message",
            id="documents-status",
        )
        entities = []
        if "capture" in self.view.actions:
            entities = [
                Entity(
                    document_label(self.view, d),
                    "capture",
                    {"doc_id": d.get("doc_id")},
                    classes="doc-captured" if d.get("status") == "captured" else "doc-missing",
                )
                for d in checklist
            ]
        else:
            for d in checklist:
                yield Plain(document_label(self.view, d), classes="detail")
        yield from self.choice_area(entities, entity_class="choices one-column")
