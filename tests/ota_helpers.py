"""The firmware-update bench: a private dbus-daemon, the stand-in RAUC on it, the appliance pointed there.

``RaucStandIn`` runs ``python -m sim.rauc_service serve`` as a child process: ``boot()`` is a boot of
the board (restart with ``--boot``), ``kill9()`` a power cut, ``state()`` the board's persisted state.
``OtaBench`` ties it together with the appliance process, its config and the reboot marker: the
appliance's reboot command only touches ``reboot_marker``; ``reboot()`` then does what a reboot does to
the kiosk (the appliance stopped, the board booted again, the appliance started).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from conftest import write_config
from fleet_helpers import ApplianceProcess, Platform

from sim.dbus_daemon import DBusDaemon
from sim.rauc_service import make_bundle

KEY = b"county-signing-key-for-tests"
COMPATIBLE = "village-kiosk"


class RaucStandIn:
    """The stand-in RAUC service as a child process on ``address``."""

    def __init__(self, address: str, workdir: Path) -> None:
        self.address, self.dir = address, workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "rauc-state.json"
        self.keyring = self.dir / "keyring.key"
        self.keyring.write_bytes(KEY)
        self.log_path = self.dir / "rauc.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, boot: bool = True, tick_s: float = 0.02, fail_install: str = "") -> RaucStandIn:
        args = [
            sys.executable,
            "-m",
            "sim.rauc_service",
            "serve",
            "--address",
            self.address,
            "--state",
            str(self.state_path),
            "--keyring",
            str(self.keyring),
            "--compatible",
            COMPATIBLE,
            "--tick-s",
            str(tick_s),
        ]
        if boot:
            args.append("--boot")
        if fail_install:
            args += ["--fail-install", fail_install]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert "rauc stand-in" in line, f"the stand-in did not start: {self.log_path.read_text()[-800:]}"
        return self

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text())


class OtaBench:
    """Everything a firmware-update test needs, cleaned up by ``close()``."""

    def __init__(
        self, tmp_path: Path, bus_port: int, fleet_port: int, *, health_timeout_s: float = 20
    ) -> None:
        self.tmp = tmp_path
        self.dbus = DBusDaemon(tmp_path / "dbus").start()
        self.rauc = RaucStandIn(self.dbus.address, tmp_path / "rauc")
        self.reboot_marker = tmp_path / "reboot-requested"
        self.config = write_config(
            tmp_path / "kiosk.toml",
            bus_port=bus_port,
            fleet_port=fleet_port,
            data_dir=tmp_path / "data",
            extra=f"""
[ota]
dbus_address = "{self.dbus.address}"
health_timeout_s = {health_timeout_s}
allow_plain_loopback = true
max_bundle_mb = 1
""",
        )
        self.env = {"KIOSK_REBOOT_COMMAND": f"touch {self.reboot_marker}"}
        self.appliance: ApplianceProcess | None = None
        self.starts = 0

    def start_appliance(self) -> ApplianceProcess:
        self.starts += 1
        self.appliance = ApplianceProcess(
            self.config, self.tmp / f"appliance-{self.starts}.log", env=self.env
        ).start()
        return self.appliance

    def bundle(self, version: str = "0.2.0", **kw: Any) -> tuple[str, str]:
        """(file:// URL, sha256) of a fresh signed bundle."""
        path = make_bundle(
            self.tmp / "bundles" / f"kiosk-{version}.raucb",
            version=version,
            compatible=COMPATIBLE,
            key=KEY,
            **kw,
        )
        return f"file://{path}", hashlib.sha256(path.read_bytes()).hexdigest()

    async def wait_reboot_requested(self, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.reboot_marker.exists():
            assert time.monotonic() < deadline, "the appliance never ran its reboot command"
            assert self.appliance is not None and self.appliance.alive, self.appliance.log()[-2000:]
            await asyncio.sleep(0.1)

    def power_off(self, *, cut: bool = False) -> None:
        """The kiosk goes down: SIGTERM as systemd does on a reboot, or SIGKILL for a power cut."""
        assert self.appliance is not None
        if cut:
            self.appliance.kill9()
            self.rauc.kill9()
        else:
            self.appliance.terminate()
            self.rauc.stop()
        self.reboot_marker.unlink(missing_ok=True)

    def boot(self, **standin: Any) -> None:
        """The board boots (the boot chooser picks a slot), then the appliance starts."""
        self.rauc.start(boot=True, **standin)
        self.start_appliance()

    def close(self) -> None:
        if self.appliance is not None and self.appliance.alive:
            self.appliance.kill9()
        self.rauc.kill9()
        self.dbus.stop()


def births(platform: Platform) -> list[dict[str, Any]]:
    return platform.of("birth")


async def birth_where(platform: Platform, predicate: Any, what: str, timeout_s: float = 20) -> dict[str, Any]:
    """The newest birth once it fits ``predicate``."""

    def newest() -> dict[str, Any] | None:
        found = births(platform)
        return found[-1] if found and predicate(found[-1]) else None

    return await platform.wait_for(newest, timeout_s, what)


def event_types(platform: Platform, prefix: str = "") -> list[str]:
    return [e["type"] for e in platform.unique_events(prefix)]


def sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path
