"""What every peripheral offers the appliance: lifecycle, health, inventory, events and commands.

A peripheral never raises out of ``start()`` because its device is absent: it reports ``missing``
with an actionable reason and keeps trying with backoff. Errors it raises on purpose are
``kiosk_core.errors.DriverError`` subclasses; foreign exceptions are translated at its boundary.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kiosk_core.commands import CommandSpec
from kiosk_core.health import Health

# emit(type, data): record an event (durable, to the fleet, onto the local bus, to in-process listeners)
EventSink = Callable[[str, dict[str, Any]], Awaitable[None]]
# A platform command handler: params (the JSON body without id/expires_at) -> reply body (status 200).
# Raise kiosk_core.errors.CommandError(status, message) for any other status.
CommandHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Peripheral(ABC):
    """One fitted device (or one simulator standing in for it)."""

    #: device kind: card_reader | switcher | camera | doccam | gpio
    kind: str = ""

    def __init__(self, name: str, *, model: str, backend: str) -> None:
        self.name = name  # unique in this kiosk, e.g. "card_reader", "camera.room_main"
        self.model = model
        self.backend = backend

    @abstractmethod
    def health(self) -> Health: ...

    @abstractmethod
    async def start(self, emit: EventSink) -> None:
        """Begin work (open ports, start poll loops). Returns promptly; never raises for a missing device."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop and release the device. Idempotent."""

    def commands(self) -> Mapping[str, CommandSpec]:
        """Platform commands this peripheral serves, by full name (e.g. ``switcher.route``)."""
        return {}

    def inventory(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "model": self.model,
            "backend": self.backend,
            "health": self.health().as_dict(),
        }
