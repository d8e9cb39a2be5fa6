"""The plug-in boundary of the appliance daemon.

The daemon owns the outbox, the fleet link and the local bus; everything else (peripherals, the
service session, media control) is a ``Subsystem`` it starts in order, asks for health, inventory,
capabilities and commands, and stops in reverse order. Subsystems talk to the rest only through the
``Context`` they are given.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from drivers.base import CommandHandler
from kiosk_core.commands import CommandSpec
from kiosk_core.health import Health

if TYPE_CHECKING:
    from appliance.config import KioskConfig

# A listener of in-process events: (type, data) -> None (may be async)
Listener = Callable[[str, dict[str, Any]], Awaitable[None] | None]
# A local-bus message handler: (topic, payload) -> None
BusHandler = Callable[[str, bytes], Awaitable[None] | None]


class Context(Protocol):
    """What the daemon lends a subsystem."""

    config: KioskConfig
    data_dir: Path
    log: logging.Logger

    async def emit(self, type: str, data: dict[str, Any], *, durable: bool = True) -> None:
        """Record an event: stored in the outbox (durable) and sent to the fleet in seq order,
        published on the local bus at ``kiosk/local/feed/{type}``, and given to in-process listeners."""

    def listen(self, prefix: str, listener: Listener) -> None:
        """Call ``listener`` for every event whose type starts with ``prefix`` (``""`` for all)."""

    def publish_state(self, name: str, state: dict[str, Any] | None) -> None:
        """Retain ``state`` at ``kiosk/local/state/{name}`` (None clears it)."""

    def publish_local(
        self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish any JSON on the local bus (best effort while the bus is down; retained state is
        re-published on reconnect by ``publish_state``)."""

    def subscribe_local(self, topic_filter: str, handler: BusHandler) -> None:
        """Receive local-bus messages matching ``topic_filter`` (kept across bus reconnects)."""

    def register_rpc(self, service: str, handlers: Mapping[str, CommandHandler]) -> None:
        """Serve ``kiosk/local/rpc/{service}/{method}`` requests (see docs/local-bus.md)."""

    async def call_rpc(
        self, service: str, method: str, params: dict[str, Any], timeout_s: float = 5.0
    ) -> dict[str, Any]:
        """Call a method served by another process on the local bus; raises CommandError on failure."""

    def busy(self) -> list[str]:
        """Why the kiosk must not be interrupted now (each subsystem's ``busy()``); empty when idle."""

    def health_map(self) -> dict[str, Health]:
        """Every health item: the fleet link (``fleet``), the local bus, storage, each subsystem's."""

    def inventory(self) -> list[dict[str, Any]]:
        """Every configured part with its health, as birth lists it under ``drivers``."""

    async def rebirth(self) -> None:
        """Publish birth again (when what a subsystem puts in it changed)."""

    def subsystem(self, name: str) -> Subsystem | None:
        """The subsystem called ``name`` (``Subsystem.name``), or None (not configured, failed to load)."""

    async def reboot(self, reason: str) -> None:
        """Reboot the device now by the appliance's reboot path (``device.reboot_requested``, the
        outbox flushed, ``KIOSK_REBOOT_COMMAND`` or ``systemctl reboot``); raises CommandError if the
        command fails."""


class Subsystem:
    """A part of the appliance. Override what applies; all hooks have safe defaults."""

    name: str = "subsystem"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def prepare(self) -> None:
        """Called once every subsystem is constructed and before any starts: wire to another one
        (``ctx.subsystem(name)``) where it must know before it starts (failover -> session)."""

    async def start(self) -> None:
        """Start; return promptly. A failing device is reported in health, not raised."""

    async def stop(self) -> None:
        """Stop; idempotent."""

    def health(self) -> Mapping[str, Health]:
        return {}

    def inventory(self) -> list[dict[str, Any]]:
        return []

    def capabilities(self) -> list[str]:
        return []

    def commands(self) -> Mapping[str, CommandSpec]:
        """Platform commands by full name (``switcher.route``), each a ``CommandSpec``; the daemon does
        validation, dedup, expiry and replies."""
        return {}

    def telemetry(self) -> dict[str, Any]:
        """Extra telemetry fields under this subsystem's name."""
        return {}

    def birth(self) -> Mapping[str, Any]:
        """Top-level birth fields this subsystem owns (each one a field of ``appliance.messages.Birth``)."""
        return {}

    def busy(self) -> str | None:
        """Why the device must not be rebooted or interrupted now (a villager is being served), or None."""
        return None

    async def reconfigure(self, new: KioskConfig) -> list[str]:
        """Apply a new config; return the dotted keys that need a restart to take effect."""
        return []
