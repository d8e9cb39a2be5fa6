"""The UI's link to the local bus: retained state in, intents out.

``BusLink.run(target)`` is meant to run as the app's exclusive named worker. It owns a
``kiosk_core.localbus.LocalBus`` (which reconnects by itself), subscribes to ``kiosk/local/state/#`` and
reaches the UI only through ``target.post_message``:

- ``StatesChanged``: merged. Incoming states are kept in a dict (latest value per name) and flushed in
  one message per loop turn, so a burst of updates (a peripheral flapping, a replay of retained
  messages after reconnect) costs the UI one refresh, and the pending dict can never hold more than
  one value per state name: that is the back-pressure policy.
- ``BusStatus``: the connection came up or went down (polled; LocalBus has no callback for it).

A state payload that is not a JSON object is logged and ignored (the previous value stays on screen);
an empty retained payload means the state was cleared and is passed on as None.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from kiosk_core.localbus import INTENT_PREFIX, STATE_PREFIX, LocalBus, decode_json_object
from kiosk_core.mqtt import Message
from kiosk_ui.messages import BusStatus, StatesChanged

log = logging.getLogger("kiosk.ui.bus")

# Intent names become one topic level: keep them to a safe alphabet.
_INTENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")
MAX_STATE_NAME = 64


class MessageTarget(Protocol):
    def post_message(self, message: Any) -> bool: ...


class BusLink:
    """One UI's connection to the local bus. ``send_intent`` is safe to call whether or not connected."""

    def __init__(self, host: str, port: int, *, poll_s: float = 0.1) -> None:
        self.bus = LocalBus(host, port, name="kiosk-ui")
        self.poll_s = poll_s
        self._target: MessageTarget | None = None
        self._pending: dict[str, dict[str, Any] | None] = {}
        self._flush_scheduled = False
        self.rejected = 0

    async def run(self, target: MessageTarget) -> None:
        """Connect, relay until cancelled, then disconnect. Never raises for a missing broker."""
        self._target = target
        self.bus.subscribe(f"{STATE_PREFIX}/#", self._on_state)
        await self.bus.start(wait_s=None)
        connected: bool | None = None
        try:
            while True:
                now = self.bus.connected
                if now != connected:
                    connected = now
                    target.post_message(BusStatus(connected=now))
                await asyncio.sleep(self.poll_s)
        finally:
            await self.bus.stop()

    def send_intent(self, name: str, data: dict[str, Any] | None = None) -> bool:
        """Publish ``kiosk/local/intent/{name}`` (QoS 1). Returns False if the bus is down (dropped)."""
        if not name or not set(name) <= _INTENT_CHARS:
            raise ValueError(f"intent name {name!r} must be lowercase letters, digits, '_', '.', '-'")
        if not self.bus.connected:
            log.warning("local bus down: intent %s not sent", name)
            return False
        self.bus.publish(f"{INTENT_PREFIX}/{name}", data or {}, qos=1)
        return True

    # --- incoming ----------------------------------------------------------------------------------

    def _on_state(self, msg: Message) -> None:
        name = msg.topic[len(STATE_PREFIX) + 1 :]
        if not name or len(name) > MAX_STATE_NAME:
            self.rejected += 1
            log.warning("ignored state on unexpected topic %r", msg.topic[:200])
            return
        if not msg.payload:
            state = None
        else:
            try:
                state = decode_json_object(msg.payload, f"state {name}")
            except ValueError as exc:
                self.rejected += 1
                log.warning("ignored unreadable %s", exc)
                return
        self._pending[name] = state
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        if pending and self._target is not None:
            self._target.post_message(StatesChanged(states=pending))
