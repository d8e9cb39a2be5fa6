"""The hardware self-test a technician runs after wiring a service room (``kiosk provision selftest``
and the wizard's last step).

It finds what is plugged in (serial ports, V4L2 cameras by their ``/dev/v4l/by-id`` names), then
checks every device the config fits, through the drivers the appliance uses:

* the card reader answers its SAM status (and tells its SAM id);
* the switcher answers a routing query (which input output 1 shows) in its protocol;
* each camera lists its formats (V4L2), or is a simulated source;
* the status LED, every relay and the buzzer switch on and off, read back from the pin, and are left
  as they were;
* the receipt printer answers its real-time status (paper, cover) and prints a test slip.

Each check passes or fails with what to look at, in Chinese and English. The report is saved as
``<data_dir>/selftest/last.json`` and ``last.txt`` (the diagnostics bundle carries it) and shown.
Run it while the appliance is stopped: the card reader's port is opened exclusively.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import glob
import importlib.util
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from appliance import __version__
from appliance.config import KioskConfig
from appliance.diagnostics import SELFTEST_DIR
from drivers.camera.config import CameraConfig, DoccamConfig
from drivers.camera.discovery import discover_cameras, stable_path
from kiosk_core.errors import DriverError
from kiosk_core.fsutil import write_atomic
from kiosk_core.health import HealthStatus
from kiosk_core.tasks import wait_for

Status = Literal["pass", "fail", "not_configured"]
#: called as progress(done, total, what is being checked now)
Progress = Callable[[int, int, str], None]
SERIAL_GLOBS = ("/dev/serial/by-id/*", "/dev/ttyUSB*", "/dev/ttyACM*", "/dev/ttyAMA*", "/dev/ttyS0")
BEEP_S = 0.1


@dataclass(frozen=True, slots=True)
class Hint:
    en: str
    zh: str


HINTS: dict[str, Hint] = {
    "card_reader": Hint(
        "check the reader's USB/serial cable and power, and port/baudrate in [drivers.card_reader]; "
        "stop kiosk-appliance while testing (the port is opened exclusively)",
        "检查身份证阅读机具的USB/串口线和电源，以及 [drivers.card_reader] 中的 port 和 baudrate；测试时请先停止 kiosk-appliance",
    ),
    "switcher": Hint(
        "check the switcher's power, its network cable or RS-232 cable, and host/port/protocol in [drivers.switcher]",
        "检查切换器的电源、网线或RS-232串口线，以及 [drivers.switcher] 中的 host、port 和 protocol",
    ),
    "camera": Hint(
        "check the camera's USB cable (a powered hub for two cameras) and its device in the config "
        "(ls -l /dev/v4l/by-id/)",
        "检查摄像头的USB线（两台摄像头请用带电源的USB集线器），以及配置中的 device（ls -l /dev/v4l/by-id/）",
    ),
    "gpio": Hint(
        "check the wiring to the Pi's header and the pin numbers in [drivers.gpio] (BCM numbers); "
        'on a PC use backend = "sim"',
        '检查到树莓派排针的接线以及 [drivers.gpio] 中的引脚号（BCM编号）；在PC上请用 backend = "sim"',
    ),
    "printer": Hint(
        "check the receipt printer's power, its paper roll and cover, its USB/serial cable, and "
        "port/baudrate (or usb ids) in [drivers.printer]",
        "检查回执打印机的电源、纸卷和上盖，USB/串口线，以及 [drivers.printer] 中的 port、baudrate（或USB编号）",
    ),
}


@dataclass(slots=True)
class Check:
    name: str
    kind: str
    status: Status
    detail: str
    hint_en: str = ""
    hint_zh: str = ""
    duration_ms: int = 0


@dataclass(slots=True)
class Report:
    device_id: str
    started: str
    firmware: str
    checks: list[Check] = field(default_factory=list)
    found: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "started": self.started,
            "firmware": self.firmware,
            "passed": self.passed,
            "checks": [asdict(c) for c in self.checks],
            "found": self.found,
        }

    def text(self) -> str:
        mark = {"pass": "PASS", "fail": "FAIL", "not_configured": "----"}
        lines = [
            f"Hardware self-test of {self.device_id} ({self.started}, firmware {self.firmware})",
            f"result: {'all passed / 全部通过' if self.passed else f'{len(self.failed())} failed / 未通过'}",
            "",
        ]
        for c in self.checks:
            lines.append(f"[{mark[c.status]}] {c.name}: {c.detail}")
            if c.status == "fail" or (c.status == "not_configured" and c.hint_en):
                lines.append(f"       check: {c.hint_en}")
                lines.append(f"       检查: {c.hint_zh}")
        lines.append("")
        lines.append("serial ports: " + (", ".join(self.found.get("serial_ports", [])) or "none"))
        cams = self.found.get("cameras", [])
        lines.append("video devices: " + (", ".join(c["path"] for c in cams) or "none"))
        return "\n".join(lines) + "\n"

    def save(self, data_dir: Path) -> tuple[Path, Path]:
        """``last.json`` and ``last.txt`` under ``<data_dir>/selftest`` (atomic, 0600)."""
        directory = data_dir / SELFTEST_DIR
        json_path, text_path = directory / "last.json", directory / "last.txt"
        write_atomic(json_path, (json.dumps(self.as_dict(), ensure_ascii=False, indent=2) + "\n").encode())
        write_atomic(text_path, self.text().encode("utf-8"))
        return json_path, text_path


def serial_ports() -> list[str]:
    """Serial devices present, the stable ``/dev/serial/by-id`` names first."""
    seen: dict[str, str] = {}
    for pattern in SERIAL_GLOBS:
        for path in sorted(glob.glob(pattern)):
            seen.setdefault(os.path.realpath(path), path)
    return list(seen.values())


async def _noop(type: str, data: dict[str, Any]) -> None:
    """Events of a device under test go nowhere: the self-test is not a session."""


def _fail(name: str, kind: str, detail: str) -> Check:
    hint = HINTS[kind]
    return Check(name, kind, "fail", detail, hint.en, hint.zh)


async def _wait_settled(device: Any, timeout_s: float) -> None:
    """Until the device's health is ok or says why not (no longer 'connecting'/'not started')."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        health = device.health()
        if health.status is HealthStatus.OK or not (
            health.reason.startswith("connecting") or health.reason == "not started"
        ):
            return
        await asyncio.sleep(0.05)


