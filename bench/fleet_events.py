#!/usr/bin/env python3
"""Appliance core figures: durable events/s, latency at 100/s, RSS, start -> retained online.

    .venv/bin/python bench/fleet_events.py [--events 20000] [--latency-seconds 10]

Real parts only: two mosquitto brokers on loopback (the device's local bus and the "central" one),
``kiosk run`` as a child process, a producer publishing QoS 1 to ``kiosk/local/event`` and a platform
subscriber on the central broker. An event counts when the platform receives it, which is after the
central broker accepted it (the appliance deletes it on the PUBACK that follows).

Reference in the same run: ``mosquitto_pub -l -q 1`` publishing the same number of messages straight
to the central broker (no durability, no second hop), received by the same subscriber.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kiosk_core.mqtt import MqttConnection  # noqa: E402
from sim.mosquitto import Mosquitto  # noqa: E402

REGION = ["33", "3308", "330803", "330803100", "330803100201"]
ROOT = "kiosk/v1/" + "/".join(REGION) + "/bench-0001"


def write_config(path: Path, bus: int, central: int, data: Path) -> None:
    region = ", ".join(f'"{r}"' for r in REGION)
    path.write_text(f"""
[device]
id = "bench-0001"
name = "bench"
region = [{region}]
[fleet]
port = {central}
telemetry_interval_s = 3600
initial_delay_max_s = 0
reconnect_base_s = 0.2
max_inflight = 256
drain_rate_per_s = 100000
[bus]
port = {bus}
[storage]
data_dir = "{data}"
[logging]
level = "WARNING"
""")


class Counter:
    """The platform side: counts events and records receive time per event."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.received: list[tuple[float, dict]] = []
        self.online = asyncio.Event()
        self.raw = 0
        self.counts: dict[str, int] = {}

    async def start(self) -> None:
        self.conn = MqttConnection(
            host="127.0.0.1", port=self.port, client_id=f"bench-platform-{os.getpid()}"
        )
        await self.conn.connect()
        await self.conn.subscribe((f"{ROOT}/event", 1), (f"{ROOT}/state", 1), ("bench/raw", 1))
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for msg in self.conn.messages():
            now = time.time()
            if msg.topic.endswith("/state"):
                if json.loads(msg.payload).get("state") == "online":
                    self.online.set()
            elif msg.topic == "bench/raw":
                self.raw += 1
            else:
                event = json.loads(msg.payload)
                self.received.append((now, event))
                self.counts[event["type"]] = self.counts.get(event["type"], 0) + 1

    def count(self, kind: str) -> int:
        return self.counts.get(kind, 0)

    async def wait(self, pred, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            if time.monotonic() > deadline:
                raise TimeoutError
            await asyncio.sleep(0.05)


def rss_kb(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            fields[k] = int(v.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


async def produce(port: int, n: int, kind: str, rate: float | None = None) -> None:
    conn = MqttConnection(host="127.0.0.1", port=port, client_id=f"bench-producer-{kind}", max_inflight=1000)
    await conn.connect()
    pending: set[asyncio.Future] = set()
    t0 = time.monotonic()
    for i in range(n):
        if rate:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        payload = json.dumps({"type": kind, "data": {"i": i, "t": time.time()}, "id": f"{kind}-{i}"}).encode()
        fut = conn.publish("kiosk/local/event", payload, qos=1)
        pending.add(fut)
        fut.add_done_callback(pending.discard)
        while len(pending) >= 900:
            await asyncio.sleep(0.001)
    await asyncio.gather(*list(pending))
    await conn.close()


async def reference(central: Mosquitto, counter: Counter, n: int) -> float:
    lines = "".join(f'{{"type":"raw","data":{{"i":{i}}}}}\n' for i in range(n)).encode()
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        shutil.which("mosquitto_pub") or "mosquitto_pub",
        "-p",
        str(central.port),
        "-t",
        "bench/raw",
        "-q",
        "1",
        "-l",
        stdin=subprocess.PIPE,
    )
    await proc.communicate(lines)
    await counter.wait(lambda: counter.raw >= n, 120)
    return n / (time.perf_counter() - t0)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--starts", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kiosk-bench-"))
    bus = Mosquitto(workdir=work / "bus", name="bus").start()
    central = Mosquitto(workdir=work / "central", name="central").start()
    counter = Counter(central.port)
    await counter.start()
    cfg = work / "kiosk.toml"
    results: dict[str, str] = {}
    try:
        # --- start -> retained online, repeated with a fresh data dir each time --------------------
        starts = []
        for k in range(args.starts):
            write_config(cfg, bus.port, central.port, work / f"data-start-{k}")
            counter.online.clear()
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-m", "kiosk_cli.main", "--config", str(cfg), "run"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            await asyncio.wait_for(counter.online.wait(), 30)
            starts.append(time.perf_counter() - t0)
            proc.terminate()
            proc.wait(10)
        results["start -> retained online (median / max of %d)" % args.starts] = (
            f"{statistics.median(starts) * 1000:.0f} ms / {max(starts) * 1000:.0f} ms"
        )

        write_config(cfg, bus.port, central.port, work / "data")
        proc = subprocess.Popen(
            [sys.executable, "-m", "kiosk_cli.main", "--config", str(cfg), "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        counter.online.clear()
        await asyncio.wait_for(counter.online.wait(), 30)
        await asyncio.sleep(0.5)

        # --- throughput ----------------------------------------------------------------------------
        n = args.events
        t0 = time.perf_counter()
        await produce(bus.port, n, "bench.tput")
        await counter.wait(lambda: counter.count("bench.tput") >= n, 300)
        rate = n / (time.perf_counter() - t0)
        ref = await reference(central, counter, n)
        results[f"durable events/s, local producer -> central ({n} events)"] = f"{rate:,.0f}/s"
        results["mosquitto_pub -q 1 -l straight to central (reference)"] = f"{ref:,.0f}/s"
        results["ratio appliance / mosquitto_pub"] = f"{rate / ref:.2f}"
        rss, hwm = rss_kb(proc.pid)
        results["appliance RSS after the burst (peak)"] = f"{rss / 1024:.1f} MB ({hwm / 1024:.1f} MB)"

        # --- latency at 100 events/s -----------------------------------------------------------------
        m = int(100 * args.latency_seconds)
        await produce(bus.port, m, "bench.lat", rate=100)
        await counter.wait(lambda: counter.count("bench.lat") >= m, 60)
        lats = sorted((t - e["data"]["t"]) * 1000 for t, e in counter.received if e["type"] == "bench.lat")
        p50, p99 = lats[len(lats) // 2], lats[int(len(lats) * 0.99) - 1]
        results[f"latency at 100 events/s, producer -> platform (n={m})"] = (
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
        bench = [e for _, e in counter.received if e["type"].startswith("bench.")]
        dup = len(bench) - len({(e["type"], e["data"]["i"]) for e in bench})
        results["duplicates seen by the platform"] = str(dup)
        proc.terminate()
        proc.wait(10)
    finally:
        bus.close()
        central.close()
        shutil.rmtree(work, ignore_errors=True)
    width = max(len(k) for k in results)
    print(f"# bench/fleet_events.py on {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    for k, v in results.items():
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    asyncio.run(main())
