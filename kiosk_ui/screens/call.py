"""``call``: connected to a clerk: who, their messages, the documents they asked for."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical

from kiosk_ui.screens.base import Entity, KioskScreen, as_dict, as_list
from kiosk_ui.screens.documents import document_label
from kiosk_ui.widgets.plain import Plain

SHOWN_MESSAGES = 6


class CallScreen(KioskScreen):
    SCREEN = "call"
    TITLE_KEY = "call.title"
    ENTITY_ACTIONS = frozenset({"capture"})

    def body(self) -> ComposeResult:
        data = self.view.data
        clerk = as_dict(data.get("clerk"))
        dept = as_dict(clerk.get("department"))
        yield Plain(
            self.t(
                "call.connected",
                name=clerk.get("name", ""),
                department=self.view.pick(dept.get("name"), str(dept.get("id", ""))),
            ),
            classes="message",
            id="clerk",
        )
        requested = [as_dict(d) for d in as_list(data.get("requested_documents"))]
        entities = [
            Entity(document_label(self.view, d), "capture", {"doc_id": d.get("doc_id")})
            for d in requested
            if d.get("status") != "captured" and "capture" in self.view.actions
        ]
        entity_buttons, action_buttons = self.choices(entities)
        with Horizontal(id="call-columns"):
            with Vertical(id="call-messages"):
                yield Plain(self.t("call.messages"), classes="section")
                messages = [as_dict(m) for m in as_list(data.get("messages"))][-SHOWN_MESSAGES:]
                if not messages:
                    yield Plain(self.t("call.no_messages"), classes="detail")
                for m in messages:
                    who = (
                        self.t("call.from.clerk") if m.get("from") == "clerk" else self.t("call.from.system")
                    )
                    yield Plain(f"{who}: {m.get('text', '')}", classes="detail chat")
            with Vertical(id="call-docs"):
                if requested:
                    yield Plain(self.t("call.requested"), classes="section")
                for d in requested:
                    if d.get("status") == "captured":
                        yield Plain(document_label(self.view, d), classes="detail")
                yield from entity_buttons
        with Horizontal(classes="actions"):
            yield from action_buttons