async def check_card_reader(cfg: KioskConfig, timeout_s: float) -> Check:
    from drivers.card_reader.driver import CardReader

    assert cfg.drivers.card_reader is not None
    reader = CardReader(cfg.drivers.card_reader)
    await reader.start(_noop)
    try:
        await _wait_settled(reader, timeout_s)
        health = reader.health()
        if health.status is HealthStatus.OK:
            sam = f", SAM id {reader.sam_id}" if reader.sam_id else ""
            return Check(
                "card_reader", "card_reader", "pass", f"SAM answered its status on {reader.port}{sam}"
            )
        reason = (
            health.reason
            if not health.reason.startswith("connecting")
            else (f"no answer from the SAM on {reader.port} within {timeout_s:g} s")
        )
        return _fail("card_reader", "card_reader", reason)
    finally:
        await reader.stop()


async def check_switcher(cfg: KioskConfig, timeout_s: float) -> Check:
    from drivers.switcher.driver import Switcher

    assert cfg.drivers.switcher is not None
    switcher = Switcher(cfg.drivers.switcher)
    await switcher.start(_noop)
    try:
        shown = await wait_for(switcher.read_tie(1), timeout_s)
        return Check(
            "switcher",
            "switcher",
            "pass",
            f"{switcher.health().reason or switcher.protocol.title}; routing query: output 1 shows "
            + (f"input {shown}" if shown else "no input"),
        )
    except DriverError as exc:
        return _fail("switcher", "switcher", exc.message)
    except TimeoutError:
        return _fail(
            "switcher", "switcher", f"switcher at {switcher.where}: no answer within {timeout_s:g} s"
        )
    finally:
        await switcher.stop()


async def check_printer(cfg: KioskConfig) -> Check:
    """Status (DLE EOT), then a short test slip: a technician sees the paper come out."""
    from drivers.printer.driver import Printer
    from drivers.printer.protocol import Receipt

    assert cfg.drivers.printer is not None
    printer = Printer(cfg.drivers.printer, out_dir=cfg.storage.data_dir / "selftest" / "printer")
    await printer.start(_noop)
    try:
        health = await printer.check()
        if health.status is not HealthStatus.OK:
            return _fail("printer", "printer", health.reason)
        when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        slip = Receipt(
            title="打印机自检",
            site=cfg.device.name or cfg.device.id,
            item="回执打印机测试",
            number_label="设备",
            number=cfg.device.id,
            date=when,
            department="-",
            name_masked="-",
            qr_url=f"selftest:{cfg.device.id}",
            footer="打印正常 / printer OK",
        )
        out = await printer.print_receipt(slip, job="receipt")
        detail = f"{printer.health().reason}; test slip printed ({out['bytes']} bytes)"
        if printer.out_dir:
            detail += f", image in {printer.out_dir}"
        return Check("printer", "printer", "pass", detail)
    except DriverError as exc:
        return _fail("printer", "printer", exc.message)
    finally:
        await printer.stop()


async def check_camera(name: str, cam: CameraConfig | DoccamConfig, timeout_s: float) -> Check:
    if cam.backend == "synthetic":
        return Check(name, "camera", "pass", "simulated camera (synthetic lavfi source): no device to probe")
    if cam.backend == "picamera2":
        if importlib.util.find_spec("picamera2") is None:
            return _fail(name, "camera", "picamera2 is not installed (it exists on Raspberry Pi OS only)")
        return Check(name, "camera", "pass", "picamera2 is installed; the module opens with kiosk-media")
    from drivers.camera.v4l2 import probe

    try:
        modes = await wait_for(asyncio.to_thread(probe, cam.device, timeout_s), timeout_s + 1)
    except DriverError as exc:
        return _fail(name, "camera", exc.message)
    except TimeoutError:
        return _fail(name, "camera", f"{cam.device} did not list its formats within {timeout_s:g} s")
    detail = f"{cam.device}: {len(modes)} format line(s), e.g. {modes[0][:80]}"
    better = stable_path(cam.device)
    if better:
        detail += f" (prefer its stable name {better})"
    return Check(name, "camera", "pass", detail)


