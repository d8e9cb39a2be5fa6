"""MQTT 5 request/response by Correlation Data: the one requester of the firmware.

A request is published with a Response Topic (this requester's own) and fresh Correlation Data; the
responder answers on that topic with the same Correlation Data and a JSON body with a ``status``. Used
over the local bus (``kiosk/local/rpc/...``) and by the platform side towards devices (``cmd/{name}``).
Replies are resolved by the link's reader as they arrive, never behind the handler queue, so a handler
may itself wait for a reply.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

from kiosk_core.errors import CommandError, LinkError
from kiosk_core.mqtt import Message, publish_properties
from kiosk_core.payload import decode_json_object
from kiosk_core.tasks import wait_for

if TYPE_CHECKING:
    from kiosk_core.link import SupervisedLink


class Requester:
    def __init__(self, reply_topic: str) -> None:
        self.reply_topic = reply_topic
        self._calls: dict[bytes, asyncio.Future[dict[str, Any]]] = {}

    @property
    def pending(self) -> int:
        return len(self._calls)

    def take_reply(self, msg: Message) -> bool:
        """Resolve the request ``msg`` answers; True when ``msg`` was on the reply topic (consumed)."""
        if msg.topic != self.reply_topic:
            return False
        fut = self._calls.get(msg.correlation_data or b"")
        if fut is not None and not fut.done():
            try:
                fut.set_result(decode_json_object(msg.payload, "reply"))
            except ValueError as exc:
                fut.set_result({"status": 502, "error": f"unreadable reply: {exc}"})
        return True

    def fail_all(self, reason: str) -> None:
        """The connection is gone and the replies with it: fail every pending request with 503."""
        for fut in self._calls.values():
            if not fut.done():
                fut.set_exception(CommandError(503, reason))

    async def request(
        self,
        link: SupervisedLink,
        topic: str,
        payload: bytes,
        *,
        timeout_s: float,
        what: str,
        expires: bool = True,
    ) -> dict[str, Any]:
        """Publish a request and return the reply body, whatever its status.

        The request carries a Message Expiry of ``timeout_s`` (rounded up) unless ``expires`` is false
        (a request that must still be acted on after the caller stopped waiting, like a local event).
        Raises ``CommandError`` 503 when the link is down (for ``timeout_s``) or drops, 504 when no reply
        arrives within ``timeout_s``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if not await link.wait_connected(timeout_s):
            raise CommandError(503, f"{what}: {link.name} unavailable")
        corr = uuid.uuid4().bytes
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._calls[corr] = fut
        try:
            link.publish(
                topic,
                payload,
                qos=1,
                properties=publish_properties(
                    response_topic=self.reply_topic,
                    correlation_data=corr,
                    expiry_s=int(timeout_s) + 1 if expires else None,
                ),
            )
            return await wait_for(fut, max(0.0, deadline - loop.time()))
        except TimeoutError:
            raise CommandError(504, f"{what}: no reply within {timeout_s}s") from None
        except LinkError as exc:
            raise CommandError(503, f"{what}: {exc}") from None
        finally:
            self._calls.pop(corr, None)
