"""Messages of the kiosk UI ("attributes down, messages up").

The bus link posts ``StatesChanged`` and ``BusStatus`` to the app; screens and widgets post
``IntentRequested`` and the app hands it to the bus. Nothing else crosses between the bus and the UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message


@dataclass
class StatesChanged(Message):
    """Retained states that changed since the last message, merged (latest value per name wins).

    ``states[name]`` is the new JSON object, or None when the retained value was cleared.
    """

    states: dict[str, dict[str, Any] | None]


@dataclass
class BusStatus(Message):
    """The local bus connection came up or went down."""

    connected: bool


@dataclass
class IntentRequested(Message):
    """The villager (or technician) asked for something: publish ``kiosk/local/intent/{name}``."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Preview:
    """One picture from the media process, checked (``kiosk_ui.bus.parse_preview``): ``rgb`` is exactly
    ``w * h * 3`` bytes, row-major RGB.

    ``kind`` says which: ``call`` (a frame of the clerk's video), ``doccam`` (a frame of the document
    camera's live preview) or ``still`` (the thumbnail of the photo just taken; ``sha256`` is that
    photo's, as in the review state's ``image.sha256``)."""

    session_id: str
    w: int
    h: int
    rgb: bytes = field(repr=False)
    seq: int
    kind: str = "call"
    sha256: str | None = None


@dataclass
class PreviewArrived(Message):
    """The newest picture of one ``kind`` for the screen shown (older ones not yet delivered were
    dropped)."""

    preview: Preview
