"""``call``: connected to a clerk: their picture and voice, their messages, the documents they asked for.

``view.media`` (docs/ui.md, *The call screen*) says what the call's media is doing; null means the
platform gave this call no media and the screen is the text-only call it always was. Only ``state``
chooses the words: ``reason`` is the media process's technical English for the technician and the logs,
never for the villager.

The clerk's picture comes as preview frames on the local bus (``kiosk/local/media/call/preview``, via
``KioskApp.on_preview_arrived`` -> ``show_preview``), shown while ``media.state`` is ``connected`` and
``clerk_video`` is true; a frame that is more than ``PREVIEW_STALE_S`` old gives way to "picture paused".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll

from kiosk_ui.messages import IntentRequested, Preview
from kiosk_ui.screens.base import Entity, KioskScreen, View, as_dict, as_list, freeze
from kiosk_ui.screens.documents import document_label
from kiosk_ui.widgets.choice import UI_CLOSE
from kiosk_ui.widgets.picture import Picture
from kiosk_ui.widgets.plain import Plain

# Who a message line is from (``messages[].from``): the clerk, the kiosk itself, or the villager's reply.
FROM = frozenset({"clerk", "system", "villager"})
MEDIA_STATES = frozenset({"connecting", "connected", "reconnecting", "audio_only", "failed"})
# No frame for this long: the picture on screen is not the clerk now, so say it is paused.
PREVIEW_STALE_S = 2.0
PREVIEW_CHECK_S = 0.25
# Rows the video layout needs besides the requested-document buttons (header, notice, hint, the action
# row, the clerk's name and a few lines of messages); each document button is 4 rows high.
_ROWS_WITHOUT_DOCUMENTS = 22
_DOCUMENT_BUTTON_ROWS = 4


def media_of(view: View) -> Mapping[str, Any] | None:
    """The call's ``view.media`` object, or None for a text-only call (also for a value that is not an
    object: a newer or broken producer must not take the text channel down)."""
    media = view.data.get("media")
    return media if isinstance(media, Mapping) else None


class _MessageList(VerticalScroll):
    """The clerk's messages, kept scrolled to the newest (a villager cannot scroll a kiosk)."""

    def on_mount(self) -> None:
        # After the first layout, when the content's height is known; short content stays at the top
        # (anchor() would push it to the bottom, a gap under the heading that reads as "nothing here").
        # force: overflow is hidden (no scroll bar to poke at on a kiosk), which scroll_end would respect.
        self.call_after_refresh(self.scroll_end, animate=False, immediate=True, force=True)


