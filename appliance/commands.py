"""Platform commands: request/response over MQTT 5 that runs each command id at most once.

A request arrives on ``{root}/cmd/{name}`` with a Response Topic and Correlation Data. The body is a
JSON object (empty allowed) with optional ``id`` and ``expires_at`` (UNIX seconds or ISO 8601). The
command id is ``id``, or the Correlation Data when no ``id`` is given. The dispatcher:

1. runs nothing whose Response Topic is not a safe place for a reply (``response_topic_refusal``:
   under a configured platform reply prefix, no wildcard, no NUL, never the devices' own topics);
   such a request is logged and counted as ``refused`` and gets no reply;
2. claims the id in memory before anything else can interleave, so a repeat arriving while the
   first is still being handled gets 202 "already running" and never runs it a second time;
   answers a repeated id with the first reply again (stored durably, kept >= 7 days) and never runs
   it twice, even across restarts; a command that was running when the appliance died is answered
   500 "interrupted" rather than run again;
3. answers 410 if ``expires_at`` has passed (not run), 404 for unknown names, 400 for malformed
   bodies (naming the problem), 400 for an ``expires_at`` that is not a finite time;
4. validates the body against the command's ``CommandSpec`` (``kiosk_core.commands``: a pydantic
   model; a mismatch is a 400 naming the field), marks the id as running (durably), runs the handler
   with a time limit, stores the reply (never one whose spec says ``personal``), sends it.

Handlers get the validated parameters and return a dict (200) or ``Accepted(dict)`` (202, work continues; the outcome follows as a
``command.completed`` event) or raise ``CommandError`` (status + message).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from appliance.config import DEVICE_TREE, REPLY_TREE
from appliance.outbox import Outbox
from kiosk_core.commands import CommandSpec
from kiosk_core.errors import BadRequest, CommandError, StorageError
from kiosk_core.mqtt import Message
from kiosk_core.payload import decode_json_object, dumps
from kiosk_core.status import error_reply
from kiosk_core.tasks import TaskSet, wait_for

log = logging.getLogger("kiosk.commands")

NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
MAX_ID = 128
HANDLER_TIMEOUT_S = 30.0


@dataclass
class Accepted:
    """Returned by a handler that started long work: reply 202 now, ``then`` runs afterwards."""

    body: dict[str, Any] = field(default_factory=dict)
    then: Callable[[], Awaitable[dict[str, Any]]] | None = None


Reply = Callable[[str, bytes, bytes | None], Awaitable[None]]  # (topic, payload, correlation) -> sent


def _under(levels: list[str], prefix: str) -> bool:
    want = prefix.split("/")
    return len(levels) >= len(want) and all(
        (w == "+" and level != "") or w == level for w, level in zip(want, levels, strict=False)
    )


def response_topic_refusal(topic: str, prefixes: Sequence[str]) -> str | None:
    """Why a request's Response Topic is no place to publish its reply, or None when it is.

    A reply is published with the device's credentials, so a Response Topic is an order to publish
    there: it must lie under one of the platform's reply ``prefixes`` (``fleet.reply_prefixes``; ``+``
    in a prefix stands for one level), contain no wildcard and no NUL, and never be under the devices'
    own topics (``kiosk/v1/...``: another device's ``cmd/``, this device's ``state``) except the reply
    tree ``kiosk/v1/replies/``."""
    if "\x00" in topic:
        return "it contains NUL"
    if "+" in topic or "#" in topic:
        return "it contains an MQTT wildcard (+ or #)"
    levels = topic.split("/")
    if _under(levels, DEVICE_TREE) and not _under(levels, REPLY_TREE):
        return f"it is under the devices' own topics ({DEVICE_TREE}/), outside {REPLY_TREE}/"
    if not any(_under(levels, prefix) for prefix in prefixes):
        return f"it is not under a platform reply prefix (fleet.reply_prefixes: {', '.join(prefixes)})"
    return None


def parse_expiry(value: Any) -> float:
    """``expires_at`` as UNIX seconds; raises ``BadRequest`` unless it is a finite time."""
    if isinstance(value, bool):
        raise BadRequest("expires_at must be UNIX seconds or an ISO 8601 time, not a boolean")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer of hundreds of digits
            seconds = math.inf
        if not math.isfinite(seconds):
            raise BadRequest("expires_at must be a finite number of UNIX seconds")
        return seconds
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"expires_at {value[:40]!r} is not an ISO 8601 time") from None
        if dt.tzinfo is None:
            raise BadRequest("expires_at needs a time zone (e.g. 2026-11-21T08:00:00+08:00)")
        return dt.timestamp()
    raise BadRequest(f"expires_at must be UNIX seconds or an ISO 8601 time, got {type(value).__name__}")


class CommandDispatcher:
    def __init__(
        self,
        outbox: Outbox,
        send: Reply,
        emit: Callable[[str, dict[str, Any]], Awaitable[None]],
        *,
        reply_prefixes: Sequence[str],
        retention_s: float = 7 * 86400,
    ) -> None:
        self._outbox = outbox
        self._send = send
        self._emit = emit
        self.reply_prefixes = tuple(reply_prefixes)
        self._handlers: dict[str, CommandSpec] = {}
        # Ids being handled now (claimed before the first await of handle(), released at its end).
        self._running: set[str] = set()
        self._tasks = TaskSet("commands", log)
        self.retention_s = retention_s
        self.counts = {
            "received": 0,
            "duplicates": 0,
            "expired": 0,
            "malformed": 0,
            "unknown": 0,
            "failed": 0,
            "refused": 0,
        }

    def register(self, spec: CommandSpec) -> None:
        if not NAME.match(spec.name):
            raise ValueError(f"bad command name {spec.name!r}")
        if not isinstance(spec.personal, bool):
            raise TypeError(f"{spec.name}: personal must be True or False")
        if spec.name in self._handlers:
            raise ValueError(f"command {spec.name!r} is registered twice")
        self._handlers[spec.name] = spec

    def register_all(self, specs: Iterable[CommandSpec]) -> None:
        for spec in specs:
            self.register(spec)

    @property
    def specs(self) -> list[CommandSpec]:
        return [self._handlers[name] for name in self.names]

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)

    async def handle(self, name: str, msg: Message) -> None:
        """Process one request. Never raises: every failure becomes a reply (or a log line)."""
        self.counts["received"] += 1
        response_topic, corr = msg.response_topic, msg.correlation_data
        if not response_topic:
            # Without a Response Topic nobody can learn the outcome; running it blind is worse.
            self.counts["malformed"] += 1
            log.warning(
                "command %s without a Response Topic ignored (MQTT 5 request/response required)", name[:64]
            )
            return
        refusal = response_topic_refusal(response_topic, self.reply_prefixes)
        if refusal is not None:
            # Not run and not answered: there is nowhere safe to send the answer.
            self.counts["refused"] += 1
            log.warning(
                "command %s refused, not run and not answered: Response Topic %r: %s",
                name[:64],
                response_topic[:200],
                refusal,
            )
            return

        async def reply(
            status: int, body: dict[str, Any], cid: str | None, store: bool = True, personal: bool = False
        ) -> None:
            def encode(status: int, body: dict[str, Any]) -> bytes:
                return dumps({"status": status, **body, **({"id": cid} if cid else {}), "name": name})

            try:
                payload = encode(status, body)
            except ValueError as exc:  # a handler answered NaN: say so rather than leave it running
                self.counts["failed"] += 1
                log.error("command %s: its reply could not be encoded: %s", name, exc)
                payload = encode(500, {"error": f"the reply could not be encoded: {exc}"})
            if store and cid is not None:
                # A reply carrying personal data (its spec says ``personal``, e.g. a villager's
                # identity or document chunk) is never written to disk: its repeat gets 410 instead.
                kept = (
                    payload
                    if not personal
                    else encode(
                        410,
                        {
                            "error": "the first reply carried personal data and was not kept; "
                            "send the request again with a new id"
                        },
                    )
                )
                try:
                    await self._outbox.command_finish(cid, name, kept)
                except StorageError as exc:  # the reply still goes out; a repeat answers "interrupted"
                    log.error("command %s id=%s: reply not stored: %s", name, cid, exc)
            await self._send(response_topic, payload, corr)

        try:
            body = decode_json_object(msg.payload, "command body") if msg.payload.strip() else {}
        except ValueError as exc:
            self.counts["malformed"] += 1
            await reply(400, {"error": str(exc)}, None, store=False)
            return
        raw_id = body.pop("id", None)
        if raw_id is not None and (not isinstance(raw_id, str) or not 0 < len(raw_id) <= MAX_ID):
            self.counts["malformed"] += 1
            await reply(400, {"error": f"id must be a string of 1-{MAX_ID} characters"}, None, store=False)
            return
        cid = raw_id or (("corr:" + corr.hex()[: MAX_ID - 5]) if corr else None)
        if cid is None:
            await self._run(name, body, reply, None)
            return
        # Claimed here, before the first await: a repeat dispatched on another worker meanwhile finds
        # the claim, whether or not the durable "running" mark below is written yet.
        if cid in self._running:
            self.counts["duplicates"] += 1
            await reply(202, {"detail": "already running"}, cid, store=False)
            return
        self._running.add(cid)
        try:
            seen = await self._outbox.command_lookup(cid)
            if seen is not None:
                self.counts["duplicates"] += 1
                state, stored = seen
                if state == "done" and stored is not None:
                    log.info("command %s id=%s seen before: resending the first reply", name, cid)
                    await self._send(response_topic, stored, corr)
                else:
                    # Marked running durably, but not claimed by this process: the appliance died.
                    await reply(
                        500,
                        {
                            "error": "interrupted: the appliance restarted while this command ran; "
                            "it was not run again"
                        },
                        cid,
                    )
                return
            await self._run(name, body, reply, cid)
        finally:
            self._running.discard(cid)

    async def _run(
        self,
        name: str,
        body: dict[str, Any],
        reply: Callable[..., Awaitable[None]],
        cid: str | None,
    ) -> None:
        if not NAME.match(name) or name not in self._handlers:
            self.counts["unknown"] += 1
            await reply(404, {"error": f"unknown command {name[:64]!r}", "commands": self.names}, cid)
            return
        try:
            expires = parse_expiry(body.pop("expires_at")) if "expires_at" in body else None
        except BadRequest as exc:
            self.counts["malformed"] += 1
            await reply(400, {"error": str(exc)}, cid)
            return
        if expires is not None and time.time() > expires:
            self.counts["expired"] += 1
            await reply(
                410, {"error": "expired before it reached the device; not run", "expired_at": expires}, cid
            )
            return

        if cid is not None:
            try:
                await self._outbox.command_begin(cid, name)
            except StorageError as exc:
                # Without a durable record of the id, running it could run it twice: refuse instead.
                self.counts["failed"] += 1
                await reply(503, {"error": f"not run: the device cannot record it ({exc})"}, cid, store=False)
                return
        try:
            try:
                result = await wait_for(self._handlers[name](body), HANDLER_TIMEOUT_S)
            except TimeoutError:
                raise CommandError(500, f"timed out after {HANDLER_TIMEOUT_S:.0f}s") from None
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reply; the daemon keeps running
            body_ = error_reply(exc, what=f"command {name}", log=log)
            if body_["status"] >= 500:
                self.counts["failed"] += 1
            status = body_.pop("status")
            await reply(status, body_, cid)
        else:
            if isinstance(result, Accepted):
                await reply(202, result.body, cid)
                if result.then is not None:
                    self._tasks.spawn(self._finish_later(name, cid, result.then))
            else:
                await reply(
                    200,
                    result or {},
                    cid,
                    personal=self._handlers[name].personal,
                )

    async def _finish_later(
        self, name: str, cid: str | None, then: Callable[[], Awaitable[dict[str, Any]]]
    ) -> None:
        try:
            body = await then()
            status, extra = 200, body or {}
        except Exception as exc:  # noqa: BLE001 - the outcome is reported as command.completed
            extra = error_reply(exc, what=f"command {name} (after 202)", log=log)
            status = extra.pop("status")
        await self._emit("command.completed", {"id": cid, "name": name, "status": status, **extra})

    async def prune(self) -> int:
        return await self._outbox.command_prune(self.retention_s)
