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
    """One frame of the clerk's video preview, checked (``kiosk_ui.bus.parse_preview``): ``rgb`` is
    exactly ``w * h * 3`` bytes, row-major RGB."""

    session_id: str
    w: int
    h: int
    rgb: bytes
    seq: int


@dataclass
class PreviewArrived(Message):
    """The newest preview frame of the call being shown (older ones not yet delivered were dropped)."""

    preview: Preview
