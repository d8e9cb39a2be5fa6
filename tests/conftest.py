"""Shared fixtures: real mosquitto brokers on free loopback ports, a config factory."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_helpers import ApplianceProcess, Platform, durable_platform

from sim.mosquitto import Mosquitto


@pytest.fixture(autouse=True)
def _messages_fit_their_models(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A message the daemon in this test's process put on the wire although it does not fit its model
    (``appliance.messages.conform`` logs it and sends it anyway, so a kiosk stays online) fails the
    test, also when no ``Platform`` was there to see it."""
    yield
    misfits = [
        r.getMessage()
        for phase in ("setup", "call")
        for r in caplog.get_records(phase)
        if r.name == "kiosk.messages"
    ]
    assert not misfits, "\n".join(misfits[:5])


@pytest.fixture
def bus_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """The device's local mosquitto."""
    broker = Mosquitto(workdir=tmp_path / "bus-broker", name="bus")
    with broker:
        yield broker


@pytest.fixture
def central_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """The central platform's broker; tests may kill() and start() it again on the same port."""
    broker = Mosquitto(workdir=tmp_path / "central-broker", name="central")
    with broker:
        yield broker


@contextlib.contextmanager
def tmpfs(mount: Path, size: int | str) -> Iterator[Path]:
    """A real small filesystem (tmpfs, ``size`` bytes or "12m") mounted at ``mount`` for the test,
    unmounted afterwards; the test is skipped where mounting is not allowed (not root)."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, timeout=10)


REGION = ["33", "3308", "330803", "330803100", "330803100201"]


def write_config(
    path: Path,
    *,
    bus_port: int,
    fleet_port: int,
    data_dir: Path,
    device_id: str = "kiosk-0001",
    extra: str = "",
    telemetry_interval_s: float = 30,
    role: str = "main",
) -> Path:
    path.write_text(
        f"""
[device]
id = "{device_id}"
name = "赤柯山村便民服务站"
role = "{role}"
region = {REGION!r}

[fleet]
host = "127.0.0.1"
port = {fleet_port}
keepalive_s = 10
telemetry_interval_s = {telemetry_interval_s}
reconnect_base_s = 0.2
reconnect_cap_s = 2
initial_delay_max_s = 0

[bus]
host = "127.0.0.1"
port = {bus_port}

[storage]
data_dir = "{data_dir}"
""".replace("'", '"')
        + extra,
        encoding="utf-8",
    )
    return path


@pytest.fixture
def kiosk_config(tmp_path: Path, bus_broker: Mosquitto, central_broker: Mosquitto) -> Path:
    return write_config(
        tmp_path / "kiosk.toml",
        bus_port=bus_broker.port,
        fleet_port=central_broker.port,
        data_dir=tmp_path / "data",
    )


@pytest.fixture
def appliance(kiosk_config: Path, tmp_path: Path):
    """``kiosk run`` as a child process on ``kiosk_config`` (SIGKILLed at the end if still running)."""
    proc = ApplianceProcess(kiosk_config, tmp_path / "appliance.log").start()
    yield proc
    if proc.alive:
        proc.kill9()


@pytest.fixture
async def platform(central_broker: Mosquitto):
    """The central platform's side of the fleet contract, connected to ``central_broker``."""
    p = await Platform(central_broker.port).start()
    yield p
    await p.stop()


@pytest.fixture
async def platform_durable(central_broker: Mosquitto):
    """Like ``platform``, with a persistent session saved by ``central_broker``, for tests that kill()
    and start() it: the restarted broker queues the device's messages for the platform even before the
    platform is back (``fleet_helpers.durable_platform``)."""
    p = await durable_platform(central_broker)
    yield p
    await p.stop()


@pytest.fixture
async def kiosk(kiosk_config: Path, platform: Platform):
    """The appliance daemon in this test's event loop, online."""
    from appliance.daemon import Appliance

    app = Appliance(kiosk_config)
    await app.start()
    await asyncio.wait_for(app.fleet.first_online.wait(), 10)
    yield app
    await app.stop()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker: hand this worker's schema counts to the controller."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        from fleet_schema import VALIDATED

        workeroutput["fleet_schema_validated"] = dict(VALIDATED)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """On the pytest-xdist controller: add up what each worker validated (for the summary below)."""
    from fleet_schema import VALIDATED

    VALIDATED.update(getattr(node, "workeroutput", {}).get("fleet_schema_validated", {}))


def pytest_terminal_summary(terminalreporter) -> None:
    """How many fleet messages the run checked against docs/schema/fleet.schema.json (all workers)."""
    from fleet_schema import VALIDATED, summary

    if VALIDATED:
        terminalreporter.write_line(summary())
