"""``OtaService``: firmware updates of the kiosk's A/B root filesystem through RAUC (docs/ota.md).

The platform's ``firmware.update {url, sha256, when}`` is answered 202; then the bundle is downloaded
into ``data_dir/ota/`` (resumed where an earlier attempt stopped, at most ``[ota] max_bundle_mb``), its
SHA-256 checked against the platform's before RAUC sees it, and handed to RAUC's ``InstallBundle``.
RAUC writes the other slot and activates it; the kiosk reports ``firmware.progress`` and
``firmware.installed``, waits until no villager is being served and reboots through the appliance's
reboot path.

After that boot the new slot is **on trial**: it is marked good (``Mark("good", "booted")``) only once
the fleet link is online and every peripheral that was ok before the update is ok again, within
``[ota] health_timeout_s``; otherwise ``Mark("bad", "booted")`` and a reboot bring the old slot back,
and that boot reports ``firmware.rolled_back``. What the update has done so far is kept in
``data_dir/ota/update.json`` (written atomically at each phase), so a restart or a power cut at any
point ends in a known state: an install cut short leaves the old slot booted and primary, and says so
with ``firmware.failed``.

Without RAUC on the configured bus the kiosk runs as before: ``firmware.update`` answers 503 and birth
says ``ota.updates: "unavailable"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from appliance import __version__
from appliance.commands import Accepted
from appliance.rauc import Progress, Rauc, Slot
from appliance.subsystem import Context, Subsystem
from kiosk_core.commands import CommandSpec, Params
from kiosk_core.errors import BadRequest, CommandError, OtaError, UpdaterUnavailable
from kiosk_core.fsutil import write_atomic
from kiosk_core.health import Health, HealthStatus
from kiosk_core.tasks import wait_for
from kiosk_core.urls import is_loopback_host, redact_url

RECORD = "update.json"
CONNECT_TIMEOUT_S = 3.0
RECONNECT_S = (5.0, 60.0)  # first retry, cap
INSTALL_TIMEOUT_S = 3600.0
IDLE_POLL_S = 1.0
TRIAL_POLL_S = 1.0
PROGRESS_STEP = 10  # percent between firmware.progress events (and 100)
CHUNK = 256 * 1024


class UpdateParams(Params):
    url: str = Field(
        min_length=1, max_length=2000, description="https:// (file:// and loopback http:// on a bench)"
    )
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$", description="of the bundle file, 64 hex digits")
    when: Literal["idle", "now_if_idle"] = Field(
        "idle", description="idle: reboot once no villager is served; now_if_idle: 409 while one is"
    )
    size: int | None = Field(None, ge=1, description="the bundle's size in bytes, when the platform knows it")


def check_source(url: str, *, allow_plain_loopback: bool) -> urllib.parse.SplitResult:
    """``url`` split, or ``BadRequest`` naming ``url`` when the kiosk may not fetch a bundle from it:
    https:// only; http:// on a loopback address and file:// only with ``[ota] allow_plain_loopback``."""
    shown = redact_url(url)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise BadRequest(f"firmware.update: url {shown[:80]!r} is not a URL: {exc}", field="url") from None
    if parts.username or parts.password:
        raise BadRequest("firmware.update: url must not carry credentials (user:pass@)", field="url")
    scheme = parts.scheme.lower()
    if scheme == "https":
        if not parts.hostname:
            raise BadRequest(f"firmware.update: url {shown[:80]!r} has no host", field="url")
        return parts
    if scheme not in ("http", "file"):
        raise BadRequest(
            f"firmware.update: url must be https://, not {scheme or 'a relative path'}:// ({shown[:80]!r})",
            field="url",
        )
    if not allow_plain_loopback:
        raise BadRequest(
            f"firmware.update: url {shown[:80]!r} is not https://: bundles come over https:// only "
            "([ota] allow_plain_loopback allows http:// on loopback and file:// on a bench)",
            field="url",
        )
    if scheme == "http" and not is_loopback_host(parts.hostname or ""):
        raise BadRequest(
            f"firmware.update: url {shown[:80]!r}: plain http:// is allowed on a loopback address only",
            field="url",
        )
    if scheme == "file" and (parts.netloc not in ("", "localhost") or not parts.path.startswith("/")):
        raise BadRequest("firmware.update: a file:// url must name an absolute local path", field="url")
    return parts


