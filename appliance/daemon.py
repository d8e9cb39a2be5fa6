"""kiosk-appliance: the daemon (``kiosk run``).

Start order: config -> logs -> outbox -> local bus (+ durable event intake) -> subsystems (peripherals,
media control, service session) -> fleet link. ``READY=1`` once every subsystem started or reported
itself degraded; ``WATCHDOG=1`` only while the critical loops (fleet link, intake, outbox thread, the
event loop itself) are alive; ``STATUS=`` on health changes; ``STOPPING=1`` on SIGTERM, after which
``offline`` is published and the outbox flushed. SIGHUP reloads the config file.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from appliance import __version__, sysinfo
from appliance import config as config_mod
from appliance.commands import Accepted, CommandDispatcher
from appliance.config import KioskConfig
from appliance.desired import HOT, DesiredStore, changed_keys, evaluate, parse_desired
from appliance.fleet import FleetLink
from appliance.intake import EventIntake
from appliance.messages import Birth, ConfigReported, Telemetry, conform
from appliance.outbox import Outbox
from appliance.subsystem import BusHandler, Listener, Subsystem
from drivers.base import CommandHandler
from kiosk_core import logs
from kiosk_core.commands import CommandSpec, NoParams, Params
from kiosk_core.errors import BadRequest, CommandError, ConfigError, StorageError
from kiosk_core.health import Health, HealthStatus
from kiosk_core.localbus import FEED_PREFIX, STATE_PREFIX, LocalBus, dumps
from kiosk_core.mqtt import Message
from kiosk_core.payload import finite
from kiosk_core.sdnotify import Notifier
from kiosk_core.tasks import TaskSet, wait_for

log = logging.getLogger("kiosk.appliance")

# "module:Class" of every subsystem, started in this order and stopped in reverse.
SUBSYSTEMS = (
    "appliance.peripherals:Peripherals",
    "appliance.media_control:MediaControl",
    "appliance.session.service:SessionService",
    "appliance.failover.service:Failover",
    "appliance.diagnostics:Diagnostics",
    "appliance.ota:OtaService",
)
SUBSYSTEM_START_TIMEOUT_S = 5.0
# Retained on the local bus: "ready" once events are taken durably, "stopped" on a clean stop,
# "lost" (the local Will) if the appliance dies.
APPLIANCE_STATE = f"{STATE_PREFIX}/appliance"
MAX_LOG_REPLY_BYTES = 200_000
STORAGE_CHECK_S = 2.0


class LogLevelParams(Params):
    level: str = Field(pattern=r"(?i)^(DEBUG|INFO|WARNING|ERROR)$")
    logger: str = Field("", max_length=100, pattern=r"^[A-Za-z0-9_.]*$")


class CollectLogsParams(Params):
    lines: int = Field(200, ge=1)


class RebootParams(Params):
    confirm: Literal[True] = Field(description='must be true: "confirm": true')
    delay_s: float = Field(2, ge=0, le=300)


def public(data: Mapping[str, Any]) -> dict[str, Any]:
    """What of an event may leave the appliance. Keys starting with ``_`` are for in-process listeners
    only (e.g. a full identity); in the rest every resident ID number, in keys and values at any
    depth and inside text, is masked (``3308**********123X``)."""
    return logs.mask_id_numbers_in({k: v for k, v in data.items() if not k.startswith("_")})


def outgoing(type: str, data: Mapping[str, Any]) -> tuple[str, dict[str, Any], str]:
    """The one path of every event into the outbox and onto the local feed, the appliance's own and
    the producers': (type, data, JSON text) masked by ``public``, non-finite numbers as null (logged)."""
    pub, where = finite(public(data))
    if where:
        log.warning("event %s: non-finite number(s) sent as null: %s", type, ", ".join(where[:5]))
    return logs.mask_id_numbers(type), pub, dumps(pub).decode()


