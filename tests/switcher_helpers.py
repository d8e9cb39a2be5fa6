"""Shared by the switcher tests: a simulator listening on TCP or a pty, and the driver's config for it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from drivers.switcher.config import SwitcherConfig
from drivers.switcher.driver import Switcher
from drivers.switcher.simulator import SwitcherSimulator
from kiosk_core.health import HealthStatus


async def listen(
    sim: SwitcherSimulator, protocol: str, link: str, tmp_path: Path, **timing: Any
) -> SwitcherConfig:
    """Start ``sim`` on ``link`` ("tcp" or "pty") and return the driver's config for it; ``timing``
    sets ``timeout_s`` and ``poll_interval_s`` (the rest is short and the same for every test)."""
    common = dict(
        protocol=protocol,
        connect_timeout_s=1.0,
        retries=3,
        backoff_s=0.05,
        reconnect_cap_s=0.2,
        **timing,
    )
    if link == "tcp":
        host, port = await sim.start_tcp()
        return SwitcherConfig(backend="tcp", host=host, port=port, **common)
    path = await sim.start_pty(tmp_path / "ttySWITCH")
    return SwitcherConfig(backend="serial", port=path, baudrate=9600, **common)


async def until_ok(switcher: Switcher, tries: int = 400) -> None:
    """Give a starting driver up to ``tries`` × 5 ms to report ``ok`` (the test's checks say if not)."""
    for _ in range(tries):
        if switcher.health().status is HealthStatus.OK:
            return
        await asyncio.sleep(0.005)
