"""``MediaControl``: the appliance's side of kiosk-media.

It forwards the platform's media commands to the media process over the local bus
(``ctx.call_rpc("media", ...)``) and reports the cameras and the document camera in inventory and
health from the media process's retained ``kiosk/local/state/media``. When that state is absent,
says the process stopped, or is older than ``STALE_AFTER_S``, every camera is ``missing`` with the
reason, so the platform sees "media process not running" rather than a stale "ok".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from appliance.commands import Accepted
from appliance.subsystem import Subsystem
from kiosk_core.commands import CommandSpec, NoParams, Params, body_of
from kiosk_core.errors import CommandError
from kiosk_core.health import Health, HealthStatus
from kiosk_core.localbus import STATE_PREFIX
from kiosk_core.payload import decode_json_object

STATE_TOPIC = f"{STATE_PREFIX}/media"
STALE_AFTER_S = 10.0

# platform command -> (media RPC method, reply timeout in seconds)
FORWARDED: dict[str, tuple[str, float]] = {
    "camera.snapshot": ("snapshot", 10.0),
    "doccam.capture": ("doccam_capture", 20.0),
    "media.push.start": ("push_start", 10.0),
    "media.push.stop": ("push_stop", 10.0),
    "media.record.export": ("export", 900.0),
    "media.record.upload": ("upload", 10.0),
}


class SnapshotParams(Params):
    source: str = Field("main", min_length=1, max_length=64)


class PushStartParams(Params):
    url: str = Field("", min_length=1, description="default: [media.push] url")


class ExportParams(Params):
    session_id: str = Field(min_length=1, max_length=128)


class UploadParams(ExportParams):
    url: str = Field(min_length=1)


# platform command -> (summary, params model)
PARAMS: dict[str, tuple[str, type[Params]]] = {
    "camera.snapshot": ("a JPEG still of a camera (main, backup or a camera's name), inline", SnapshotParams),
    "doccam.capture": ("a full-size still of the document camera, inline", NoParams),
    "media.push.start": ("start the live push (to url, or the configured one)", PushStartParams),
    "media.push.stop": ("stop the live push", NoParams),
    "media.record.export": (
        "export a session's recording as one file (202, then command.completed)",
        ExportParams,
    ),
    "media.record.upload": (
        "upload a session's recording (resumable PUT; 202, then upload events)",
        UploadParams,
    ),
}
# Stills the platform receives in the reply itself (base64 JPEG), then deleted from the device: a path on
# the kiosk's disk is of no use to the platform, and a picture of a villager or their papers must not
# stay behind. Larger stills are kept and named in the reply; the reply says which.
INLINE_STILL_MAX = 192 * 1024
STILL_COMMANDS = ("camera.snapshot", "doccam.capture")


class MediaControl(Subsystem):
    name = "media"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self._state: dict[str, Any] | None = None
        self._received_at = 0.0

    async def start(self) -> None:
        self.ctx.subscribe_local(STATE_TOPIC, self._on_state)

    def _on_state(self, topic: str, payload: bytes) -> None:
        try:
            state = decode_json_object(payload, f"state on {topic}") if payload else None
        except ValueError as exc:
            self.ctx.log.warning("media: unreadable state ignored: %s", exc)
            return
        self._state = state
        self._received_at = time.monotonic()

    # --- what the media process reports ----------------------------------------------------------

    def _missing_reason(self) -> str | None:
        if self._state is None:
            return "the media process is not running (no state on the local bus)"
        if not self._state.get("running", False):
            return "the media process stopped"
        if time.monotonic() - self._received_at > STALE_AFTER_S:
            return f"the media process has not reported for {STALE_AFTER_S:g}s (hung or crashed)"
        return None

    def _devices(self) -> dict[str, dict[str, Any]]:
        sources = (self._state or {}).get("sources") or {}
        return {
            ("doccam" if role == "doccam" else f"camera.{role}"): info
            for role, info in sources.items()
            if isinstance(info, dict)
        }

    def health(self) -> Mapping[str, Health]:
        reason = self._missing_reason()
        if reason is not None:
            return {"media": Health(HealthStatus.MISSING, reason)}
        own = (self._state or {}).get("health") or {}  # degraded: a configured push or encoder cannot run
        out = {"media": Health(self._status(own.get("status", "ok")), str(own.get("reason", "")))}
        for name, info in self._devices().items():
            h = info.get("health") or {}
            out[name] = Health(self._status(h.get("status", "missing")), str(h.get("reason", "")))
        return out

    @staticmethod
    def _status(value: object) -> HealthStatus:
        try:
            return HealthStatus(value)
        except ValueError:
            return HealthStatus.MISSING

    def inventory(self) -> list[dict[str, Any]]:
        health = self.health()
        items = []
        for name, info in self._devices().items():
            h = health.get(name, health["media"])
            items.append(
                {
                    "name": name,
                    "kind": "doccam" if name == "doccam" else "camera",
                    "model": info.get("model", ""),
                    "backend": info.get("backend", ""),
                    "role": info.get("role", ""),
                    "health": h.as_dict(),
                }
            )
        return items

    def capabilities(self) -> list[str]:
        return sorted(FORWARDED)

    def telemetry(self) -> dict[str, Any]:
        reason = self._missing_reason()
        if reason is not None:
            return {"running": False, "reason": reason}
        s = self._state or {}
        pipeline = s.get("pipeline") or {}
        return {
            "running": True,
            "active_source": s.get("active_source"),
            "fps_out": pipeline.get("fps_out"),
            "renditions": pipeline.get("renditions"),
            "uplink": s.get("uplink"),
            "disk": s.get("disk"),
            "recording": (s.get("recording") or {}).get("session_id"),
            "call": call_counters(s.get("call")),
            "fps_in": {
                role: info.get("fps_in")
                for role, info in (s.get("sources") or {}).items()
                if isinstance(info, dict)
            },
        }

    # --- commands --------------------------------------------------------------------------------

    def commands(self) -> Mapping[str, CommandSpec]:
        return {
            command: CommandSpec(
                name=command,
                summary=summary,
                params=model,
                handler=self._forwarder(command),
                # A picture is personal data: the daemon must not keep such a reply for repeated ids.
                personal=command in STILL_COMMANDS,
                process="media",
            )
            for command, (summary, model) in PARAMS.items()
        }

    def _forwarder(self, command: str) -> Callable[[BaseModel], Awaitable[dict[str, Any] | Accepted]]:
        method, timeout_s = FORWARDED[command]

        async def call(body: dict[str, Any]) -> dict[str, Any]:
            reply = await self.ctx.call_rpc("media", method, body, timeout_s=timeout_s)
            reply = {k: v for k, v in reply.items() if k != "status"}  # the daemon sets the status
            if command in STILL_COMMANDS:
                reply = await asyncio.to_thread(inline_still, reply)
            return reply

        async def forward(params: BaseModel) -> dict[str, Any] | Accepted:
            body = body_of(params)
            reason = self._missing_reason()
            if reason is not None and self._state is None:
                raise CommandError(503, reason)
            if command == "media.record.export":
                return Accepted(
                    {"session_id": body["session_id"], "export": "started"}, then=lambda: call(body)
                )
            if command == "media.record.upload":
                return Accepted(await call(body))
            return await call(body)

        return forward


CALL_COUNTERS = ("state", "reconnects", "rx", "tx")


def call_counters(call: object) -> dict[str, Any] | None:
    """The call's figures for telemetry from kiosk-media's ``call`` state (``{"state": "off"}`` without a
    call; null from a media process that reports no call at all). Never the call's target."""
    if not isinstance(call, dict):
        return None
    return {k: call[k] for k in CALL_COUNTERS if k in call}


def inline_still(reply: dict[str, Any]) -> dict[str, Any]:
    """Put the still's JPEG into the reply (checked against its SHA-256) and delete the file."""
    path = Path(str(reply.get("path", "")))
    try:
        size = path.stat().st_size
        if not path.is_file() or size > INLINE_STILL_MAX:
            return {**reply, "inline": False}
        data = path.read_bytes()
    except OSError:
        return {**reply, "inline": False}
    if hashlib.sha256(data).hexdigest() != reply.get("sha256"):
        raise CommandError(500, f"the still {path.name} changed on disk (SHA-256 mismatch); not sent")
    with contextlib.suppress(OSError):
        path.unlink()
    out = {k: v for k, v in reply.items() if k != "path"}
    return {**out, "inline": True, "jpeg_base64": base64.b64encode(data).decode("ascii")}