class Appliance:
    """The running daemon; also the ``Context`` its subsystems see."""

    def __init__(self, config_path: str | os.PathLike[str] | None = None) -> None:
        self.config_path = config_mod.resolve_path(config_path)
        self.started_mono = time.monotonic()
        self.boot_id = sysinfo.boot_id()
        self.notifier = Notifier()
        self.log = log
        self._listeners: list[tuple[str, Listener]] = []
        self.subsystems: list[Subsystem] = []
        self._constructed: list[Subsystem] = []
        self._subsystem_errors: dict[str, str] = {}
        self._tasks = TaskSet("appliance", log)
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._cpu = sysinfo.CpuMeter()
        self._last_status = ""
        self.tail: logs.TailHandler | None = None
        self.rejected_local = 0
        self._nonfinite: list[str] = []

    # --- Context -----------------------------------------------------------------------------------

    async def emit(self, type: str, data: dict[str, Any], *, durable: bool = True) -> None:
        out_type, pub, text = outgoing(type, data)
        seq = await self.outbox.append(out_type, text) if durable else None
        self.bus.publish(f"{FEED_PREFIX}/{out_type}", {"type": out_type, "seq": seq, "data": pub}, qos=0)
        await self._notify_listeners(type, data)

    async def _record_local(self, type: str, data: dict[str, Any], producer_id: str | None) -> int | None:
        # Not re-published on the feed: local producers' events are already visible on kiosk/local/event.
        out_type, _, text = outgoing(type, data)
        seq = await self.outbox.append(out_type, text, producer_id=producer_id)
        if seq is not None:
            await self._notify_listeners(type, data)
        return seq

    async def _reject_local(self, reason: str, size: int) -> None:
        self.rejected_local += 1
        # The reason may quote the producer's payload: masked before it is cut to size.
        data = {"reason": logs.mask_id_numbers(reason)[:300], "bytes": size}
        etype, _, text = outgoing("bus.event_rejected", data)
        await self.outbox.append(etype, text)

    async def _notify_listeners(self, type: str, data: dict[str, Any]) -> None:
        for prefix, listener in list(self._listeners):
            if type.startswith(prefix):
                try:
                    result = listener(type, data)
                    if asyncio.iscoroutine(result):
                        await result
                except Exception:  # noqa: BLE001 - one listener's bug must not stop the others
                    log.exception("listener for %r failed on %s", prefix, type)

    def listen(self, prefix: str, listener: Listener) -> None:
        self._listeners.append((prefix, listener))

    def publish_state(self, name: str, state: dict[str, Any] | None) -> None:
        self.bus.publish(f"{STATE_PREFIX}/{name}", b"" if state is None else dumps(state), qos=1, retain=True)

    def publish_local(
        self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False
    ) -> None:
        self.bus.publish(topic, payload, qos=qos, retain=retain)

    def subscribe_local(self, topic_filter: str, handler: BusHandler) -> None:
        self.bus.subscribe(topic_filter, lambda msg: handler(msg.topic, msg.payload))

    def register_rpc(self, service: str, handlers: Mapping[str, CommandHandler]) -> None:
        self.bus.serve(service, handlers)

    async def call_rpc(
        self, service: str, method: str, params: dict[str, Any], timeout_s: float = 5.0
    ) -> dict[str, Any]:
        return await self.bus.call(service, method, params, timeout_s)

    @property
    def data_dir(self) -> Path:
        return self.config.storage.data_dir

    # --- start / stop ------------------------------------------------------------------------------

    def _load_config(self) -> KioskConfig:
        base = config_mod.load(self.config_path)
        self.desired = DesiredStore(base.storage.data_dir)
        self.desired.load()
        if self.desired.overlay:
            try:
                return config_mod.load(self.config_path, overlay=self.desired.overlay)
            except ConfigError as exc:
                log.error(
                    "config: the platform's desired v%d no longer fits the local file; running without "
                    "it:\n%s",
                    self.desired.version,
                    exc,
                )
        return base

    async def start(self) -> None:
        self.config = self._load_config()
        cfg = self.config
        self.tail = logs.setup(cfg.logging.level, cfg.logging.tail_lines)
        log.info(
            "kiosk-appliance %s starting: device %s (%s, %s), config %s",
            __version__,
            cfg.device.id,
            cfg.device.name,
            cfg.device.role,
            self.config_path,
        )
        cfg.storage.data_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = await Outbox.open(
            cfg.storage.data_dir / "outbox.sqlite3",
            quota_bytes=int(cfg.storage.outbox_quota_mb * 1e6),
            clock_synced=sysinfo.clock_synced,
            boot_id=self.boot_id,
            reserve_bytes=int(cfg.storage.reserve_mb * (1 << 20)),
        )
        self.bus = LocalBus(
            cfg.bus.host,
            cfg.bus.port,
            client_id=f"appliance-{cfg.device.id}",
            name="bus",
            will=(APPLIANCE_STATE, {"state": "lost", "boot_id": self.boot_id}),
        )
        self.dispatcher = CommandDispatcher(
            self.outbox,
            self._send_reply,
            self.emit,
            reply_prefixes=cfg.fleet.reply_prefixes,
            retention_s=cfg.storage.command_retention_days * 86400,
        )
        self.fleet = FleetLink(
            cfg,
            self.outbox,
            boot_id=self.boot_id,
            birth=self.birth,
            on_command=self._on_command,
            on_desired=self._on_desired,
        )
        self.intake = EventIntake(
            cfg.bus.host,
            cfg.bus.port,
            client_id=f"appliance-intake-{cfg.device.id}",
            record=self._record_local,
            reject=self._reject_local,
        )
        self._register_builtins()
        await self.bus.start(wait_s=2.0)
        self.intake.start()
        await self._start_subsystems()
        self.fleet.start()
        self._tasks.spawn(self._telemetry_loop(), name="telemetry")
        self._tasks.spawn(self._housekeeping(), name="housekeeping")
        self._tasks.spawn(self._watch_storage(), name="storage")
        # Producers and the UI learn here that events are being taken durably again.
        with contextlib.suppress(TimeoutError):
            await wait_for(self.intake.subscribed.wait(), 5.0)
        self.bus.publish(
            APPLIANCE_STATE,
            {
                "state": "ready",
                "boot_id": self.boot_id,
                "pid": os.getpid(),
                "since": round(time.time(), 3),
                "firmware": __version__,
            },
            retain=True,
        )
        await self.emit(
            "device.started",
            {
                "firmware": __version__,
                "boot_id": self.boot_id,
                "role": cfg.device.role,
                "config_version": self.desired.version,
            },
        )
        self.notifier.ready(self._status_line())
        if self.notifier.watchdog_s:
            self._tasks.spawn(self._watchdog_loop(), name="watchdog")
        log.info("ready: %s", self._status_line())

    async def _start_subsystems(self) -> None:
        # Every module is imported before the first subsystem starts: an import (the session's pulls in
        # cryptography) must not delay a later subsystem's listeners while an earlier one already emits
        # (the card reader's first read).
        classes: list[tuple[str, Any]] = []
        for spec in SUBSYSTEMS:
            module, _, cls_name = spec.partition(":")
            try:
                classes.append((spec, getattr(importlib.import_module(module), cls_name)))
            except (ImportError, AttributeError) as exc:
                log.error("subsystem %s unavailable: %s", spec, exc)
                self._subsystem_errors[spec] = f"not installed: {exc}"
        # All constructed, then all prepared, then started in order: a subsystem may wire itself to
        # another before that one starts (failover puts the session on standby).
        made: list[tuple[str, Subsystem]] = []
        for spec, cls in classes:
            try:
                made.append((spec, cls(self)))
            except Exception as exc:  # noqa: BLE001 - a broken part degrades the kiosk, it does not stop it
                log.exception("subsystem %s failed to start; continuing degraded", spec)
                self._subsystem_errors[spec] = f"start failed: {exc}"
        self._constructed = [sub for _, sub in made]
        for spec, sub in list(made):
            try:
                sub.prepare()
            except Exception as exc:  # noqa: BLE001
                log.exception("subsystem %s failed to prepare; continuing degraded", spec)
                self._subsystem_errors[spec] = f"start failed: {exc}"
                made.remove((spec, sub))
        for spec, sub in made:
            try:
                self.subsystems.append(sub)
                await wait_for(sub.start(), SUBSYSTEM_START_TIMEOUT_S)
                self.dispatcher.register_all(sub.commands().values())
            except Exception as exc:  # noqa: BLE001 - a broken part degrades the kiosk, it does not stop it
                log.exception("subsystem %s failed to start; continuing degraded", spec)
                self._subsystem_errors[spec] = f"start failed: {exc}"

    async def stop(self) -> None:
        self.notifier.stopping()
        log.info("stopping")
        for sub in reversed(self.subsystems):
            try:
                await wait_for(sub.stop(), 5)
            except Exception:  # noqa: BLE001
                log.exception("subsystem %s did not stop cleanly", sub.name)
        with contextlib.suppress(StorageError):
            await self.emit("device.stopping", {"reason": "SIGTERM"})
        # Give the drain a moment to deliver what is ready before saying goodbye.
        deadline = time.monotonic() + 2.0
        while self.fleet.connected and self.outbox.depth and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await self.fleet.stop()
        await self._tasks.close()
        await self.intake.stop()
        await self.bus.stop(
            final=(
                APPLIANCE_STATE,
                {"state": "stopped", "boot_id": self.boot_id, "since": round(time.time(), 3)},
            )
        )
        await self.outbox.close()
        log.info("stopped")

    async def run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        watch_slow_callbacks(loop)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload.set)
        await self.start()
        while not self._stop.is_set():
            reload = asyncio.create_task(self._reload.wait())
            stop = asyncio.create_task(self._stop.wait())
            await asyncio.wait({reload, stop}, return_when=asyncio.FIRST_COMPLETED)
            reload.cancel()
            stop.cancel()
            if self._reload.is_set() and not self._stop.is_set():
                self._reload.clear()
                await self.reload_file()
        await self.stop()

    # --- config ------------------------------------------------------------------------------------

    async def reload_file(self) -> list[str]:
        """SIGHUP: re-read the file (plus the stored platform overlay); keep running on errors."""
        self.notifier.reloading()
        try:
            new = await asyncio.to_thread(
                config_mod.load, self.config_path, overlay=self.desired.overlay or None
            )
        except ConfigError as exc:
            log.error("reload refused, still running the previous config:\n%s", exc)
            self.notifier.ready(self._status_line())
            return []
        restart = await self._apply(new)
        if restart:
            log.warning("reload: these changes need a restart to take effect: %s", ", ".join(restart))
        await self.emit("config.reloaded", {"source": "file", "restart_required": restart})
        self.notifier.ready(self._status_line())
        return restart

    async def _apply(self, new: KioskConfig) -> list[str]:
        changed = changed_keys(self.config, new)
        restart: list[str] = []
        sub_restart: list[str] = []
        for sub in self.subsystems:
            try:
                sub_restart += await sub.reconfigure(new)
            except Exception:  # noqa: BLE001
                log.exception("subsystem %s failed to reconfigure", sub.name)
        for key in changed:
            section = key.split(".")[0]
            if key in HOT:
                continue
            if section in ("drivers", "media", "session", "ota"):
                if any(key == r or key.startswith(r + ".") for r in sub_restart):
                    restart.append(key)
                continue
            restart.append(key)
        old, self.config = self.config, new
        if old.logging.level != new.logging.level:
            logging.getLogger().setLevel(new.logging.level)
        if old.fleet.drain_rate_per_s != new.fleet.drain_rate_per_s:
            self.fleet.set_drain_rate(new.fleet.drain_rate_per_s)
        self.outbox.quota_bytes = int(new.storage.outbox_quota_mb * 1e6)
        self.dispatcher.retention_s = new.storage.command_retention_days * 86400
        return restart

    async def _on_desired(self, msg: Message) -> None:
        if not msg.payload:
            return  # the platform cleared the retained desired document
        try:
            version, overlay = parse_desired(msg.payload)
        except ValueError as exc:
            log.warning("config/desired rejected: %s", exc)
            await self._report(
                {
                    "version": None,
                    "result": "rejected",
                    "reason": "malformed",
                    "errors": [str(exc)],
                    "running_version": self.desired.version,
                }
            )
            return
        if version <= self.desired.version:
            if version < self.desired.version:
                log.info("config/desired v%d ignored: v%d is already applied", version, self.desired.version)
            return
        verdict = await asyncio.to_thread(evaluate, self.config_path, self.config, version, overlay)
        new, errors, changed = verdict.config, verdict.errors, verdict.changed
        if new is None:
            log.warning(
                "config/desired v%d rejected (%s):\n  %s", version, verdict.reason, "\n  ".join(errors)
            )
            locked = {"keys": verdict.keys} if verdict.keys else {}
            await self._report(
                {
                    "version": version,
                    "result": "rejected",
                    "reason": verdict.reason,
                    **locked,
                    "errors": errors,
                    "running_version": self.desired.version,
                }
            )
            await self.emit(
                "config.rejected",
                {"version": version, "reason": verdict.reason, **locked, "errors": errors[:20]},
            )
            return
        # Stored before it is applied: a change that could not be stored must not be live (a restart
        # would silently undo it, and the platform was told "failed").
        report: dict[str, Any] = {
            "version": version,
            "result": "applying",
            "errors": [],
            "changed": changed,
        }
        try:
            await self.desired.save(version, overlay, report)
        except OSError as exc:
            log.error("config/desired v%d could not be stored: %s", version, exc)
            await self._report(
                {
                    "version": version,
                    "result": "failed",
                    "errors": [f"storage: {exc}"],
                    "running_version": self.desired.version,
                }
            )
            return
        restart = await self._apply(new)
        report = {
            **report,
            "result": "pending_restart" if restart else "applied",
            "restart_required": restart,
        }
        try:
            await self.desired.save(version, overlay, report)
        except OSError as exc:  # applied and stored already; only the stored report is older
            log.warning("config/desired v%d: final report not stored: %s", version, exc)
        log.info(
            "config/desired v%d %s (changed: %s)", version, report["result"], ", ".join(changed) or "none"
        )
        await self._report(report)
        await self.emit(
            "config.applied", {"version": version, "changed": changed, "restart_required": restart}
        )
        await self.fleet.rebirth()

    async def _report(self, report: dict[str, Any]) -> None:
        reported = conform(ConfigReported, {**report, "ts": round(time.time(), 3)})
        await self.fleet.publish_retained(self.fleet.t_reported, dumps(reported))

    # --- commands ----------------------------------------------------------------------------------

    async def _on_command(self, name: str, msg: Message) -> None:
        await self.dispatcher.handle(name, msg)

    async def _send_reply(self, topic: str, payload: bytes, correlation: bytes | None) -> None:
        await self.fleet.send_reply(topic, payload, correlation)

    def _register_builtins(self) -> None:
        for name, summary, params, handler in (
            ("ping", "liveness: pong, epoch and device time", NoParams, self._cmd_ping),
            (
                "get_status",
                "health, uptime, outbox depth, config version, firmware",
                NoParams,
                self._cmd_status,
            ),
            ("rebirth", "publish the retained birth again", NoParams, self._cmd_rebirth),
            ("set_log_level", "change a logger's level until restart", LogLevelParams, self._cmd_log_level),
            ("collect_logs", "the last lines of the (masked) log", CollectLogsParams, self._cmd_logs),
            (
                "reboot",
                "reboot the device after delay_s (202, then device.reboot_requested)",
                RebootParams,
                self._cmd_reboot,
            ),
        ):
            self.dispatcher.register(
                CommandSpec(
                    name=name,
                    summary=summary,
                    params=params,
                    handler=handler,
                    personal=False,
                    process="appliance",
                )
            )

    async def _cmd_ping(self, params: NoParams) -> dict[str, Any]:
        return {"pong": True, "epoch": self.outbox.epoch, "ts": round(time.time(), 3)}

    async def _cmd_status(self, params: NoParams) -> dict[str, Any]:
        return {
            "health": self.health_summary(),
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "outbox": {"depth": self.outbox.depth, "oldest_age_s": await self.outbox.oldest_age_s()},
            "config_version": self.desired.version,
            "epoch": self.outbox.epoch,
            "firmware": __version__,
        }

    async def _cmd_rebirth(self, params: NoParams) -> dict[str, Any]:
        if not await self.fleet.rebirth():
            raise CommandError(500, "birth could not be published")
        return {"epoch": self.outbox.epoch}

    async def _cmd_log_level(self, params: LogLevelParams) -> dict[str, Any]:
        level, logger = params.level.upper(), params.logger
        logging.getLogger(logger or None).setLevel(level)
        log.warning("log level of %s set to %s by the platform", logger or "root", level)
        return {"logger": logger or "root", "level": level}

    async def _cmd_logs(self, params: CollectLogsParams) -> dict[str, Any]:
        assert self.tail is not None
        cap = self.config.logging.tail_lines
        if params.lines > cap:
            raise BadRequest(f"lines must be an integer from 1 to {cap}", field="lines")
        tail, truncated = self.tail.tail(params.lines, MAX_LOG_REPLY_BYTES)
        return {"lines": tail, "truncated": truncated}

    async def _cmd_reboot(self, params: RebootParams) -> Accepted:
        delay = params.delay_s
        await self.emit("device.reboot_requested", {"delay_s": delay})

        async def reboot() -> dict[str, Any]:
            await asyncio.sleep(delay)
            await self._reboot_now()
            return {"rebooting": True}

        return Accepted({"rebooting_in_s": delay}, then=reboot)

    def subsystem(self, name: str) -> Subsystem | None:
        for sub in self._constructed:
            if sub.name == name:
                return sub
        return None

    async def reboot(self, reason: str) -> None:
        await self.emit("device.reboot_requested", {"delay_s": 0, "reason": reason})
        await self._reboot_now()

    async def _reboot_now(self) -> None:
        """The one reboot path: flush the outbox, run ``KIOSK_REBOOT_COMMAND`` (``systemctl reboot``)."""
        await self.outbox.flush()
        command = os.environ.get("KIOSK_REBOOT_COMMAND", "systemctl reboot").split()
        log.warning("rebooting now (%s)", " ".join(command))
        proc = await asyncio.create_subprocess_exec(*command, stdin=subprocess.DEVNULL)
        rc = await proc.wait()
        if rc != 0:
            raise CommandError(500, f"{' '.join(command)} exited with {rc}")

    async def rebirth(self) -> None:
        await self.fleet.rebirth()

    def busy(self) -> list[str]:
        reasons = []
        for sub in self.subsystems:
            try:
                reason = sub.busy()
            except Exception:  # noqa: BLE001 - a broken check must not block updates forever; logged
                log.exception("subsystem %s: busy() failed", sub.name)
                continue
            if reason:
                reasons.append(reason)
        return reasons

    # --- health, birth, telemetry ------------------------------------------------------------------

    def health_map(self) -> dict[str, Health]:
        out: dict[str, Health] = {
            "fleet": Health(HealthStatus.OK)
            if self.fleet.connected
            else Health(
                HealthStatus.DEGRADED, f"central broker unreachable: {self.fleet.last_error or 'connecting'}"
            ),
            "local_bus": Health(HealthStatus.OK)
            if self.bus.connected
            else Health(
                HealthStatus.DEGRADED,
                f"local mosquitto {self.config.bus.host}:{self.config.bus.port} "
                "not answering: check the mosquitto service",
            ),
        }
        if self.outbox.full:
            out["storage"] = Health(
                HealthStatus.DEGRADED,
                f"the filesystem under {self.config.storage.data_dir} is full "
                f"({self.outbox.free_bytes() // 1024} KiB free): stored telemetry, then the oldest events "
                "are dropped (gap events say which); free space there (old recordings, logs) to recover",
            )
        else:
            out["storage"] = Health(HealthStatus.OK)
        for spec, err in self._subsystem_errors.items():
            out[spec.split(":")[1]] = Health(HealthStatus.DEGRADED, err)
        for sub in self.subsystems:
            try:
                out.update(sub.health())
            except Exception as exc:  # noqa: BLE001
                out[sub.name] = Health(HealthStatus.DEGRADED, f"health check failed: {exc}")
        return out

    def health_summary(self) -> dict[str, Any]:
        return {name: h.as_dict() for name, h in self.health_map().items()}

    def _status_line(self) -> str:
        bad = [f"{n} {h.status}" for n, h in self.health_map().items() if h.status != HealthStatus.OK]
        return "all ok" if not bad else "degraded: " + ", ".join(bad)

    def inventory(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for sub in self.subsystems:
            with contextlib.suppress(Exception):
                items += sub.inventory()
        return items

    def birth(self) -> dict[str, Any]:
        cfg = self.config
        caps = ["events", "commands", "config", "telemetry"]
        for sub in self.subsystems:
            with contextlib.suppress(Exception):
                caps += sub.capabilities()
        birth = {
            "epoch": self.outbox.epoch,
            "boot_id": self.boot_id,
            "firmware": __version__,
            "device": {
                "id": cfg.device.id,
                "name": cfg.device.name,
                "role": cfg.device.role,
                "region": list(cfg.device.region),
            },
            "drivers": self.inventory(),
            "capabilities": sorted(set(caps)),
            "commands": self.dispatcher.names,
            "config_version": self.desired.version,
            "time_synced": sysinfo.clock_synced(),
            # Presence does not rest on the Will alone: a consumer counts the device lost when its
            # newest telemetry is older than PRESENCE_INTERVALS times this (docs/mqtt.md).
            "telemetry_interval_s": cfg.fleet.telemetry_interval_s,
            "ts": round(time.time(), 3),
        }
        for sub in self.subsystems:
            try:
                birth.update(sub.birth())
            except Exception:  # noqa: BLE001 - a subsystem's bug must not keep the device from birth
                log.exception("subsystem %s: birth() failed", sub.name)
        return conform(Birth, birth)

    async def telemetry(self) -> dict[str, Any]:
        cfg = self.config
        subs: dict[str, Any] = {}
        for sub in self.subsystems:
            with contextlib.suppress(Exception):
                extra = sub.telemetry()
                if extra:
                    subs[sub.name] = extra
        sample = {
            "ts": sysinfo.now_ts(),
            "epoch": self.outbox.epoch,
            "cpu_percent": self._cpu.percent(),
            "load": sysinfo.loadavg(),
            "memory": sysinfo.memory(),
            "rss_bytes": sysinfo.rss_bytes(),
            "disk": sysinfo.disk(cfg.storage.data_dir),
            "storage": self._storage_state(),
            "soc_temp_c": sysinfo.soc_temperature_c(),
            "uptime_s": sysinfo.uptime_s(),
            "appliance_uptime_s": round(time.monotonic() - self.started_mono, 1),
            "outbox": {
                "depth": self.outbox.depth,
                "oldest_age_s": await self.outbox.oldest_age_s(),
                "bytes": self.outbox.stored_bytes,
                "quota_bytes": self.outbox.quota_bytes,
                "telemetry_stored": self.outbox.telemetry_depth,
            },
            "dropped": {
                "events": self.outbox.dropped_events,
                "telemetry": self.outbox.dropped_telemetry,
                "local_rejected": self.rejected_local,
            },
            "commands": dict(self.dispatcher.counts),
            "peripherals": self.health_summary(),
            **({"subsystems": subs} if subs else {}),
        }
        # A sensor or a subsystem's measurement may be NaN; JSON has none: null, logged when it changes.
        sample, where = finite(sample)
        if where != self._nonfinite:
            self._nonfinite = where
            if where:
                log.warning("telemetry: non-finite value(s) sent as null: %s", ", ".join(where[:5]))
        return conform(Telemetry, sample)

    async def _telemetry_loop(self) -> None:
        # The first sample waits briefly for the link (a boot-time sample then goes out live); after
        # that sampling never depends on the link: offline samples are stored and sent later.
        with contextlib.suppress(TimeoutError):
            await wait_for(self.fleet.first_online.wait(), 2.0)
        while True:
            try:
                payload = dumps(await self.telemetry())
                await self.fleet.publish_telemetry(payload)
                status = self._status_line()
                if status != self._last_status:
                    self._last_status = status
                    self.notifier.status(status)
                    log.info("health: %s", status)
            except StorageError as exc:
                log.error("telemetry not kept: %s", exc)
            await asyncio.sleep(self.config.fleet.telemetry_interval_s)

    async def _watch_storage(self) -> None:
        """Notice space coming back (the reserve is recreated, ``storage`` turns ok) within seconds."""
        reported = False
        while True:
            try:
                full = await self.outbox.check_space()
            except StorageError as exc:
                log.error("storage check failed: %s", exc)
            else:
                if full != reported and await self._note_storage(full):
                    reported = full
            await asyncio.sleep(STORAGE_CHECK_S)

    async def _note_storage(self, full: bool) -> bool:
        """Record ``storage.full``/``storage.recovered``; False when it could not be stored (the
        watcher tries again at its next check)."""
        try:
            await self.emit("storage.full" if full else "storage.recovered", self._storage_state())
        except StorageError as exc:
            log.warning("storage: %s not recorded yet: %s", "full" if full else "recovered", exc)
            return False
        return True

    def _storage_state(self) -> dict[str, Any]:
        return {
            "full": self.outbox.full,
            "free_bytes": self.outbox.free_bytes(),
            "data_dir": str(self.config.storage.data_dir),
        }

    async def _housekeeping(self) -> None:
        while True:
            with contextlib.suppress(StorageError):
                pruned = await self.dispatcher.prune()
                if pruned:
                    log.info("forgot %d command id(s) older than the retention", pruned)
            await asyncio.sleep(3600)

    async def _watchdog_loop(self) -> None:
        assert self.notifier.watchdog_s
        interval = self.notifier.watchdog_s / 3
        while True:
            alive = self.fleet.alive and self.intake.alive and self.bus.alive
            if alive:
                try:
                    # The outbox thread must answer too: a wedged disk is a dead appliance.
                    await wait_for(self.outbox.oldest_age_s(), interval)
                except (TimeoutError, StorageError):
                    alive = False
            if alive:
                self.notifier.watchdog()
            else:
                log.error("watchdog: a critical loop is not alive; not petting the watchdog")
            await asyncio.sleep(interval)


def watch_slow_callbacks(loop: asyncio.AbstractEventLoop) -> None:
    """``KIOSK_ASYNCIO_SLOW_MS``: with asyncio's debug mode on (``PYTHONASYNCIODEBUG=1``), asyncio logs
    every callback that holds the loop longer than this ("Executing <...> took N seconds"). The fleet
    link's budget is 50 ms; tests/test_loop_blocking.py uses this. Unset, nothing changes."""
    value = os.environ.get("KIOSK_ASYNCIO_SLOW_MS")
    if not value:
        return
    try:
        loop.slow_callback_duration = float(value) / 1000
    except ValueError:
        log.warning("KIOSK_ASYNCIO_SLOW_MS=%r ignored: not a number of milliseconds", value)
        return
    state = "on" if loop.get_debug() else "off (set PYTHONASYNCIODEBUG=1)"
    log.warning("asyncio debug %s: callbacks holding the loop over %s ms are logged", state, value)


def main(config_path: str | None = None) -> int:
    logs.setup()
    try:
        app = Appliance(config_path)
        asyncio.run(app.run_until_signalled())
    except ConfigError as exc:
        log.error("%s", exc)
        return 78  # EX_CONFIG: systemd's RestartPreventExitStatus keeps a typo from looping
    except StorageError as exc:
        log.error("%s", exc)
        return 74  # EX_IOERR
    return 0