class CallScreen(KioskScreen):
    SCREEN = "call"
    TITLE_KEY = "call.title"
    ENTITY_ACTIONS = frozenset({"capture"})
    # Rows of a requested-document button in the text call (labels may wrap on two lines).
    MAX_ENTITIES = 3
    # Tests may wind this clock; the kiosk uses the monotonic clock like the rest of the UI.
    clock: ClassVar[Callable[[], float]] = staticmethod(time.monotonic)

    def __init__(self, view: View) -> None:
        super().__init__(view)
        self._frame: Preview | None = None
        # When the picture last was the clerk now: the newest frame's arrival, or when the screen began
        # waiting for frames (a first frame has PREVIEW_STALE_S to come before "paused" shows).
        self._frame_at = self.clock()
        # "1 回复工作人员" opened the replies (presentation only, like paging).
        self.replying = False

    # --- what is drawn -----------------------------------------------------------------------------

    # media is compared without its reason (signature below).
    VOLATILE_VIEW = frozenset({"media"})

    def signature(self, view: View) -> Any:
        # media.reason is for technicians: a new reason alone must not rebuild the villager's screen.
        media = media_of(view)
        shown = None if media is None else {k: v for k, v in media.items() if k != "reason"}
        return (super().signature(view), freeze(shown))

    @property
    def media(self) -> Mapping[str, Any] | None:
        return media_of(self.view)

    @property
    def media_state(self) -> str:
        """``media.state`` if it is one this UI knows, else "" (a newer media process: no words, and
        never a CSS class made from whatever the bus sent)."""
        media = self.media
        state = media.get("state") if media is not None else None
        return state if isinstance(state, str) and state in MEDIA_STATES else ""

    @property
    def shows_picture(self) -> bool:
        media = self.media
        return media is not None and self.media_state == "connected" and media.get("clerk_video") is True

    @property
    def preview_session(self) -> str | None:
        """The session whose preview frames this screen draws now, or None (no picture showing)."""
        session_id = self.view.session.get("session_id")
        return session_id if self.shows_picture and isinstance(session_id, str) else None

    async def show(self, view: View) -> bool:
        was_showing = self.shows_picture
        rebuilt = await super().show(view)
        if self.shows_picture and not was_showing:
            self._frame, self._frame_at = None, self.clock()  # back from reconnecting: wait afresh
        return rebuilt

    def body(self) -> ComposeResult:
        if self.media is None:
            yield from self._text_call()
        else:
            yield from self._video_call()

    def _clerk_line(self) -> Plain:
        clerk = as_dict(self.view.data.get("clerk"))
        dept = as_dict(clerk.get("department"))
        return Plain(
            self.t(
                "call.connected",
                name=clerk.get("name", ""),
                department=self.view.pick(dept.get("name"), str(dept.get("id", ""))),
            ),
            classes="message",
            id="clerk",
        )

    def _requested(self) -> list[Mapping[str, Any]]:
        return [as_dict(d) for d in as_list(self.view.data.get("requested_documents"))]

    def _message_lines(self, messages: list[Mapping[str, Any]], key: str = "call.message") -> list[str]:
        """One line per message, ``who：text`` (the catalog's ``key`` format with ``who``, ``text``)."""
        lines = []
        for m in messages:
            who = (
                self.t(f"call.from.{m.get('from')}") if m.get("from") in FROM else self.t("call.from.system")
            )
            text = str(m.get("text", ""))
            reply = f"call.reply.{m.get('code')}"
            if m.get("from") == "villager" and self.t.has(reply):
                text = self.t(reply)  # the villager's own words in the language of the screen
            lines.append(self.t(key, who=who, text=text))
        return lines

    def _document_entities(self, label: Callable[[Mapping[str, Any]], str]) -> list[Entity]:
        """A button per requested document, captured ones too (to take again): a document keeps its
        digit while the clerk's list stays the same, however many photos were taken since."""
        if "capture" not in self.view.actions:
            return []
        return [
            Entity(
                label(d),
                "capture",
                {"doc_id": d.get("doc_id")},
                classes="doc-captured" if d.get("status") == "captured" else "doc-missing",
            )
            for d in self._requested()
        ]

    def _replies(self) -> list[Entity]:
        """The fixed answers the appliance accepts now (``view.replies``) that this UI has words for."""
        codes = [c for c in as_list(self.view.data.get("replies")) if isinstance(c, str)]
        return [
            Entity(self.t(f"call.reply.{c}"), "reply", {"code": c}, classes="reply")
            for c in codes
            if self.t.has(f"call.reply.{c}")
        ]

    def _choices(self, documents: list[Entity]) -> tuple[list[Any], list[Any]]:
        """The side column's buttons and the action row: the documents, or the replies when open."""
        replies = self._replies() if "reply" in self.view.actions else []
        if self.replying and replies:
            # The replies go in the action row, full width (the side column is too narrow for four
            # big buttons at 80x24); they are few, so no paging.
            limit, self.MAX_ENTITIES = self.MAX_ENTITIES, None
            try:
                return self.choices(
                    replies, actions=["end", "language"], extra=[(UI_CLOSE, self.t("ui.close"))]
                )
            finally:
                self.MAX_ENTITIES = limit
        return self.choices(documents, actions=[a for a in self.view.actions if a != "reply" or replies])

    def _messages(self) -> ComposeResult:
        """The messages, oldest first, kept scrolled to the newest (a villager cannot scroll)."""
        messages = [as_dict(m) for m in as_list(self.view.data.get("messages"))]
        # "工作人员：您好…" with no space: text wraps at spaces only, so a space after the colon
        # would push a whole Chinese sentence onto the next row, a row a narrow column lacks.
        lines = self._message_lines(messages) or [self.t("call.no_messages")]
        with _MessageList(id="call-message-list"):
            yield Plain("\n".join(lines), classes="detail chat")

    def _replying(self, entity_buttons: list[Any]) -> bool:
        return self.replying and bool(entity_buttons) and entity_buttons[0].intent == "reply"

    def _action_row(self, entity_buttons: list[Any], action_buttons: list[Any]) -> ComposeResult:
        """The action row; while the replies are open they come first in it, full width."""
        replying = self._replying(entity_buttons)
        with Horizontal(classes="actions replies" if replying else "actions"):
            if replying:
                yield from entity_buttons
            yield from action_buttons

    def _side_buttons(self, entity_buttons: list[Any]) -> ComposeResult:
        if self._replying(entity_buttons):
            yield Plain(self.t("call.reply.title"), classes="section", id="call-reply-title")
            return
        requested = self._requested()
        if not requested:
            return
        with Vertical(id="call-docs"):
            yield Plain(self.t("call.requested"), classes="section")
            if entity_buttons:
                yield from entity_buttons
            else:  # nothing to capture now: the documents as one line (rows beside a picture are few)
                names = [self.view.pick(d.get("name"), str(d.get("doc_id", "?"))) for d in requested]
                comma = "、" if self.t.language == "zh-CN" else ", "
                yield Plain(f"{comma.join(names)}  {self.t('doc.captured')}", classes="detail")

    def _text_call(self) -> ComposeResult:
        """The call without media: the clerk's name, the messages, the documents asked for."""
        yield self._clerk_line()
        entity_buttons, action_buttons = self._choices(
            self._document_entities(lambda d: document_label(self.view, d))
        )
        with Horizontal(id="call-columns"):
            with Vertical(id="call-messages"):
                yield Plain(self.t("call.messages"), classes="section")
                yield from self._messages()
            with Vertical(id="call-side-text"):
                yield from self._side_buttons(entity_buttons)
        yield from self._action_row(entity_buttons, action_buttons)

    def _video_call(self) -> ComposeResult:
        """The clerk's picture (or what the video is doing) as the largest thing, the rest beside it."""
        state = self.media_state
        # Height limits how many document buttons fit beside the picture; the rest page with "more".
        # (An instance value of the class's knob: the kiosk's console size is fixed while it runs.)
        self.MAX_ENTITIES = max(1, (self.app.size.height - _ROWS_WITHOUT_DOCUMENTS) // _DOCUMENT_BUTTON_ROWS)
        # Short labels: every document here was asked for by the clerk, and the side column is narrow.
        entity_buttons, action_buttons = self._choices(self._document_entities(self._document_name))
        with Horizontal(id="call-main", classes=f"media-{state or 'unknown'}"):
            if state != "failed":  # failed: a text-only call, the messages take the whole width
                with Vertical(id="call-video"):
                    yield self._picture(state)
                    status = self._status_text(state)
                    if status:
                        yield Plain(status, id="media-status", classes=f"media-{state}")
                    yield Plain(self._devices_text(), id="media-devices")
                    if self.media is not None and self.media.get("mic") is False:
                        yield Plain(self.t("call.media.no_mic"), id="media-no-mic")
            with Vertical(id="call-side"):
                yield self._clerk_line()
                if state == "failed":
                    yield Plain(self.t("call.media.failed"), id="media-status", classes="media-failed")
                yield Plain(self.t("call.messages"), classes="section")
                yield from self._messages()
                yield from self._side_buttons(entity_buttons)
        yield from self._action_row(entity_buttons, action_buttons)

    @on(IntentRequested)
    async def _reply_menu(self, event: IntentRequested) -> None:
        """``reply`` without a code opens the replies; ``8`` closes them; a chosen reply closes them too."""
        if self.asking_end:
            return  # the base class drops it
        if event.name == "reply" and "code" not in event.data:
            event.stop()
            self.replying, self.page = True, 0
            await self.recompose()
        elif event.name == UI_CLOSE:
            event.stop()
            self.replying, self.page = False, 0
            await self.recompose()
        elif event.name == "reply":
            self.replying, self.page = False, 0
            self.call_after_refresh(self.recompose)

    def _document_name(self, doc: Mapping[str, Any]) -> str:
        name = self.view.pick(doc.get("name"), str(doc.get("doc_id", "?")))
        status = self.t("doc.captured") if doc.get("status") == "captured" else self.t("doc.missing")
        return f"{name}  {status}"

    def _picture(self, state: str) -> Picture:
        """The big area: the clerk's picture when there is one, else the state's words in it."""
        placeholder = {
            "connecting": self.t("call.media.connecting"),
            "reconnecting": self.t("call.media.reconnecting"),
            "audio_only": self.t("call.media.audio_only"),
        }.get(state, "")
        if state == "connected":
            # Before the first frame the area stays dark; "paused" only once frames stopped coming
            # (or the clerk sends no video at all).
            placeholder = "" if self.shows_picture and not self._stale() else self.t("call.media.paused")
        picture = Picture(placeholder, id="clerk-picture", classes=f"media-{state or 'unknown'}")
        if self.shows_picture and self._frame is not None and not self._stale():
            # A rebuild (new message, new document) keeps the last frame instead of flashing dark.
            picture.update_rgb(self._frame.w, self._frame.h, self._frame.rgb)
        return picture

    def _status_text(self, state: str) -> str:
        """The line under the picture: what the villager should do (the picture area says the rest)."""
        if state in ("connected", "audio_only"):
            return self.t("call.media.speak")
        return ""

    def _devices_text(self) -> Text:
        media = self.media or {}
        text = Text()
        for i, (device, key) in enumerate((("mic", "call.media.mic"), ("speaker", "call.media.speaker"))):
            if i:
                text.append("   ")
            on = media.get(device) is True
            text.append(self.t(f"{key}.{'on' if on else 'off'}"), style="bold green" if on else "bold red")
        return text

    # --- the clerk's picture -------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.set_interval(PREVIEW_CHECK_S, self._check_stale)

    def _stale(self) -> bool:
        return self.clock() - self._frame_at > PREVIEW_STALE_S

    def show_preview(self, preview: Preview) -> None:
        """Draw a preview frame if it belongs to the call shown and a picture is showing."""
        if preview.session_id != self.preview_session:
            return
        self._frame, self._frame_at = preview, self.clock()
        for picture in self.query("#clerk-picture").results(Picture):
            picture.update_rgb(preview.w, preview.h, preview.rgb)

    def _check_stale(self) -> None:
        if not self.shows_picture or not self._stale():
            return
        paused = self.t("call.media.paused")
        for picture in self.query("#clerk-picture").results(Picture):
            picture.clear(paused)
