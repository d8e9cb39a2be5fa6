"""Benchmark: one verified switcher route (tie + read-back of video and audio) through the whole driver.

    .venv/bin/python bench/switcher_route.py [--routes 200]

Runs every protocol simulator over a loopback TCP socket and over a pty, so the figure is the driver's
own cost (framing, parsing, asyncio, the three exchanges per route); a real switcher adds its reply
time per exchange (tens of ms on serial at 9600 baud: ~15 bytes per reply is ~16 ms on the wire). No
reference tool exists to compare against (vendor control software is closed).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.switcher.config import SwitcherConfig  # noqa: E402
from drivers.switcher.driver import Switcher  # noqa: E402
from drivers.switcher.simulator import SwitcherSimulator  # noqa: E402
from kiosk_core.health import HealthStatus  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(protocol: str, link: str, routes: int) -> list[float]:
    sim = SwitcherSimulator(protocol, inputs=8, outputs=4)
    with tempfile.TemporaryDirectory() as tmp:
        if link == "tcp":
            host, port = await sim.start_tcp()
            cfg = SwitcherConfig(backend="tcp", protocol=protocol, host=host, port=port, poll_interval_s=3600)
        else:
            path = await sim.start_pty(Path(tmp) / "ttySW")
            cfg = SwitcherConfig(
                backend="serial", protocol=protocol, port=path, baudrate=115200, poll_interval_s=3600
            )

        async def emit(type: str, data: dict) -> None:
            return None

        switcher = Switcher(cfg)
        await switcher.start(emit)
        try:
            for _ in range(500):
                if switcher.health().status is HealthStatus.OK:
                    break
                await asyncio.sleep(0.01)
            times = []
            for i in range(routes):
                started = time.perf_counter()
                await switcher.route(1 + i % 8, 1 + i % 4)
                times.append(time.perf_counter() - started)
            return times
        finally:
            await switcher.stop()
            await sim.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=200)
    args = parser.parse_args()
    print(f"{'protocol':8} {'link':4} {'routes':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for protocol in ("extron", "kramer", "ascii"):
        for link in ("tcp", "pty"):
            times = await measure(protocol, link, args.routes)
            ms = [t * 1000 for t in times]
            print(
                f"{protocol:8} {link:4} {len(ms):6d} {pct(ms, 0.5):8.2f} {pct(ms, 0.99):8.2f} "
                f"{statistics.fmean(ms):8.2f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
