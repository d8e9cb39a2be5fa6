"""A simulated county approval centre (县级审批中心) that speaks only the fleet contract.

It connects to the central broker like the real platform would: it subscribes to the devices' durable
``event`` topics (``kiosk/v1/{province}/{city}/{county}/{township}/{village}/{device_id}/event``) and sends
commands to ``…/cmd/{name}`` as MQTT 5 requests (Response Topic + Correlation Data, a JSON body with an
``id``), reading the status code of each reply. Nothing here touches the device's local bus.

Behaviour (``CountyCentre``):

- a call (``session.call.requested``) is queued, then answered by a clerk after ``answer_after_s``;
  the clerk reads the identity, pulls every document (chunked, resumable, verified by SHA-256), asks
  for one more document, waits for it, sends a message and approves with an application number;
- a progress look-up (``session.progress.requested``) is answered with the villager's applications
  (those approved here plus a historical one);
- an appointment request is offered slots; a booking is confirmed (the first try of a slot marked
  ``busy`` is declined, to exercise that path);
- ``clerk=False`` leaves calls to a person (``kiosk sim clerk ...``) and answers the rest;
- ``janus_url``: the accepted call carries a ``media`` object (VideoRoom ``janus_room`` there, display
  ``kiosk-<device id>``), so kiosk-media joins the room where a browser clerk (sim/clerk_web) waits;
  without it the call is text only.

``ClerkConsole`` is the one-shot helper behind ``kiosk sim clerk``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import logging
import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from appliance.session.catalog import Catalog, default_catalog
from kiosk_core.errors import CommandError
from kiosk_core.link import Backoff, SupervisedLink
from kiosk_core.mqtt import Message, MqttConnection, Tls
from kiosk_core.payload import decode_json_object
from kiosk_core.requester import Requester
from kiosk_core.status import check_reply
from kiosk_core.tasks import TaskSet

log = logging.getLogger("kiosk.county")

EVENT_FILTER = "kiosk/v1/+/+/+/+/+/+/event"
CHINA = dt.timezone(dt.timedelta(hours=8))


def device_root(topic: str) -> str:
    """``kiosk/v1/…/{device_id}/event`` -> ``kiosk/v1/…/{device_id}``."""
    return topic.rsplit("/", 1)[0]


@dataclass(frozen=True)
class ClerkProfile:
    id: str = "c-0042"
    name: str = "李明"
    extra_document: str = "户口簿本人页"
    extra_note: str = "请把户口簿本人页放平拍清楚"
    message: str = "材料已收到，审核通过，马上为您受理。"
    approve_note: str = "预计5个工作日内办结，可凭受理号查询进度。"


@dataclass
class ReceivedDocument:
    session_id: str
    doc_id: str
    sha256: str
    data: bytes
    chunks: int
    verified: bool


@dataclass
class Application:
    application_no: str
    item_name: dict[str, str]
    status: str
    updated_at: str
    note: str | None = None
    submitted_at: str | None = None


@dataclass
class CallScript:
    """What the clerk does once connected (each step waits ``step_s``)."""

    request_document: bool = True
    send_message: bool = True
    approve: bool = True


class FleetRequester:
    """MQTT 5 request/response towards devices, and the stream of their events, over one
    ``SupervisedLink`` to the central broker."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str | None = None,
        tls: Tls | None = None,
        username: str | None = None,
        password: str | None = None,
        reply_topic: str | None = None,
        name: str = "county",
    ) -> None:
        self.host, self.port, self.name = host, port, name
        self.client_id = client_id or f"{name}-{uuid.uuid4().hex[:8]}"
        # Behind the fleet ACL the reply topic lies under the operator's reply prefix (docs/mqtt.md).
        self.reply_topic = reply_topic or f"platform/{self.client_id}/replies"
        self._tls, self._username, self._password = tls, username, password
        self._filters: list[tuple[str, int]] = []
        self._ids = itertools.count(1)
        self.events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(10_000)
        self._last_seq: dict[str, tuple[int, int]] = {}
        self.link = SupervisedLink(
            name,
            self._new_connection,
            handler=self._on_event,
            subscriptions=lambda: self._filters,
            requester=Requester(self.reply_topic),
            backoff=Backoff(base_s=0.2, cap_s=10.0),
            workers=1,  # events are de-duplicated and queued in arrival order
            log=log,
        )

    def subscribe_events(self, topic_filter: str = EVENT_FILTER) -> None:
        self._filters.append((topic_filter, 1))

    async def start(self, wait_s: float = 10.0) -> None:
        self.link.start()
        if not await self.link.wait_connected(wait_s):
            raise TimeoutError(f"{self.name}: central broker {self.host}:{self.port} not reachable")
        log.info("%s: connected to %s:%d", self.name, self.host, self.port)

    async def stop(self) -> None:
        await self.link.stop()

    def _new_connection(self) -> MqttConnection:
        return MqttConnection(
            host=self.host,
            port=self.port,
            client_id=self.client_id,
            tls=self._tls,
            username=self._username,
            password=self._password,
            name=self.name,
        )

    def _on_event(self, msg: Message) -> None:
        if not msg.topic.endswith("/event"):
            return
        try:
            event = decode_json_object(msg.payload, "event")
        except ValueError as exc:
            log.warning("%s: unreadable event on %s: %s", self.name, msg.topic, exc)
            return
        if not isinstance(event.get("type"), str):
            return
        root = device_root(msg.topic)
        # The contract's consumer rule: de-duplicate by (device, epoch, seq); a resend is dropped.
        key = (int(event.get("epoch") or 0), int(event.get("seq") or 0))
        last = self._last_seq.get(root)
        if last is not None and event.get("seq") is not None and key <= last:
            return
        if event.get("seq") is not None:
            self._last_seq[root] = key
        try:
            self.events.put_nowait((root, event))
        except asyncio.QueueFull:
            log.error("%s: event queue full; dropped %s from %s", self.name, event.get("type"), root)

    async def command(
        self,
        root: str,
        name: str,
        params: dict[str, Any] | None = None,
        *,
        timeout_s: float = 10.0,
        command_id: str | None = None,
    ) -> dict[str, Any]:
        """Send ``cmd/{name}`` to the device under ``root``; returns the reply (any status)."""
        body = {"id": command_id or f"{self.client_id}-{next(self._ids)}", **(params or {})}
        assert self.link.requester is not None
        return await self.link.requester.request(
            self.link,
            f"{root}/cmd/{name}",
            json.dumps(body, ensure_ascii=False).encode(),
            timeout_s=timeout_s,
            what=f"{name} to {root}",
        )

    async def call(
        self, root: str, name: str, params: dict[str, Any] | None = None, *, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """Like ``command`` but raises ``CommandError`` unless the status is 2xx."""
        return check_reply(await self.command(root, name, params, timeout_s=timeout_s), name)


async def fetch_document(
    link: FleetRequester,
    root: str,
    session_id: str,
    doc_id: str,
    *,
    sha256: str,
    total: int,
    chunk: int = 65536,
    attempts: int = 5,
) -> ReceivedDocument:
    """Pull a document in chunks, resuming at the last verified offset after a failed chunk, and check
    the whole image against the SHA-256 the device announced."""
    data = bytearray()
    chunks = 0
    failures = 0
    while len(data) < total or chunks == 0:
        try:
            reply = await link.call(
                root,
                "session.document.get",
                {"session_id": session_id, "doc_id": doc_id, "offset": len(data), "length": chunk},
            )
            piece = base64.b64decode(reply["data"], validate=True)
            if hashlib.sha256(piece).hexdigest() != reply.get("chunk_sha256"):
                raise ValueError("chunk hash mismatch")
            if reply.get("sha256") != sha256:
                raise ValueError("the document was replaced; its hash changed")
        except CommandError as exc:
            if exc.status in (400, 409) or failures >= attempts:
                raise
            failures += 1
            await asyncio.sleep(min(2.0, 0.1 * 2**failures) * random.uniform(0.5, 1.0))
            continue
        except (ValueError, KeyError, TypeError) as exc:
            if failures >= attempts:
                raise CommandError(502, f"{doc_id}: {exc}") from None
            failures += 1
            continue
        data += piece
        chunks += 1
        if reply.get("eof") or not piece:
            break
    ok = hashlib.sha256(data).hexdigest() == sha256 and len(data) == total
    return ReceivedDocument(session_id, doc_id, sha256, bytes(data), chunks, ok)


@dataclass
class _SessionWork:
    root: str
    session_id: str
    task: asyncio.Task[Any] | None = None
    captured: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    identity: dict[str, Any] | None = None


class CountyCentre:
    """The simulated county centre. ``await start()``, then it runs until ``stop()``."""

    def __init__(
        self,
        link: FleetRequester,
        *,
        clerk: bool = True,
        answer_after_s: float = 3.0,
        step_s: float = 1.5,
        wait_document_s: float = 120.0,
        profile: ClerkProfile | None = None,
        script: CallScript | None = None,
        catalog: Catalog | None = None,
        county_code: str = "330803",
        janus_url: str | None = None,
        janus_room: int = 1234,
    ) -> None:
        self.link = link
        self.janus_url = janus_url
        self.janus_room = janus_room
        self.clerk = clerk
        self.answer_after_s = answer_after_s
        self.step_s = step_s
        self.wait_document_s = wait_document_s
        self.profile = profile or ClerkProfile()
        self.script = script or CallScript()
        self.catalog = catalog or default_catalog()
        self.county_code = county_code
        self.documents: dict[tuple[str, str], ReceivedDocument] = {}
        self.applications: dict[str, list[Application]] = {}
        self.replies: list[tuple[str, dict[str, Any]]] = []  # (command, reply) for the record
        # (session_id, code) of each fixed answer the villager gave the clerk (session.villager_reply)
        self.villager_replies: list[tuple[str, str]] = []
        self.errors: list[str] = []
        self._sessions: dict[str, _SessionWork] = {}
        self._numbers = itertools.count(1)
        self._declined_once: set[str] = set()
        self._tasks = TaskSet("county", log, on_error=lambda exc: self.errors.append(repr(exc)))

    async def start(self) -> None:
        self.link.subscribe_events()
        await self.link.start()
        self._tasks.spawn(self._consume(), name="county-events")

    async def stop(self) -> None:
        await self._tasks.close()
        await self.link.stop()

    def call_media(self, root: str) -> dict[str, Any] | None:
        """The ``media`` object of ``session.call.accepted`` for the device at ``root`` (None: no media
        server, the call is text only): the VideoRoom ``janus_room`` on ``janus_url``, no STUN/TURN."""
        if self.janus_url is None:
            return None
        return {
            "kind": "janus-videoroom",
            "url": self.janus_url,
            "room": self.janus_room,
            "display": f"kiosk-{root.rsplit('/', 1)[-1]}",
            "ice_servers": [],
        }

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        return self._tasks.spawn(coro)

    async def _consume(self) -> None:
        while True:
            root, event = await self.link.events.get()
            try:
                self._on_event(root, event)
            except Exception:  # noqa: BLE001 - one odd event must not stop the centre
                log.exception("county: event %s failed", event.get("type"))

    def _on_event(self, root: str, event: dict[str, Any]) -> None:
        type_, data = event["type"], event.get("data") or {}
        if not isinstance(data, dict) or not type_.startswith("session."):
            return
        sid = data.get("session_id")
        work = self._sessions.get(sid) if isinstance(sid, str) else None
        if type_ == "session.call.requested" and self.clerk:
            work = self._sessions.setdefault(sid, _SessionWork(root, sid))
            work.task = self._spawn(self._handle_call(work, data))
        elif type_ == "session.document.captured":
            if work is not None:
                fut = work.captured.get(data.get("doc_id"))
                if fut is not None and not fut.done():
                    fut.set_result(data)
            self._spawn(self._pull(root, sid, data))
        elif type_ == "session.villager_reply":
            # What the clerk's console shows: the villager pressed 听不清 / 看不懂 / 请稍等 / 请村干部帮忙.
            self.villager_replies.append((str(sid), str(data.get("code"))))
            log.info("county: the villager of %s answers %s", sid, data.get("code"))
        elif type_ == "session.progress.requested":
            self._spawn(self._answer_progress(root, sid))
        elif type_ == "session.appointment.requested":
            self._spawn(self._offer_slots(root, sid, data.get("department_id")))
        elif type_ == "session.appointment.book_requested":
            self._spawn(self._book(root, sid, data.get("slot_id")))
        elif type_ in ("session.ended", "session.call.cancelled") and work is not None:
            if work.task is not None and not work.task.done():
                work.task.cancel()
            if type_ == "session.ended":
                self._sessions.pop(sid, None)

    async def _cmd(self, root: str, name: str, params: dict[str, Any]) -> dict[str, Any]:
        reply = await self.link.call(root, name, params)
        self.replies.append((name, reply))
        return reply

    async def _pull(self, root: str, sid: str, data: dict[str, Any]) -> ReceivedDocument | None:
        try:
            doc = await fetch_document(
                self.link, root, sid, data["doc_id"], sha256=data["sha256"], total=int(data["bytes"])
            )
        except CommandError as exc:
            log.info("county: document %s of %s not fetched: %s", data.get("doc_id"), sid, exc)
            return None
        self.documents[(sid, doc.doc_id)] = doc
        log.info(
            "county: received %s (%d bytes in %d chunks), hash %s",
            doc.doc_id,
            len(doc.data),
            doc.chunks,
            "verified" if doc.verified else "MISMATCH",
        )
        return doc

    async def _handle_call(self, work: _SessionWork, data: dict[str, Any]) -> None:
        root, sid = work.root, work.session_id
        half = self.answer_after_s / 2
        await self._cmd(
            root,
            "session.call.queued",
            {"session_id": sid, "position": 2, "estimated_wait_s": max(1, round(self.answer_after_s))},
        )
        await asyncio.sleep(half)
        await self._cmd(
            root,
            "session.call.queued",
            {"session_id": sid, "position": 1, "estimated_wait_s": max(1, round(half))},
        )
        await asyncio.sleep(half)
        department = data.get("department_id") or "shebao"
        accepted: dict[str, Any] = {
            "session_id": sid,
            "clerk": {"id": self.profile.id, "name": self.profile.name, "department": department},
        }
        if (media := self.call_media(root)) is not None:
            accepted["media"] = media
        await self._cmd(root, "session.call.accepted", accepted)
        reply = await self._cmd(root, "session.identity.get", {"session_id": sid})
        work.identity = {k: v for k, v in reply.items() if k not in ("status", "id", "name")} | {
            "name": reply.get("name")
        }
        for doc in data.get("documents") or []:
            if isinstance(doc, dict) and doc.get("sha256") and (sid, doc.get("doc_id")) not in self.documents:
                await self._pull(root, sid, {**doc, "session_id": sid})
        if self.script.request_document:
            await asyncio.sleep(self.step_s)
            reply = await self._cmd(
                root,
                "session.request_document",
                {"session_id": sid, "name": self.profile.extra_document, "note": self.profile.extra_note},
            )
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            work.captured[reply["doc_id"]] = fut
            with contextlib.suppress(TimeoutError):
                captured = await asyncio.wait_for(fut, self.wait_document_s)
                # the pull started by the event may still run; make sure we have it before approving
                if (sid, captured["doc_id"]) not in self.documents:
                    await self._pull(root, sid, captured)
        if self.script.send_message:
            await asyncio.sleep(self.step_s)
            await self._cmd(root, "session.message", {"session_id": sid, "text": self.profile.message})
        if self.script.approve:
            await asyncio.sleep(self.step_s)
            number = self.next_application_no()
            approve = {"session_id": sid, "application_no": number, "note": self.profile.approve_note}
            try:
                await self._cmd(root, "session.approve", approve)
            except CommandError as exc:
                missing = exc.detail.get("missing_documents")
                if exc.status != 409 or not missing:
                    raise
                # The villager never brought what was asked for; this demo clerk approves anyway, said
                # out loud (a real clerk decides, and the override is recorded in session.approved).
                log.warning("county: %s still missing %s; approving with override_missing", sid, missing)
                await self._cmd(root, "session.approve", approve | {"override_missing": True})
            item = self.catalog.item(str(data.get("item_id")))
            name = (
                item.name.as_dict()
                if item
                else {"zh-CN": str(data.get("item_id")), "en": str(data.get("item_id"))}
            )
            key = str((work.identity or {}).get("id_number") or data.get("id_masked"))
            self.applications.setdefault(key, []).append(
                Application(
                    number,
                    name,
                    "in_review",
                    dt.datetime.now(CHINA).date().isoformat(),
                    "材料已转县审批中心，预计5个工作日内办结",
                    submitted_at=dt.datetime.now(CHINA).date().isoformat(),
                )
            )

    def next_application_no(self) -> str:
        today = dt.datetime.now(CHINA).strftime("%Y%m%d")
        return f"SQ{self.county_code}-{today}-{next(self._numbers):04d}"

    async def _answer_progress(self, root: str, sid: str) -> None:
        reply = await self._cmd(root, "session.identity.get", {"session_id": sid})
        key = str(reply.get("id_number") or reply.get("id_number_masked"))
        apps = [vars(a) for a in self.applications.get(key, [])]
        # Everyone in the demo has one older, finished application too.
        apps.append(
            {
                "application_no": f"SQ{self.county_code}-20260915-0031",
                "item_name": {
                    "zh-CN": "城乡居民医保参保登记",
                    "en": "Residents' medical insurance enrolment",
                },
                "status": "completed",
                "submitted_at": "2026-09-15",
                "updated_at": "2026-09-20",
                "note": "参保登记已生效",
            }
        )
        await self._cmd(root, "session.progress.result", {"session_id": sid, "applications": apps})

    async def _offer_slots(self, root: str, sid: str, department_id: Any) -> None:
        start = dt.datetime.now(CHINA).replace(hour=9, minute=0, second=0, microsecond=0) + dt.timedelta(
            days=1
        )
        slots = []
        for day, hour, official in ((0, 9, "王芳"), (0, 14, "王芳"), (1, 10, "陈刚")):
            begin = start + dt.timedelta(days=day, hours=hour - 9)
            slots.append(
                {
                    "slot_id": f"sl-{begin:%Y%m%d-%H%M}",
                    "start": begin.isoformat(),
                    "end": (begin + dt.timedelta(minutes=20)).isoformat(),
                    "official": official,
                    "place": "县行政服务中心一楼综合窗口",
                }
            )
        await self._cmd(
            root,
            "session.appointment.slots",
            {"session_id": sid, "department_id": str(department_id), "slots": slots},
        )

    async def _book(self, root: str, sid: str, slot_id: Any) -> None:
        await asyncio.sleep(min(0.5, self.step_s))
        slot_id = str(slot_id)
        if slot_id.endswith("-1400") and slot_id not in self._declined_once:
            # the afternoon slot was just taken by someone else (exercises the declined path once)
            self._declined_once.add(slot_id)
            await self._cmd(
                root,
                "session.appointment.declined",
                {"session_id": sid, "slot_id": slot_id, "reason": "该时段刚被预约，请选择其他时段"},
            )
            return
        number = f"YY{self.county_code}-{next(self._numbers):04d}"
        await self._cmd(
            root,
            "session.appointment.confirmed",
            {"session_id": sid, "slot_id": slot_id, "booking_no": number},
        )


# --- `kiosk sim clerk`: a person plays the clerk --------------------------------------------------------


class ClerkConsole:
    """One clerk action against one device, for ``kiosk sim clerk``."""

    def __init__(self, link: FleetRequester, root: str) -> None:
        self.link, self.root = link, root

    async def current_session(self) -> str:
        status = await self.link.call(self.root, "session.status", {})
        sid = status.get("session_id")
        if not isinstance(sid, str):
            raise CommandError(409, f"no session on the kiosk (screen {status.get('screen')})")
        return sid

    async def act(
        self,
        action: str,
        *,
        session_id: str | None = None,
        text: str = "",
        department: str = "",
        clerk_name: str = "李明",
        clerk_id: str = "c-0001",
        application_no: str = "",
        position: int = 1,
        wait_s: int = 60,
        override_missing: bool = False,
    ) -> dict[str, Any]:
        if action == "status":
            return await self.link.command(self.root, "session.status", {})
        sid = session_id or await self.current_session()
        params: dict[str, Any] = {"session_id": sid}
        if action == "queue":
            name, params = "session.call.queued", params | {"position": position, "estimated_wait_s": wait_s}
        elif action == "accept":
            if not department:
                status = await self.link.call(self.root, "session.status", {})
                department = str(status.get("item_id") or "shebao").split(".")[0]
            name, params = (
                "session.call.accepted",
                params | {"clerk": {"id": clerk_id, "name": clerk_name, "department": department}},
            )
        elif action == "message":
            name, params = "session.message", params | {"text": text}
        elif action == "request-document":
            name, params = "session.request_document", params | {"name": text}
        elif action == "approve":
            number = application_no or f"SQ{dt.datetime.now(CHINA):%Y%m%d-%H%M%S}"
            name, params = "session.approve", params | {"application_no": number}
            if override_missing:  # approve although a required document is missing (else 409)
                params["override_missing"] = True
        elif action == "reject":
            name, params = "session.reject", params | {"reason": text}
        elif action == "end":
            name = "session.end"
        elif action == "identity":
            name = "session.identity.get"
        else:
            raise CommandError(400, f"unknown clerk action {action!r}")
        return await self.link.command(self.root, name, params)

    async def fetch_all(self, session_id: str | None = None) -> list[ReceivedDocument]:
        """Pull every captured document of the current session and verify it."""
        sid = session_id or await self.current_session()
        status = await self.link.call(self.root, "session.status", {})
        out = []
        for doc in status.get("documents", []):
            if doc.get("status") == "captured" and doc.get("sha256"):
                out.append(
                    await fetch_document(
                        self.link,
                        self.root,
                        sid,
                        doc["doc_id"],
                        sha256=doc["sha256"],
                        total=int(doc["bytes"]),
                    )
                )
        return out