class OtaService(Subsystem):
    """Firmware updates: the ``firmware.update`` command, the trial after a reboot, birth's ``ota``."""

    name = "ota"

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.dir = Path(ctx.data_dir) / "ota"
        self.rauc: Rauc | None = None
        self.unavailable = "not connected yet"
        self.booted = ""
        self.primary = ""
        self.compatible = ""
        self.slots: list[Slot] = []
        self.stage: str | None = None  # of the update running now: download, verify, install, reboot
        self.trial: dict[str, Any] | None = None
        self._connector: asyncio.Task[None] | None = None
        self._trial_task: asyncio.Task[None] | None = None
        self._job: asyncio.Task[Any] | None = None
        self._progress: asyncio.Queue[Progress] = asyncio.Queue(maxsize=1000)  # RAUC sends < 100
        self._completed: asyncio.Future[int] | None = None

    @property
    def cfg(self) -> Any:
        return self.ctx.config.ota

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        first = asyncio.get_running_loop().create_future()
        self._connector = asyncio.create_task(self._connect_loop(first), name="ota-connect")
        # Birth is made right after the subsystems start: wait briefly so it says what RAUC says.
        with contextlib.suppress(TimeoutError):
            await wait_for(asyncio.shield(first), CONNECT_TIMEOUT_S + 0.5)

    async def stop(self) -> None:
        for task in (self._job, self._trial_task, self._connector):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._job = self._trial_task = self._connector = None
        if self.rauc is not None:
            self.rauc.close()
            self.rauc = None

    async def _connect_loop(self, first: asyncio.Future[None]) -> None:
        delay, attempt = RECONNECT_S[0], 0
        while True:
            attempt += 1
            rauc = Rauc(self.cfg.dbus_address)
            try:
                await wait_for(rauc.connect(), CONNECT_TIMEOUT_S)
                rauc.on_completed(self._on_completed)
                rauc.on_progress(self._on_progress)
                self.rauc = rauc
                await self._refresh()
                self.unavailable = ""
                self.ctx.log.info(
                    "ota: RAUC on %s, booted slot %s, primary %s", rauc.where, self.booted, self.primary
                )
                try:
                    await self._after_boot()
                except Exception:  # noqa: BLE001 - logged; the kiosk keeps running and updates stay possible
                    self.ctx.log.exception("ota: settling the earlier update failed")
            except (UpdaterUnavailable, OtaError, TimeoutError) as exc:
                rauc.close()
                self.rauc = None
                self.unavailable = (
                    str(exc)
                    if not isinstance(exc, TimeoutError)
                    else (f"RAUC on {rauc.where} did not answer within {CONNECT_TIMEOUT_S:g} s")
                )
                (self.ctx.log.warning if attempt == 1 else self.ctx.log.debug)(
                    "ota: firmware updates unavailable: %s", self.unavailable
                )
            if not first.done():
                first.set_result(None)
            if self.rauc is not None:
                if attempt > 1:
                    with contextlib.suppress(Exception):
                        await self.ctx.rebirth()
                await self.rauc.disconnected.wait()
                self.ctx.log.warning("ota: the connection to RAUC was lost; reconnecting")
                self.rauc = None
                self.unavailable = "the connection to RAUC was lost"
                delay, attempt = RECONNECT_S[0], 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_S[1])

    async def _refresh(self) -> None:
        assert self.rauc is not None
        self.booted = await self.rauc.boot_slot()
        self.primary = await self.rauc.primary()
        self.compatible = await self.rauc.compatible()
        self.slots = await self.rauc.slots()

    def _slot(self, bootname: str) -> Slot | None:
        return next((s for s in self.slots if s.bootname == bootname), None)

    def _version(self, bootname: str) -> str | None:
        slot = self._slot(bootname)
        return slot.version if slot is not None and slot.version else None

    def _other(self) -> Slot | None:
        return next(
            (s for s in self.slots if s.bootname != self.booted and s.slot_class in ("rootfs", "")), None
        )

    # --- the record of an update in progress -------------------------------------------------------

    @property
    def _record_path(self) -> Path:
        return self.dir / RECORD

    def _load_record(self) -> dict[str, Any] | None:
        try:
            record = json.loads(self._record_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self.ctx.log.error("ota: unreadable %s ignored: %s", self._record_path, exc)
            return None
        return record if isinstance(record, dict) and "phase" in record else None

    async def _save_record(self, record: dict[str, Any]) -> None:
        await asyncio.to_thread(write_atomic, self._record_path, json.dumps(record, indent=1).encode())

    async def _drop_record(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(self._record_path.unlink)

    # --- after a boot: settle what an earlier run left ---------------------------------------------

    async def _after_boot(self) -> None:
        assert self.rauc is not None
        record = await asyncio.to_thread(self._load_record)
        if record is None:
            # A normal boot that got this far: keep the running slot bootable (resets the boot counter),
            # as RAUC's usual mark-good service does.
            await self.rauc.mark("good", "booted")
            self.slots = await self.rauc.slots()
            return
        phase = record["phase"]
        from_slot, to_slot = record.get("from_slot"), record.get("to_slot")
        if phase in ("downloading", "verifying"):
            await self._drop_record()
            await self._emit_failed(
                "download",
                "interrupted: the appliance restarted during the download; send the update again "
                "(the part already downloaded is resumed)",
                record,
            )
        elif phase == "installing" and from_slot and self.booted != from_slot:
            # RAUC finished and activated the new slot, the appliance died before it noted it, and the
            # device rebooted into it: the new slot gets its trial like any other.
            record = {**record, "to_slot": self.booted, "to_version": self._version(self.booted)}
            await self._begin_trial(record)
        elif phase == "installing":
            # Whatever RAUC got to, the old slot stays the one to boot: no half state.
            if await self.rauc.operation() == "installing":
                self.ctx.log.warning("ota: RAUC is still installing what an earlier run started; waiting")
                deadline = time.monotonic() + INSTALL_TIMEOUT_S
                while await self.rauc.operation() == "installing" and time.monotonic() < deadline:  # noqa: ASYNC110 - RAUC's property, polled
                    await asyncio.sleep(1.0)
            await self.rauc.mark("active", "booted")
            await self.rauc.mark("good", "booted")
            await self._refresh()
            await self._drop_record()
            await self._emit_failed(
                "install",
                f"interrupted: the device restarted during the install of {record.get('bundle', 'the bundle')}; "
                f"slot {self.booted} ({self._version(self.booted) or 'unknown version'}) stays booted",
                record,
            )
        elif phase in ("installed", "trial") and self.booted == to_slot:
            await self._begin_trial(record)
        elif phase == "installed" and self.booted == from_slot and self.primary == self._slot_name(to_slot):
            # Installed, not yet rebooted (the appliance restarted meanwhile): go on waiting for idle.
            self._job = asyncio.create_task(self._reboot_when_idle(record), name="ota-reboot")
        elif phase in ("installed", "trial") and self.booted == from_slot:
            await self._rolled_back(record, f"slot {to_slot} did not come up: the bootloader fell back")
        elif phase == "rolling_back" and self.booted == from_slot:
            await self._rolled_back(record, record.get("reason") or "the new slot failed its health checks")
        elif phase == "rolling_back":
            await self.rauc.mark("bad", "booted")
            await self.ctx.reboot("firmware rollback: the new slot failed its health checks")
        else:
            self.ctx.log.error("ota: record %s does not fit booted slot %s; dropped", record, self.booted)
            await self._drop_record()

    def _slot_name(self, bootname: str | None) -> str:
        slot = self._slot(bootname or "")
        return slot.name if slot is not None else ""

    async def _rolled_back(self, record: dict[str, Any], reason: str) -> None:
        assert self.rauc is not None
        await self.rauc.mark("good", "booted")
        self.slots = await self.rauc.slots()
        await self._drop_record()
        await self.ctx.emit(
            "firmware.rolled_back",
            {
                "from_version": record.get("to_version"),
                "to_version": self._version(self.booted),
                "slot": self.booted,
                "reason": reason[:500],
            },
        )

    async def _emit_failed(self, stage: str, reason: str, record: dict[str, Any] | None = None) -> None:
        data: dict[str, Any] = {"stage": stage, "reason": reason[:500]}
        version = (record or {}).get("to_version")
        if version:
            data["version"] = version
        await self.ctx.emit("firmware.failed", data)

    # --- the trial of a new slot -------------------------------------------------------------------

    async def _begin_trial(self, record: dict[str, Any]) -> None:
        record = {**record, "phase": "trial"}
        await self._save_record(record)
        self.trial = record
        self._trial_task = asyncio.create_task(self._run_trial(record), name="ota-trial")

    def trial_problems(self, record: Mapping[str, Any]) -> list[str]:
        """What keeps the booted slot from being marked good now (empty: it passes)."""
        problems = []
        fleet = self.ctx.health_map().get("fleet")
        if fleet is None or fleet.status != HealthStatus.OK:
            problems.append(f"the fleet link is not online ({fleet.reason if fleet else 'no fleet link'})")
        now = {
            str(item.get("name")): (item.get("health") or {}).get("status", "missing")
            for item in self.ctx.inventory()
        }
        for name, was in sorted((record.get("peripherals") or {}).items()):
            if was == "ok" and now.get(name) != "ok":
                problems.append(f"{name} was ok before the update and is {now.get(name, 'absent')} now")
        return problems

    async def _run_trial(self, record: dict[str, Any]) -> None:
        assert self.rauc is not None
        timeout = self.cfg.health_timeout_s
        self.ctx.log.warning(
            "ota: slot %s (%s) is on trial: marked good once the fleet link is online and the peripherals "
            "are as before the update (at most %g s)",
            self.booted,
            record.get("to_version"),
            timeout,
        )
        deadline = time.monotonic() + timeout
        while True:
            problems = self.trial_problems(record)
            if not problems:
                break
            if time.monotonic() >= deadline:
                reason = f"health checks failed after {timeout:g} s: " + "; ".join(problems)
                self.ctx.log.error("ota: slot %s marked bad: %s", self.booted, reason)
                await self._save_record({**record, "phase": "rolling_back", "reason": reason})
                await self._emit_failed("health", reason, record)
                await self.rauc.mark("bad", "booted")
                self.trial = None
                await self.ctx.reboot(f"firmware rollback: slot {self.booted} failed its health checks")
                return
            await asyncio.sleep(TRIAL_POLL_S)
        await self.rauc.mark("good", "booted")
        await self._refresh()
        await self._drop_record()
        self.trial = None
        self.ctx.log.info("ota: slot %s (%s) marked good", self.booted, record.get("to_version"))
        await self.ctx.emit(
            "firmware.committed",
            {
                "slot": self.booted,
                "version": self._version(self.booted) or record.get("to_version") or "",
                "previous_version": record.get("from_version"),
            },
        )
        await self.ctx.rebirth()

    # --- the command -------------------------------------------------------------------------------

    def commands(self) -> Mapping[str, CommandSpec]:
        return {
            "firmware.update": CommandSpec(
                name="firmware.update",
                summary="download, check and install a RAUC bundle into the other slot, then reboot when "
                "idle (202, then firmware.* events and command.completed)",
                params=UpdateParams,
                handler=self._cmd_update,
                personal=False,
                process="appliance",
            )
        }

    async def _cmd_update(self, params: UpdateParams) -> Accepted:
        if self.rauc is None:
            raise CommandError(503, f"firmware updates are unavailable on this kiosk: {self.unavailable}")
        parts = check_source(params.url, allow_plain_loopback=self.cfg.allow_plain_loopback)
        limit = int(self.cfg.max_bundle_mb * 1e6)
        if params.size is not None and params.size > limit:
            raise BadRequest(
                f"firmware.update: the bundle is {params.size} bytes; at most {limit} "
                f"([ota] max_bundle_mb = {self.cfg.max_bundle_mb:g})",
                field="size",
            )
        if parts.scheme == "file":
            size = await asyncio.to_thread(_file_size, urllib.parse.unquote(parts.path))
            if size is None:
                raise BadRequest(f"firmware.update: no bundle file at {parts.path[:200]}", field="url")
            if size > limit:
                raise BadRequest(
                    f"firmware.update: the bundle is {size} bytes; at most {limit} "
                    f"([ota] max_bundle_mb = {self.cfg.max_bundle_mb:g})",
                    field="url",
                )
        if self._job is not None and not self._job.done():
            raise CommandError(409, f"an update is already running (stage: {self.stage})")
        if self.trial is not None:
            raise CommandError(409, f"slot {self.booted} is still on trial after the last update")
        record = await asyncio.to_thread(self._load_record)
        if record is not None:
            raise CommandError(409, f"an earlier update is not finished (phase: {record['phase']})")
        if params.when == "now_if_idle":
            busy = self.ctx.busy()
            if busy:
                raise CommandError(409, "not now: " + "; ".join(busy) + " (use when: idle to wait for it)")
        sha256 = params.sha256.lower()
        self.stage = "download"
        job = asyncio.ensure_future(self._update(params.url, sha256, params.size, limit))
        self._job = job
        return Accepted({"update": "started", "when": params.when, "sha256": sha256}, then=lambda: job)

    async def _update(self, url: str, sha256: str, size: int | None, limit: int) -> dict[str, Any]:
        """The whole update; its result or error is the command's ``command.completed``."""
        try:
            record: dict[str, Any] = {
                "phase": "downloading",
                "url": redact_url(url),
                "sha256": sha256,
                "from_slot": self.booted,
                "from_version": self._version(self.booted) or __version__,
            }
            await self._save_record(record)
            bundle = await self._download(url, sha256, limit)
            record = await self._install(bundle, record)
            return await self._reboot_when_idle(record)
        except OtaError as exc:
            self.ctx.log.error("ota: update failed at %s: %s", exc.stage, exc)
            await self._drop_record()
            await self._emit_failed(exc.stage or "install", str(exc))
            raise CommandError(500, f"firmware update failed ({exc.stage}): {exc}") from None
        finally:
            self.stage = None

    # --- download ----------------------------------------------------------------------------------

    async def _download(self, url: str, sha256: str, limit: int) -> Path:
        self.stage = "download"
        part, final = self.dir / f"{sha256}.part", self.dir / f"{sha256}.raucb"
        await asyncio.to_thread(_remove_others, self.dir, {part.name, final.name, RECORD})
        resumed = 0
        if not final.exists():
            resumed = await asyncio.to_thread(_size_or_zero, part)
            try:
                async with asyncio.timeout(self.cfg.download_timeout_s):
                    parts = urllib.parse.urlsplit(url)
                    if parts.scheme == "file":
                        await asyncio.to_thread(
                            _copy_file, Path(urllib.parse.unquote(parts.path)), part, limit
                        )
                    else:
                        await _fetch_http(url, part, limit)
            except TimeoutError:
                raise OtaError(
                    f"the download did not finish within {self.cfg.download_timeout_s:g} s "
                    "([ota] download_timeout_s); the part kept is resumed next time",
                    stage="download",
                ) from None
            self.stage = "verify"
            digest = await asyncio.to_thread(_sha256_of, part)
            if digest != sha256:
                await asyncio.to_thread(part.unlink)
                raise OtaError(
                    f"the bundle's sha256 is {digest}, not the {sha256} the platform gave: deleted, nothing "
                    "installed",
                    stage="verify",
                )
            await asyncio.to_thread(os.replace, part, final)
        size = await asyncio.to_thread(_size_or_zero, final)
        await self.ctx.emit(
            "firmware.download",
            {"url": redact_url(url), "bytes": size, "sha256": sha256, "resumed_from": resumed},
        )
        return final

    # --- install -----------------------------------------------------------------------------------

    def _on_completed(self, result: int) -> None:
        if self._completed is not None and not self._completed.done():
            self._completed.set_result(result)

    def _on_progress(self, progress: Progress) -> None:
        with contextlib.suppress(asyncio.QueueFull):  # RAUC sends a few dozen per install
            self._progress.put_nowait(progress)

    async def _install(self, bundle: Path, record: dict[str, Any]) -> dict[str, Any]:
        self.stage = "install"
        rauc = self.rauc
        if rauc is None:
            raise OtaError(f"RAUC went away before the install: {self.unavailable}", stage="install")
        record = {
            **record,
            "phase": "installing",
            "bundle": bundle.name,
            "peripherals": {
                str(item.get("name")): (item.get("health") or {}).get("status", "missing")
                for item in self.ctx.inventory()
            },
        }
        await self._save_record(record)
        while not self._progress.empty():
            self._progress.get_nowait()
        self._completed = asyncio.get_running_loop().create_future()
        try:
            await rauc.install_bundle(str(bundle), {})
            result = await self._follow_progress(rauc)
        finally:
            self._completed = None
            with contextlib.suppress(OSError):
                await asyncio.to_thread(bundle.unlink)  # the slot holds it now, or it failed: space back
        if result != 0:
            error = await rauc.last_error()
            raise OtaError(error or f"RAUC's install ended with {result}", stage="install")
        await self._refresh()
        target = self._other()
        if target is None or not target.version:
            raise OtaError("RAUC reported success but no other slot holds a bundle", stage="install")
        record = {**record, "phase": "installed", "to_slot": target.bootname, "to_version": target.version}
        await self._save_record(record)
        await self.ctx.emit("firmware.installed", {"slot": target.bootname, "version": target.version})
        with contextlib.suppress(Exception):
            await self.ctx.rebirth()
        return record

    async def _follow_progress(self, rauc: Rauc) -> int:
        """Report RAUC's progress until ``Completed``; its result."""
        assert self._completed is not None
        deadline = time.monotonic() + INSTALL_TIMEOUT_S
        last = -PROGRESS_STEP
        while not self._completed.done() or not self._progress.empty():
            try:
                p = await wait_for(self._progress.get(), 0.2)
            except TimeoutError:
                if rauc.disconnected.is_set() and not self._completed.done():
                    raise OtaError(
                        "the connection to RAUC was lost during the install", stage="install"
                    ) from None
                if time.monotonic() > deadline:
                    raise OtaError(
                        f"RAUC did not complete within {INSTALL_TIMEOUT_S:g} s", stage="install"
                    ) from None
                continue
            if p.percent >= last + PROGRESS_STEP or (p.percent == 100 and last < 100):
                last = p.percent
                await self.ctx.emit(
                    "firmware.progress", {"percent": max(0, min(100, p.percent)), "message": p.message}
                )
        return self._completed.result()

    # --- reboot ------------------------------------------------------------------------------------

    async def _reboot_when_idle(self, record: dict[str, Any]) -> dict[str, Any]:
        self.stage = "reboot"
        waited = False
        while busy := self.ctx.busy():
            if not waited:
                self.ctx.log.info(
                    "ota: %s installed; rebooting once idle (%s)", record.get("to_version"), busy[0]
                )
                waited = True
            await asyncio.sleep(IDLE_POLL_S)
        await self.ctx.reboot(f"firmware update to {record.get('to_version')} (slot {record.get('to_slot')})")
        return {"slot": record.get("to_slot"), "version": record.get("to_version"), "rebooting": True}

    # --- what the daemon asks ----------------------------------------------------------------------

    def health(self) -> Mapping[str, Health]:
        if self.rauc is None:
            return {}  # a machine without RAUC (a bench, CI) is not degraded; birth says unavailable
        if self.trial is not None:
            return {
                "ota": Health(
                    HealthStatus.DEGRADED,
                    f"slot {self.booted} ({self.trial.get('to_version')}) is on trial: marked good once the "
                    "fleet link is online and the peripherals are as before the update",
                )
            }
        return {"ota": Health(HealthStatus.OK)}

    def capabilities(self) -> list[str]:
        return ["firmware.update"] if self.rauc is not None else []

    def telemetry(self) -> dict[str, Any]:
        return {"stage": self.stage} if self.stage else {}

    def birth(self) -> Mapping[str, Any]:
        if self.rauc is None:
            return {"ota": {"updates": "unavailable", "reason": self.unavailable[:300]}}
        return {
            "ota": {
                "updates": "available",
                "booted_slot": self.booted,
                "primary": next((s.bootname for s in self.slots if s.name == self.primary), self.primary),
                "compatible": self.compatible,
                "trial": self.trial is not None,
                "slots": {
                    s.bootname: {
                        "version": s.version or None,
                        "state": "good" if s.boot_status == "good" else "bad",
                        "booted": s.bootname == self.booted,
                    }
                    for s in self.slots
                },
            }
        }


# --- file helpers (blocking: run them in a thread) -------------------------------------------------


def _file_size(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size if os.path.isfile(path) else None


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _remove_others(directory: Path, keep: set[str]) -> None:
    """Only one bundle's files at a time under ``data_dir/ota``: a disk must not fill with old parts."""
    for entry in directory.iterdir():
        if entry.name not in keep and entry.suffix in (".part", ".raucb"):
            with contextlib.suppress(OSError):
                entry.unlink()


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _copy_file(source: Path, part: Path, limit: int) -> None:
    """Copy ``source`` into ``part``, resuming after what ``part`` already holds."""
    try:
        with source.open("rb") as src, part.open("ab") as dst:
            size = os.fstat(src.fileno()).st_size
            if size > limit:
                raise OtaError(f"the bundle is {size} bytes; at most {limit}", stage="download")
            offset = dst.tell()
            if offset > size:
                dst.truncate(0)
                offset = 0
            src.seek(offset)
            while chunk := src.read(CHUNK):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except OSError as exc:
        raise OtaError(f"cannot read the bundle {source}: {exc.strerror or exc}", stage="download") from None


async def _fetch_http(url: str, part: Path, limit: int) -> None:
    """GET ``url`` into ``part``, with a Range request for what ``part`` already holds."""
    import aiohttp  # the appliance imports it only for an update

    offset = await asyncio.to_thread(_size_or_zero, part)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    shown = redact_url(url)
    try:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(url, headers=headers) as resp:
            if resp.status == 416 and offset:  # the part is already whole
                return
            if resp.status not in (200, 206):
                raise OtaError(
                    f"GET {shown} answered {resp.status} {resp.reason or ''}".strip(), stage="download"
                )
            if resp.status == 200:
                offset = 0  # the server ignored the Range: start over
            length = resp.content_length
            if length is not None and offset + length > limit:
                raise OtaError(f"the bundle is {offset + length} bytes; at most {limit}", stage="download")
            f = await asyncio.to_thread(part.open, "r+b" if offset else "wb")
            try:
                await asyncio.to_thread(f.seek, offset)
                await asyncio.to_thread(f.truncate)
                got = offset
                async for chunk in resp.content.iter_chunked(CHUNK):
                    got += len(chunk)
                    if got > limit:
                        raise OtaError(f"the bundle is larger than {limit} bytes", stage="download")
                    await asyncio.to_thread(f.write, chunk)
                await asyncio.to_thread(f.flush)
                await asyncio.to_thread(os.fsync, f.fileno())
            finally:
                await asyncio.to_thread(f.close)
    except aiohttp.ClientError as exc:
        raise OtaError(
            f"GET {shown} failed: {exc}; the part kept is resumed next time", stage="download"
        ) from None