async def check_gpio(cfg: KioskConfig) -> list[Check]:
    from drivers.gpio.driver import Gpio

    assert cfg.drivers.gpio is not None
    gpio = Gpio(cfg.drivers.gpio)
    await gpio.start(_noop)
    try:
        health = gpio.health()
        outputs = gpio.outputs
        if health.status is not HealthStatus.OK:
            return [_fail(f"gpio.{o}", "gpio", health.reason) for o in outputs or ["outputs"]]
        checks = []
        for output in outputs:
            checks.append(await _exercise(gpio, output))
        return checks
    finally:
        await gpio.stop()


async def _exercise(gpio: Any, output: str) -> Check:
    """On, read back, off, read back; a relay is left as it was found."""
    name = f"gpio.{output}"
    device = gpio.relays.get(output) if output not in ("buzzer", "status_led") else None
    before = bool(device.is_active) if device is not None else False
    try:
        on = gpio.set_output(output, True)
        if output == "buzzer":
            await asyncio.sleep(BEEP_S)
        off = gpio.set_output(output, False)
        if device is not None and before:
            gpio.set_output(output, True)
    except DriverError as exc:
        return _fail(name, "gpio", exc.message)
    if on and not off:
        what = {"buzzer": "beeped", "status_led": "lit and went dark"}.get(output, "switched on and off")
        return Check(name, "gpio", "pass", f"{what} (read back from the pin)")
    return _fail(name, "gpio", f"{output}: switched on, read back {on}; off, read back {off}")


def plan(cfg: KioskConfig) -> list[tuple[str, Callable[[], Awaitable[list[Check]]]]]:
    """The checks in order, each a label and a coroutine returning its results."""
    d = cfg.drivers
    timeout_s = 6.0
    steps: list[tuple[str, Callable[[], Awaitable[list[Check]]]]] = []

    def one(fn: Callable[[], Awaitable[Check]]) -> Callable[[], Awaitable[list[Check]]]:
        async def run() -> list[Check]:
            return [await fn()]

        return run

    def absent(name: str, kind: str, section: str) -> Callable[[], Awaitable[list[Check]]]:
        async def run() -> list[Check]:
            return [Check(name, kind, "not_configured", f"no [{section}] in the config: not fitted")]

        return run

    steps.append(
        ("card reader", one(lambda: check_card_reader(cfg, timeout_s)))
        if d.card_reader
        else ("card reader", absent("card_reader", "card_reader", "drivers.card_reader"))
    )
    steps.append(
        ("switcher", one(lambda: check_switcher(cfg, timeout_s)))
        if d.switcher
        else ("switcher", absent("switcher", "switcher", "drivers.switcher"))
    )
    cameras: list[tuple[str, CameraConfig | DoccamConfig]] = [(f"camera.{n}", c) for n, c in d.camera.items()]
    if d.doccam is not None:
        cameras.append(("doccam", d.doccam))
    for name, cam in cameras:
        steps.append((name, one(lambda name=name, cam=cam: check_camera(name, cam, timeout_s))))
    if not cameras:
        steps.append(("cameras", absent("cameras", "camera", "drivers.camera.*")))
    steps.append(
        (
            "LED, relays, buzzer",
            (lambda: check_gpio(cfg)) if d.gpio else absent("gpio", "gpio", "drivers.gpio"),
        )
    )

    steps.append(
        ("receipt printer", one(lambda: check_printer(cfg)))
        if d.printer
        else ("receipt printer", absent("printer", "printer", "drivers.printer"))
    )
    return steps


async def run_selftest(cfg: KioskConfig, *, progress: Progress | None = None) -> Report:
    """Every check of ``plan`` in turn; a check that crashes is a failure, never the end of the test."""
    report = Report(
        device_id=cfg.device.id,
        started=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        firmware=__version__,
    )
    steps = plan(cfg)
    total = len(steps) + 1
    if progress:
        progress(0, total, "finding serial ports and video devices")
    report.found = {
        "serial_ports": serial_ports(),
        "cameras": [c.as_dict() for c in await asyncio.to_thread(discover_cameras)],
    }
    for index, (label, step) in enumerate(steps, start=1):
        if progress:
            progress(index, total, label)
        started = time.monotonic()
        try:
            checks = await step()
        except Exception as exc:  # noqa: BLE001 - one broken check must not hide the others' results
            checks = [Check(label, "internal", "fail", f"the check itself failed: {exc!r}")]
        ms = round((time.monotonic() - started) * 1000)
        for c in checks:
            c.duration_ms = ms
        report.checks.extend(checks)
    if progress:
        progress(total, total, "done")
    return report
