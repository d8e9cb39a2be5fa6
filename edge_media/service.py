"""The kiosk-media process: cameras, pipeline, recording, push, stills; controlled over the local bus.

RPC service ``media`` (``kiosk/local/rpc/media/{method}``):

| method | params | reply |
| --- | --- | --- |
| ``status`` | | the state document below |
| ``record_start`` | ``session_id`` | ``{session_id, dir, continued}``; 409 if another session is recording. A session recorded before (a terminal failover, a terminal active again) is continued: new segments join its folder and its index entry (``continued`` true), nothing is replaced |
| ``record_stop`` | | ``{session_id, segments, bytes}`` |
| ``snapshot`` | ``source`` (main, backup, doccam) | ``{path, sha256, size, width, height}`` |
| ``doccam_capture`` | | ``{path, sha256, size, width, height, taken_at}`` (the thumbnail goes to the UI) |
| ``push_start`` / ``push_stop`` | ``url`` (optional: ``[media.push] url``) | push stats |
| ``export`` | ``session_id`` | ``{path, bytes, sha256, segments, duration_s, complete, missing, unindexed}`` |
| ``upload`` | ``session_id``, ``url`` | 202; the outcome is an event |
| ``sim`` | ``action`` (unplug, replug, freeze, black, drop, stall, clear), ``source`` | ``{source, fault}`` |
| ``call_start`` | ``session_id``, ``media`` (the ``CallTarget`` of ``session.call.accepted``) | the ``call`` state; 400 for a bad or disallowed ``media``; 409 while another session's call runs |
| ``call_stop`` | ``session_id`` (optional) | ``{duration_s, reconnects, rx, tx}``; 409 if no call runs |

Events go to the appliance in order with ``LocalBus.publish_event``, each retried until the appliance
answers that it is stored; the retained
``kiosk/local/state/media`` carries health and telemetry every ``state_interval_s``.
The document camera's live picture and each still's thumbnail go to the kiosk screen's capture
screen (``edge_media.doccam_pictures``), the clerk's picture to its call screen (``_publish_preview``).

The event loop carries the local bus, so disk work (stills, the recording index, creating folders,
closing segments) and CPU work (JPEG encoding, hashing) run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.camera.doccam import DocumentCamera, encode_jpeg
from drivers.camera.errors import CameraBusy, CameraError
from drivers.camera.source import FrameSource
from drivers.camera.synthetic import FAULTS, SyntheticCamera
from edge_media.config import CallTarget, MediaProcessConfig
from edge_media.doccam_pictures import DoccamPictures
from edge_media.pipeline import Pipeline
from edge_media.recording_errors import RecordingDiskFull
from edge_media.segments import SegmentRecorder, recover_orphans
from edge_media.sources import UnknownSource, source_from_spec
from edge_media.watchdog import Watchdog
from kiosk_core.errors import BadRequest, CommandError, Conflict, KioskError
from kiosk_core.fsutil import write_atomic
from kiosk_core.localbus import STATE_PREFIX, LocalBus
from kiosk_core.sdnotify import Notifier
from kiosk_core.tasks import TaskSet
from kiosk_core.urls import redact_url

log = logging.getLogger("kiosk.media")

STATE_TOPIC = f"{STATE_PREFIX}/media"
PREVIEW_TOPIC = "kiosk/local/media/call/preview"  # the clerk's picture, small, for the UI (not retained)
EVENT_QUEUE = 1000
RECORD_STOP_AUDIO_GRACE_S = 0.5  # the last segment waits this long for its audio (AAC lags the picture)
SESSION_ID = re.compile(r"^[\w.:-]{1,128}$")
ROLES = ("main", "backup")


def role_name(src: FrameSource) -> str:
    """A file-name-safe name of a source (its role, or doccam)."""
    return re.sub(r"[^a-z0-9_]", "_", src.name.lower())[:32]


def store_still(frame: Any, path: Path, quality: int = 85) -> tuple[int, str]:
    """Encode a frame as JPEG and write it crash-safely (blocking): (size, SHA-256 hex)."""
    data = encode_jpeg(frame, quality)
    write_atomic(path, data)
    return len(data), hashlib.sha256(data).hexdigest()


def _session_id(params: dict[str, Any]) -> str:
    sid = params.get("session_id")
    if not isinstance(sid, str) or not SESSION_ID.match(sid):
        raise BadRequest("session_id must be 1-128 characters of letters, digits, '._:-'")
    return sid


class PushOutput:
    """Hands one rendition's packets to a ``LivePush`` (which copies them into its own queue).

    The push starts at the first keyframe, when the encoder's stream parameters exist; a new encoder
    generation (an adaptation step that changed the size, a pipeline restart) is passed on with
    ``update_stream``. With a microphone, ``Pipeline.attach`` hands it the ``AudioEncoder``
    (``add_audio``) and its packets (``write_audio``): the push then carries AAC beside the video.
    """

    def __init__(self, push: Any, on_error: Callable[[str], None] | None = None) -> None:
        self.push = push
        self.on_error = on_error or (lambda _msg: None)
        self.generation: int | None = None
        self.failed = ""

    def write(self, ep: Any, encoder: Any) -> None:
        if self.failed:
            return
        if ep.generation != self.generation:
            if not ep.keyframe:
                return
            try:
                if self.generation is None:
                    self.push.start(encoder.template)
                else:
                    self.push.update_stream(encoder.template)
            except Exception as exc:  # noqa: BLE001 - e.g. a container that cannot carry the codec
                self.failed = str(exc)
                self.on_error(self.failed)
                return
            self.generation = ep.generation
        self.push.send(ep.packet)

    def add_audio(self, audio: Any) -> None:
        self.push.add_audio(audio)

    def write_audio(self, ea: Any, audio: Any) -> None:
        if not self.failed and self.generation is not None:
            self.push.send_audio(ea.packet)


class MediaService:
    def __init__(self, cfg: MediaProcessConfig) -> None:
        self.cfg = cfg
        self.mcfg = cfg.media
        data = Path(cfg.storage.data_dir)
        self.media_dir = data / "media"
        self.recordings_dir = Path(self.mcfg.recording.dir or data / "recordings")
        self.stills_dir = self.media_dir / "stills"
        self.bus = LocalBus(cfg.bus.host, cfg.bus.port, name="kiosk-media")
        self.cameras = dict(getattr(cfg.drivers, "camera", None) or {})
        self.sources: dict[str, FrameSource] = {}
        self.source_problems: dict[str, str] = {}
        # What the config asks for and this machine cannot do (push, encoder): media health `degraded`.
        self.problems: dict[str, str] = {}
        self.doccam: DocumentCamera | None = None
        # The document camera's live preview and still thumbnails for the kiosk screen.
        self.doccam_pictures: DoccamPictures | None = None
        self.audio: Any = None  # edge_media.audio.AudioSource when [media.audio] source is set
        self.pipeline: Pipeline | None = None
        self.recorder: SegmentRecorder | None = None
        self.push: Any = None
        self.push_output: PushOutput | None = None
        self.index: Any = None
        self.retention: Any = None
        self.watchdog: Watchdog | None = None
        self.call: Any = None  # edge_media.call.session.CallSession while a call with the clerk runs
        self._preview_seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks = TaskSet("media", log)
        # Events from capture, pipeline and recorder threads wait here for the one sender task, in
        # order. Bounded: when 1,000 are waiting (the appliance unreachable for a long time) newer
        # ones are dropped, counted in `events_dropped` and logged.
        self._events: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(EVENT_QUEUE)
        self.events_dropped = 0
        self._stopping = asyncio.Event()
        self.started_at = time.time()
        self._snapshots = 0
        self._disk: dict[str, Any] = {}  # refreshed in a thread before each state publish
        self.notifier = Notifier()  # systemd: READY once serving, WATCHDOG while frames flow

    # --- events ----------------------------------------------------------------------------------

    async def emit(self, type: str, data: dict[str, Any]) -> None:
        """Queue an event for the appliance (in order; handed over by ``_send_events``)."""
        self._queue_event(type, data)

    def emit_threadsafe(self, type: str, data: dict[str, Any]) -> None:
        """For capture, pipeline and recorder threads."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._queue_event, type, data)

    def _queue_event(self, type: str, data: dict[str, Any]) -> None:
        try:
            self._events.put_nowait((type, data))
        except asyncio.QueueFull:
            self.events_dropped += 1
            if self.events_dropped in (1, 10, 100) or self.events_dropped % 1000 == 0:
                log.warning("event queue full: dropped %s (%d dropped so far)", type, self.events_dropped)

    async def _send_events(self) -> None:
        """Hand queued events to the appliance one at a time, each until it is stored (the
        appliance's stored reply); a long wait is logged every 30 s, the event kept and retried."""
        n = 0
        while True:
            type, data = await self._events.get()
            n += 1
            event_id = f"{self.bus.client_id}-{n}"
            while True:
                try:
                    await self.bus.publish_event(type, data, id=event_id, timeout_s=30)
                    break
                except TimeoutError as exc:
                    log.warning("event %s not stored yet, still trying: %s", type, exc)
                except KioskError as exc:
                    log.warning("event %s refused by the appliance: %s", type, exc)
                    break

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    # --- lifecycle -------------------------------------------------------------------------------

    def _open_sources(self) -> None:
        specs = {"main": self.mcfg.sources.main, "backup": self.mcfg.sources.backup}
        for role, spec in specs.items():
            if not spec:
                continue
            try:
                src = source_from_spec(role, spec, self.cameras)
            except UnknownSource as exc:
                if role in self.mcfg.sources.model_fields_set:  # asked for by name: a config mistake
                    self.source_problems[role] = str(exc)
                    log.error("media source %s: %s", role, exc)
                # else the default name of a camera this kiosk does not have: simply not there
                continue
            src.open()
            self.sources[role] = src
        if self.mcfg.audio.source:
            from edge_media.audio import AudioSource

            self.audio = AudioSource(self.mcfg.audio.source)
            self.audio.open()  # a missing microphone shows in the state; the video goes on without it
        doccam_cfg = getattr(self.cfg.drivers, "doccam", None)
        if doccam_cfg is not None and self.mcfg.sources.doccam:
            self.doccam = DocumentCamera(doccam_cfg)
            self.doccam.open()
            self.doccam_pictures = DoccamPictures(self.bus, self.doccam)

    def _new_pipeline(self) -> Pipeline:
        p = Pipeline(self.sources, self.mcfg, emit=self.emit_threadsafe, audio=self.audio)
        if self.call is not None:  # a restarted pipeline keeps feeding the call
            self._attach_call(p, self.call)
        p.start()
        return p

    def _attach_call(self, p: Pipeline, call: Any) -> None:
        p.frame_taps = [*p.frame_taps, call.room_tap]
        if self.audio is not None:
            p.audio_processor = call.process_audio

    def _detach_call(self, p: Pipeline | None, call: Any) -> None:
        if p is not None:
            p.frame_taps = [t for t in p.frame_taps if t != call.room_tap]
            if p.audio_processor == call.process_audio:
                p.audio_processor = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.media_dir.mkdir(parents=True, exist_ok=True)
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        await self._open_index()
        await self._resolve_encoders()
        self._open_sources()
        self.pipeline = self._new_pipeline()
        self.bus.serve(
            "media",
            {
                "status": self.rpc_status,
                "record_start": self.rpc_record_start,
                "record_stop": self.rpc_record_stop,
                "snapshot": self.rpc_snapshot,
                "doccam_capture": self.rpc_doccam_capture,
                "push_start": self.rpc_push_start,
                "push_stop": self.rpc_push_stop,
                "export": self.rpc_export,
                "upload": self.rpc_upload,
                "sim": self.rpc_sim,
                "call_start": self.rpc_call_start,
                "call_stop": self.rpc_call_stop,
            },
        )
        if self.doccam_pictures is not None:
            # Which capture screen shows (docs/local-bus.md): the preview follows it.
            self.bus.subscribe(f"{STATE_PREFIX}/session", self.doccam_pictures.on_session_state)
        await self.bus.start()
        self.watchdog = Watchdog(
            stall_s=self.mcfg.watchdog_stall_s,
            stalled_for=lambda: self.pipeline.stalled_for() if self.pipeline else 0.0,
            restart=self.restart_pipeline,
            emit=self.emit,
        )
        self._spawn(self._send_events())
        self._spawn(self.watchdog.run())
        self._spawn(self._publish_state_loop())
        if self.doccam_pictures is not None:
            self._spawn(self.doccam_pictures.run())
        if self.retention is not None:
            self._spawn(self.retention.run(self.mcfg.recording.sweep_interval_s))
        if self.mcfg.push.url:
            try:
                await self.rpc_push_start({})
            except CommandError as exc:  # e.g. srt:// on an FFmpeg without libsrt: say so, run without
                self._push_failed(redact_url(self.mcfg.push.url), str(exc))
        self._disk = await asyncio.to_thread(self.disk_usage)
        self.publish_state()
        self.notifier.ready(f"sources: {', '.join(self.sources) or 'none (slate)'}")

    async def _open_index(self) -> None:
        from edge_media.recordings import RecordingIndex, Retention

        self.index = RecordingIndex(self.media_dir / "recordings.sqlite")
        rec = self.mcfg.recording
        self.retention = Retention(
            self.index,
            self.recordings_dir,
            max_age_s=rec.max_age_days * 86400,
            min_free_bytes=rec.min_free_mb * 1024 * 1024,
            active_sessions=self._active_sessions,
            emit=self.emit,
        )
        try:
            await asyncio.to_thread(
                recover_orphans, self.recordings_dir, self.index, emit=self.emit_threadsafe
            )
        except Exception:  # noqa: BLE001 - recovery must never keep the cameras off
            log.exception("recovering unindexed segments failed")

    def _disk_full_threadsafe(self, where: str, error: BaseException | None) -> None:
        """The recorder met a full disk: ``media.recording.disk_full`` and a sweep, on the loop."""
        loop, retention = self._loop, self.retention
        if loop is not None and retention is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                asyncio.run_coroutine_threadsafe(retention.disk_full(where, error), loop)

    async def _resolve_encoders(self) -> None:
        """An encoder this machine cannot open becomes its ``encoder_fallback`` (event
        ``media.encoder.fallback``) or stays, reported (``media.encoder.unavailable``): never silent."""
        from dataclasses import asdict

        from edge_media.encoder import EncoderUnavailable, resolve_renditions

        for name in list(self.mcfg.renditions):
            try:
                self.mcfg, [choice] = await asyncio.to_thread(resolve_renditions, self.mcfg, [name])
            except EncoderUnavailable as exc:
                log.error("%s", exc)
                self.problems[f"encoder.{name}"] = str(exc)
                await self.emit("media.encoder.unavailable", {"rendition": name, "error": str(exc)})
                continue
            if choice.fell_back:
                reason = (
                    f"rendition {name}: {choice.wanted} unavailable ({choice.error}); using {choice.using}"
                )
                log.warning("%s", reason)
                self.problems[f"encoder.{name}"] = reason
                await self.emit("media.encoder.fallback", asdict(choice))

    def _push_failed(self, target: str, error: str) -> None:
        """The configured push cannot run here: a log line, ``media.push.failed``, degraded health."""
        log.error("live push to %s cannot start: %s", target, error)
        self.problems["push"] = f"live push to {target} cannot start: {error}"
        self.emit_threadsafe("media.push.failed", {"target": target, "error": error})

    def _active_sessions(self) -> set[str]:
        rec = self.recorder
        return {rec.session_id} if rec is not None and rec.session_id else set()

    async def restart_pipeline(self) -> None:
        old = self.pipeline
        outputs: dict[str, list[Any]] = {}
        if old is not None:
            outputs = {name: old.outputs(name) for name in old.encoders}
            await asyncio.to_thread(old.stop, 0.5)
        if self.recorder is not None:
            await asyncio.to_thread(self.recorder.cut)  # may wait for the segment-sync thread
        self.pipeline = self._new_pipeline()
        for name, outs in outputs.items():
            for out in outs:
                self.pipeline.attach(name, out)

    async def stop(self) -> None:
        self.notifier.stopping()
        if self.call is not None:
            with contextlib.suppress(CommandError):
                await self.rpc_call_stop({"reason": "media process stopping"})
        with contextlib.suppress(CommandError):
            await self.rpc_push_stop({})
        if self.recorder is not None:
            with contextlib.suppress(CommandError):
                await self.rpc_record_stop({})
        await self._tasks.close()
        if self.pipeline is not None:
            await asyncio.to_thread(self.pipeline.stop)
        for src in self.sources.values():
            await asyncio.to_thread(src.close)
        if self.audio is not None:
            await asyncio.to_thread(self.audio.close)
        if self.doccam is not None:
            await asyncio.to_thread(self.doccam.close)
        self.bus.publish(STATE_TOPIC, {**self.state(), "running": False}, retain=True)
        await asyncio.sleep(0.1)
        await self.bus.stop()
        if self.index is not None:
            await asyncio.to_thread(self.index.close)

    async def run(self) -> int:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stopping.set)
        await self._stopping.wait()
        await self.stop()
        return 0

    # --- state -----------------------------------------------------------------------------------

    def _source_state(self, role: str) -> dict[str, Any]:
        src = self.sources.get(role)
        spec = getattr(self.mcfg.sources, role)
        if src is None:
            return {
                "role": role,
                "spec": spec,
                "health": {
                    "status": "missing",
                    "reason": self.source_problems.get(role, "not configured"),
                    "since": self.started_at,
                },
            }
        return {"role": role, "spec": spec, "name": src.name, **src.stats()}

    def state(self) -> dict[str, Any]:
        p = self.pipeline
        pstats = p.stats() if p is not None else {}
        sources = {
            role: self._source_state(role)
            for role in ROLES
            if role in self.sources or role in self.source_problems
        }
        if self.doccam is not None:
            sources["doccam"] = {
                "role": "doccam",
                **self.doccam.stats(),
                **(self.doccam_pictures.stats() if self.doccam_pictures else {}),
                "health": self.doccam.health().as_dict(),
            }
        uplink: dict[str, Any] = {"state": "off"}
        if "push" in self.problems and self.push is None:
            uplink = {"state": "unavailable", "error": self.problems["push"]}
        if self.push is not None:
            try:
                uplink = {"state": "on", **self.push.stats()}
            except Exception as exc:  # noqa: BLE001
                uplink = {"state": "error", "error": str(exc)}
        return {
            "running": True,
            "health": {"status": "degraded", "reason": "; ".join(self.problems.values())}
            if self.problems
            else {"status": "ok", "reason": ""},
            "ts": round(time.time(), 3),
            "pid": os.getpid(),
            "active_source": pstats.get("selector", {}).get("active"),
            "sources": sources,
            "pipeline": pstats,
            "recording": self.recorder.stats() if self.recorder else None,
            "uplink": uplink,
            "disk": self._disk,
            "watchdog_restarts": self.watchdog.restarts if self.watchdog else 0,
            **({"audio": self.audio.stats()} if self.audio is not None else {}),
            "call": self.call.state() if self.call is not None else {"state": "off"},
        }

    def disk_usage(self) -> dict[str, Any]:
        """Bytes recorded (the index, which a segment-sync thread may hold) and free space: blocking."""
        disk: dict[str, Any] = {}
        if self.index is not None:
            with contextlib.suppress(Exception):
                disk["recordings_bytes"] = self.index.total_bytes()
        if self.retention is not None:
            disk["free_bytes"] = self.retention.free_bytes()
        return disk

    def publish_state(self) -> None:
        self.bus.publish(STATE_TOPIC, self.state(), retain=True)

    async def _publish_state_loop(self) -> None:
        period = self.mcfg.state_interval_s
        if self.notifier.watchdog_s:
            period = min(period, self.notifier.watchdog_s / 2)
        while True:
            await asyncio.sleep(period)
            try:
                self._disk = await asyncio.to_thread(self.disk_usage)
                self.publish_state()
            except Exception:  # noqa: BLE001 - telemetry must not stop the process
                log.exception("state publish failed")
            # systemd restarts the whole process if even our own watchdog could not revive the pipeline
            if self.pipeline is not None and self.pipeline.stalled_for() < 5 * self.mcfg.watchdog_stall_s:
                self.notifier.watchdog()

    # --- RPC handlers ----------------------------------------------------------------------------

    async def rpc_status(self, params: dict[str, Any]) -> dict[str, Any]:
        return self.state()

    async def rpc_record_start(self, params: dict[str, Any]) -> dict[str, Any]:
        sid = _session_id(params)
        if self.recorder is not None:
            if self.recorder.session_id == sid:
                return {"session_id": sid, "dir": str(self.recorder.directory), "already": True}
            raise Conflict(
                f"session {self.recorder.session_id} is being recorded; stop it first",
                recording=self.recorder.session_id,
            )
        if not self.mcfg.recording.enabled:
            raise CommandError(503, "recording is disabled in [media.recording]")
        rec_cfg = self.mcfg.recording
        rendition = self.mcfg.renditions[rec_cfg.rendition]
        # A session recorded before is continued, not replaced: same folder, same index entry (re-opened
        # by mark_active), segment numbers going on (SegmentRecorder), so its export holds every part.
        continued = await asyncio.to_thread(lambda: any((self.recordings_dir / sid).glob("*-[0-9]*.*")))
        if self.index is not None:
            await asyncio.to_thread(self.index.mark_active, sid)
        # The constructor creates the session's folder and starts the segment-sync thread.
        self.recorder = await asyncio.to_thread(
            SegmentRecorder,
            self.recordings_dir / sid,
            session_id=sid,
            container=rec_cfg.container,
            segment_s=rec_cfg.segment_s,
            fragment_s=rec_cfg.fragment_s,
            frame_interval=1 / rendition.fps,
            index=self.index,
            has_room=self.retention.has_room if self.retention else None,
            emit=self.emit_threadsafe,
            on_disk_full=self._disk_full_threadsafe,
        )
        assert self.pipeline is not None
        self.pipeline.attach(rec_cfg.rendition, self.recorder)
        await self.emit("media.record.started", {"session_id": sid})
        return {"session_id": sid, "dir": str(self.recorder.directory), "continued": continued}

    async def rpc_record_stop(self, params: dict[str, Any]) -> dict[str, Any]:
        rec = self.recorder
        if rec is None:
            raise Conflict("nothing is being recorded")
        self.recorder = None
        # Closed while still attached: the last segment takes the audio stamped before its last frame.
        closed = await asyncio.to_thread(rec.close, audio_grace_s=RECORD_STOP_AUDIO_GRACE_S)
        if self.pipeline is not None:
            self.pipeline.detach(rec)
        if self.index is not None and rec.session_id:
            await asyncio.to_thread(self.index.mark_closed, rec.session_id)
        body = {
            "session_id": rec.session_id,
            "segments": len(closed),
            "bytes": sum(c.bytes for c in closed),
            "errors": rec.errors,
            "unindexed": [c.path.name for c in rec.unindexed],  # on disk, the index refused them (full)
        }
        await self.emit("media.record.stopped", body)
        return body

    def source_by_name(self, name: object) -> FrameSource:
        """A role (main, backup, active), a configured camera name used by a role, or doccam."""
        if name == "doccam" and self.doccam is not None:
            return self.doccam.preview
        if name == "active" and self.pipeline is not None:
            name = self.pipeline.selector.active
        for role in ROLES:
            if role in self.sources and name in (role, getattr(self.mcfg.sources, role)):
                return self.sources[role]
        have = [*self.sources, *(["doccam"] if self.doccam else [])]
        raise CommandError(404, f"no source {name!r}; have {', '.join(have) or 'none'}")

    async def rpc_snapshot(self, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("source", "main")
        src = self.source_by_name(name)
        captured = src.latest()
        if captured is None or time.monotonic() - captured.t_arrival > 2.0:
            raise CommandError(
                503, f"source {name} has no recent frame ({src.health().reason or 'no frames yet'})"
            )
        now = time.time()
        self._snapshots += 1
        path = self.stills_dir / (
            time.strftime(f"snap-{role_name(src)}-%Y%m%dT%H%M%S", time.gmtime(now))
            + f".{int(now * 1000) % 1000:03d}-{self._snapshots:04d}.jpg"
        )
        size, sha256 = await asyncio.to_thread(store_still, captured.frame, path)
        return {
            "source": name,
            "path": str(path),
            "sha256": sha256,
            "size": size,
            "width": captured.frame.width,
            "height": captured.frame.height,
        }

    async def rpc_doccam_capture(self, params: dict[str, Any]) -> dict[str, Any]:
        if self.doccam is None:
            raise CommandError(404, "no document camera is configured ([drivers.doccam])")
        try:
            still = await asyncio.to_thread(self.doccam.capture_still, self.stills_dir)
        except CameraBusy as exc:
            raise Conflict(str(exc)) from None
        except CameraError as exc:
            raise CommandError(503, str(exc), code=exc.code) from None
        if self.doccam_pictures is not None:
            self.doccam_pictures.publish_still(still)  # the thumbnail, to the villager's screen only
        body = still.as_dict()
        await self.emit("doccam.captured", {k: body[k] for k in ("sha256", "size", "width", "height")})
        return body

    async def rpc_push_start(self, params: dict[str, Any]) -> dict[str, Any]:
        url = params.get("url") or self.mcfg.push.url
        if self.push is not None:
            raise Conflict("a push is already running; push_stop first")
        from edge_media.push import LivePush, PushError

        rendition = self.mcfg.push.rendition

        def on_adapt(step: Any) -> None:  # called on the pipeline thread, before its next frame
            if self.pipeline is not None:
                self.pipeline.encoders[rendition].apply_step(step)

        try:
            push = LivePush(url, emit=self.emit, on_adapt=on_adapt, loop=asyncio.get_running_loop())
        except PushError as exc:  # the URL is checked in one place: push_transport.parse_target
            raise (
                BadRequest(str(exc)) if isinstance(exc, ValueError) else CommandError(503, str(exc))
            ) from None
        self.push = push
        self.problems.pop("push", None)
        self.push_output = PushOutput(push, on_error=lambda msg: self._push_failed(push.target.shown, msg))
        assert self.pipeline is not None
        self.pipeline.attach(rendition, self.push_output)
        return {"target": push.target.shown, "rendition": rendition}

    async def rpc_push_stop(self, params: dict[str, Any]) -> dict[str, Any]:
        push, out = self.push, self.push_output
        if push is None:
            raise Conflict("no push is running")
        if self.pipeline is not None and out is not None:
            self.pipeline.detach(out)
        self.push = self.push_output = None
        self.problems.pop("push", None)
        await asyncio.to_thread(push.stop)
        stats: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            stats = dict(push.stats())
        return {"stopped": True, "stats": stats}

    def _need_index(self) -> Any:
        if self.index is None:
            raise CommandError(503, "the recording index is not available")
        return self.index

    async def rpc_export(self, params: dict[str, Any]) -> dict[str, Any]:
        sid = _session_id(params)
        index = self._need_index()
        out = self.media_dir / "exports" / f"{sid}.mp4"

        rec = self.recorder
        busy = [rec.current_path] if rec is not None and rec.session_id == sid and rec.current_path else []

        def export() -> Any:
            out.parent.mkdir(parents=True, exist_ok=True)
            return index.export(sid, out, directory=self.recordings_dir / sid, recording=busy)

        try:
            res = await asyncio.to_thread(export)
        except LookupError as exc:
            raise CommandError(404, str(exc)) from None
        except RecordingDiskFull as exc:
            if self.retention is not None:
                await self.retention.disk_full("export", exc)
            raise CommandError(507, str(exc)) from None
        return {
            "session_id": sid,
            "path": str(res.path),
            "bytes": res.bytes,
            "sha256": res.sha256,
            "segments": res.segments,
            "duration_s": round(res.duration_s, 3),
            "complete": res.complete,  # False: `missing` says exactly what the file lacks
            "missing": res.missing,
            "unindexed": res.unindexed,
        }

    async def rpc_upload(self, params: dict[str, Any]) -> dict[str, Any]:
        sid = _session_id(params)
        url = params.get("url")
        index = self._need_index()
        from edge_media.recording_upload import check_upload_url
        from edge_media.recordings import upload

        try:
            check_upload_url(url)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        if not await asyncio.to_thread(index.segments, sid):
            raise CommandError(404, f"no recording for session {sid}")

        async def run() -> None:
            try:
                await upload(index, sid, url, emit=self.emit)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - upload() reports its own events
                log.warning("upload of %s failed: %s", sid, exc)

        self._spawn(run())
        return {"status": 202, "session_id": sid, "upload": "started"}

    async def rpc_sim(self, params: dict[str, Any]) -> dict[str, Any]:
        action, name = params.get("action"), params.get("source", "main")
        if action not in FAULTS:
            raise BadRequest(f"action must be one of {', '.join(FAULTS)}")
        if name == "pipeline":
            if action != "stall" or self.pipeline is None:
                raise BadRequest("the pipeline only takes action 'stall'")
            self.pipeline.inject_stall(
                float(params.get("seconds", 5.0))
                if isinstance(params.get("seconds", 5.0), int | float)
                else 5.0
            )
            return {"source": "pipeline", "fault": "stall"}
        src = self.source_by_name(name)
        if not isinstance(src, SyntheticCamera):
            raise Conflict(
                f"source {name} is a real camera ({src.backend}); sim acts on simulated cameras only"
            )
        src.inject(action)
        await self.emit("media.sim", {"source": name, "action": action})
        return {"source": name, "fault": src.fault}

    # --- the call with the clerk ----------------------------------------------------------------

    async def rpc_call_start(self, params: dict[str, Any]) -> dict[str, Any]:
        from pydantic import ValidationError

        from edge_media.call.session import CallSession

        sid = _session_id(params)
        try:
            target = CallTarget.model_validate(params.get("media"))
            target.check_url(self.mcfg.call.allow_plain_loopback)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "media"
            raise BadRequest(f"media.{where}: {first['msg']}", field=f"media.{where}") from None
        except ValueError as exc:
            raise BadRequest(f"media.url: {exc}", field="media.url") from None
        if self.call is not None:
            if self.call.session_id != sid:
                raise Conflict(f"a call for session {self.call.session_id} is running")
            await self.rpc_call_stop({"reason": "restarted"})  # the platform sent a new media object
        call = CallSession(
            sid,
            target,
            self.mcfg.call,
            doccam=self.doccam,
            has_mic=self.audio is not None,
            emit=self._queue_event,
            on_change=self.publish_state,
            on_preview=self._publish_preview,
        )
        self.call = call
        call.start()
        if self.pipeline is not None:
            self._attach_call(self.pipeline, call)
        self.publish_state()
        return call.state()

    async def rpc_call_stop(self, params: dict[str, Any]) -> dict[str, Any]:
        call = self.call
        if call is None:
            raise Conflict("no call is running")
        sid = params.get("session_id")
        if sid is not None and sid != call.session_id:
            raise Conflict(f"the running call is session {call.session_id}, not {sid}")
        self._detach_call(self.pipeline, call)
        self.call = None
        reason = params.get("reason")
        summary = await call.stop(reason if isinstance(reason, str) else "ended")
        self.publish_state()
        return summary

    def _publish_preview(self, w: int, h: int, rgb: bytes) -> None:
        import base64

        call = self.call
        if call is None:
            return
        self._preview_seq += 1
        payload = {
            "session_id": call.session_id,
            "w": w,
            "h": h,
            "rgb": base64.b64encode(rgb).decode("ascii"),
            "seq": self._preview_seq,
        }
        self.bus.publish(PREVIEW_TOPIC, payload, qos=0)


async def serve(cfg: MediaProcessConfig) -> int:
    return await MediaService(cfg).run()
