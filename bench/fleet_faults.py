#!/usr/bin/env python3
"""The fleet contract under faults: events sent / acknowledged / delivered / lost / duplicated.

    .venv/bin/python bench/fleet_faults.py [--events 5000] [--kills 5] [--scenario NAME]
                                           [--full-seconds 60] [--rate 250] [--json]

Each scenario gets a fresh set of real parts on free loopback ports: a central mosquitto (persistence
on, autosave every second, its own directory), the device's local mosquitto run with the settings of
``provisioning/mosquitto-local.conf`` (persistence, ``autosave_interval 10``, ``max_queued_messages``,
...), and ``kiosk run`` as a child process. Producers hand events over with the API local producers
use, ``LocalBus.publish_event(type, {"n": i}, id=...)``, retrying with the same id when it raises; an
event is *acknowledged* when ``publish_event`` returned. A durable platform consumer on the central
broker (persistent session saved by the broker before any fault, QoS 1) keeps what docs/mqtt.md tells
consumers to keep: one event per ``(epoch, seq)``.

Scenarios:

- ``baseline``: no fault, producers as fast as they go; the throughput is compared with
  ``mosquitto_pub -q 1 -l`` sending the same count through the same central broker to the same
  consumer, in the same run (the project's reference tool, as in bench/fleet_events.py).
- ``central-kill``: the central broker SIGKILLed ``--kills`` times while events flow, restarted on
  the same port and persistence directory after ``--down-seconds``.
- ``appliance-kill``: ``kiosk run`` SIGKILLed ``--kills`` times and restarted.
- ``power-cut``: the appliance and the local broker SIGKILLed together, both restarted (a stand-in
  for a power cut: the page cache survives, so fsync ordering is not tested, only what each process
  had acknowledged).

  In the kill scenarios, recovery = the longest time from a restart until the platform sees
  ``online`` with a new epoch.
- ``disk-full``: ``data_dir`` on a small tmpfs the bench mounts; filled to 0 bytes free while events
  flow (the kiosk then releases its own reserve, as documented), kept full ``--full-seconds``, then
  freed. Recovery = seconds from freeing until the platform has seen ``storage.recovered``, a
  telemetry sample with storage ok, and a producer event delivered after both.

Counting (per scenario, producer events only):

- delivered: distinct producer counters the platform received;
- duplicated: counters delivered under two different seqs (a producer retry stored twice);
- out of order: first arrivals of a seq lower than a seq already delivered, or an epoch lower than
  the epoch of a lower seq;
- dropped by policy: events the device reports in ``gap`` events (``kind: event``);
- lost: acknowledged, never delivered, and more than the policy drops could explain. "seq holes" (seqs
  below the highest delivered that neither arrived nor lie in a gap range) tell where a loss happened:
  a hole is after the outbox (device or central broker), no hole means it never reached the outbox.

The kill scenarios pace the producers (``--rate``) so the stream lasts long enough for the kills; the
appliance uses short reconnect backoff (0.2 s base, 2 s cap, as the tests do), so recovery times do not
include the field's longer jitter. Every process the bench starts is ended by its pid and every mount
unmounted, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kiosk_core.errors import CommandError, LinkError  # noqa: E402
from kiosk_core.localbus import LocalBus  # noqa: E402
from kiosk_core.mqtt import MqttConnection, publish_properties  # noqa: E402
from sim.mosquitto import Mosquitto  # noqa: E402

DEVICE = "bench-faults-0001"
REGION = ["33", "3308", "330803", "330803100", "330803100201"]
ROOT = "kiosk/v1/" + "/".join(REGION) + f"/{DEVICE}"
EVENT_TYPE = "bench.fault"
REF_TOPIC = "bench/ref"
SCENARIOS = ("baseline", "central-kill", "appliance-kill", "power-cut", "disk-full")
WINDOW = 256  # producer calls in flight at once (the intake takes 256 unacknowledged events)
PUBLISH_TIMEOUT_S = 5.0
SETTLE_S = 30.0  # after the stream: how long to wait for the rest without any progress
FS_BYTES = 32 << 20  # the disk-full scenario's tmpfs
FILL_SLACK = 256 << 10
ATTRIBUTION_GRACE_S = 0.05


# --- the parts ---------------------------------------------------------------------------------------


def local_bus_settings() -> str:
    """The provisioning file's broker settings, minus what the bench must choose itself (listener,
    directory, logging). Appended after sim.mosquitto's defaults, so they win (mosquitto keeps the last
    value of a numeric or boolean option)."""
    keep = []
    for line in (REPO / "provisioning" / "mosquitto-local.conf").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.split()[0] in (
            "listener",
            "allow_anonymous",
            "persistence_location",
            "log_dest",
            "log_type",
        ):
            continue
        keep.append(line)
    return "\n".join(keep) + "\n"


def write_config(path: Path, bus: int, central: int, data: Path, telemetry_s: float) -> None:
    region = ", ".join(f'"{r}"' for r in REGION)
    path.write_text(f"""
[device]
id = "{DEVICE}"
name = "bench"
region = [{region}]
[fleet]
host = "127.0.0.1"
port = {central}
keepalive_s = 10
telemetry_interval_s = {telemetry_s}
initial_delay_max_s = 0
reconnect_base_s = 0.2
reconnect_cap_s = 2
[bus]
host = "127.0.0.1"
port = {bus}
[storage]
data_dir = "{data}"
[logging]
level = "WARNING"
""")


class Appliance:
    """``kiosk run`` as a child process of its own session (Ctrl-C reaches only the bench)."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kiosk_cli.main", "--config", str(self.config), "run"],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


class PlatformConsumer:
    """The central platform: a persistent session (Clean Start false), QoS 1, reconnecting by itself.

    Records every message in arrival order with its arrival time; the analysis de-duplicates."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client_id = f"bench-platform-{uuid.uuid4().hex[:6]}"
        self.reply_topic = f"platform/replies/{self.client_id}"
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.states: list[tuple[float, dict[str, Any]]] = []
        self.telemetry: list[tuple[float, dict[str, Any]]] = []
        self.ref = 0
        self.reconnects = -1
        self._replies: dict[bytes, asyncio.Future[dict[str, Any]]] = {}
        self._conn: MqttConnection | None = None
        self._subscribed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def wait_subscribed(self, timeout_s: float = 10) -> None:
        await asyncio.wait_for(self._subscribed.wait(), timeout_s)

    async def _run(self) -> None:
        while True:
            conn = MqttConnection(
                host="127.0.0.1",
                port=self.port,
                client_id=self.client_id,
                clean_start=False,
                session_expiry_s=3600,
                name="platform",
            )
            try:
                await conn.connect(timeout_s=2)
                await conn.subscribe((f"{ROOT}/#", 1), (REF_TOPIC, 1), (self.reply_topic, 1))
            except (LinkError, OSError, TimeoutError):
                with contextlib.suppress(Exception):
                    await conn.close()
                await asyncio.sleep(0.1)
                continue
            self._conn = conn
            self.reconnects += 1
            self._subscribed.set()
            async for msg in conn.messages():
                self._take(msg)
            self._conn = None
            with contextlib.suppress(Exception):
                await conn.close()
            await asyncio.sleep(0.05)

    def _take(self, msg: Any) -> None:
        now = time.monotonic()
        if msg.topic == REF_TOPIC:
            self.ref += 1
            return
        body = json.loads(msg.payload) if msg.payload else {}
        if msg.topic == self.reply_topic:
            fut = self._replies.pop(msg.correlation_data or b"", None)
            if fut is not None and not fut.done():
                fut.set_result(body)
        elif msg.topic.endswith("/event"):
            self.events.append((now, body))
        elif msg.topic.endswith("/state"):
            self.states.append((now, body))
        elif msg.topic.endswith("/telemetry"):
            self.telemetry.append((now, body))

    def online_epoch(self) -> int:
        """The newest epoch announced ``online`` (0 before the first)."""
        return max((s.get("epoch", 0) for _, s in self.states if s.get("state") == "online"), default=0)

    async def wait_online(self, after_epoch: int, timeout_s: float = 30) -> int:
        deadline = time.monotonic() + timeout_s
        while self.online_epoch() <= after_epoch:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the device did not come online with an epoch above {after_epoch}")
            await asyncio.sleep(0.02)
        return self.online_epoch()

    async def command(self, name: str, timeout_s: float = 10) -> dict[str, Any]:
        """A fleet command with an MQTT 5 Response Topic; the reply body."""
        deadline = time.monotonic() + timeout_s
        while self._conn is None:
            if time.monotonic() > deadline:
                raise TimeoutError("platform not connected")
            await asyncio.sleep(0.05)
        corr = uuid.uuid4().bytes
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[corr] = fut
        await self._conn.publish(
            f"{ROOT}/cmd/{name}",
            json.dumps({"id": f"bench-{uuid.uuid4().hex}"}).encode(),
            qos=1,
            properties=publish_properties(response_topic=self.reply_topic, correlation_data=corr),
        )
        return await asyncio.wait_for(fut, max(0.1, deadline - time.monotonic()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()


async def wait_ready(bus_port: int, timeout_s: float = 30) -> None:
    """Until the appliance's retained ``kiosk/local/state/appliance`` says ``ready``."""
    deadline = time.monotonic() + timeout_s
    while True:
        conn = MqttConnection(
            host="127.0.0.1", port=bus_port, client_id=f"bench-ready-{uuid.uuid4().hex[:6]}"
        )
        try:
            await conn.connect(timeout_s=2)
            await conn.subscribe(("kiosk/local/state/appliance", 1))
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                async for msg in conn.messages():
                    if msg.payload and json.loads(msg.payload).get("state") == "ready":
                        return
        except (LinkError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                await conn.close()
        if time.monotonic() > deadline:
            raise TimeoutError("the appliance never said ready on the local bus")
        await asyncio.sleep(0.1)


# --- producers --------------------------------------------------------------------------------------


@dataclass
class Producer:
    """``count`` events through ``LocalBus.publish_event``, at most ``WINDOW`` calls at once, paced at
    ``rate`` per second (None: as fast as they are acknowledged). A call that raises is retried with
    the same id."""

    bus: LocalBus
    count: int
    rate: float | None
    run: str
    acked: set[int] = field(default_factory=set)
    acked_at: dict[int, float] = field(default_factory=dict)
    refused: dict[int, str] = field(default_factory=dict)
    started: set[int] = field(default_factory=set)
    retries: int = 0
    t0: float = 0.0
    t_end: float = 0.0

    async def one(self, i: int) -> None:
        self.started.add(i)
        while True:
            try:
                await self.bus.publish_event(
                    EVENT_TYPE, {"n": i, "run": self.run}, id=f"{self.run}-{i}", timeout_s=PUBLISH_TIMEOUT_S
                )
                self.acked.add(i)
                self.acked_at[i] = time.monotonic()
                return
            except CommandError as exc:
                if 400 <= exc.status < 500:  # refused: re-sending the same event cannot help
                    self.refused[i] = f"{exc.status} {exc}"
                    return
                self.retries += 1
            except (TimeoutError, LinkError):
                self.retries += 1
            await asyncio.sleep(0.1)

    async def stream(self) -> None:
        sem = asyncio.Semaphore(WINDOW)
        tasks: set[asyncio.Task[None]] = set()
        self.t0 = time.monotonic()
        try:
            for i in range(self.count):
                if self.rate:
                    await asyncio.sleep(max(0.0, self.t0 + i / self.rate - time.monotonic()))
                await sem.acquire()
                task = asyncio.create_task(self.one(i))
                tasks.add(task)
                task.add_done_callback(lambda t: (tasks.discard(t), sem.release()))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        self.t_end = time.monotonic()


# --- the result -------------------------------------------------------------------------------------


@dataclass
class Result:
    scenario: str
    sent: int = 0
    acknowledged: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    dropped_by_policy: int = 0
    recovery_s: float | None = None
    wall_s: float = 0.0
    faults: int = 0
    events_per_s: float = 0.0
    reference_per_s: float | None = None
    ratio: float | None = None
    seq_holes: int = 0
    undelivered_acked: int = 0
    delivered_unacked: int = 0
    seq_reused: int = 0
    producer_retries: int = 0
    epochs: int = 0
    outbox_depth_after: int | None = None
    refused: int = 0
    lost_per_fault: list[int] = field(default_factory=list)  # [k]: acknowledged after fault k
    fault_times: list[float] = field(default_factory=list)  # monotonic, for the attribution of losses
    notes: list[str] = field(default_factory=list)


def analyse(res: Result, platform: PlatformConsumer, producer: Producer) -> None:
    first: dict[int, dict[str, Any]] = {}  # seq -> the first delivery (the consumer rule: one per seq)
    seqs_of: dict[int, set[int]] = {}  # producer counter -> seqs it was delivered under
    gaps: list[tuple[int, int]] = []
    dropped = 0
    top_seq, top_epoch_at = -1, (-1, -1)
    for _, e in platform.events:
        seq, epoch = e["seq"], e["epoch"]
        if seq in first:
            if first[seq]["epoch"] != epoch:
                res.seq_reused += 1
            continue
        first[seq] = e
        if seq < top_seq:
            res.out_of_order += 1
        elif epoch < top_epoch_at[1]:
            res.out_of_order += 1  # a newer seq stored under an older epoch
        if seq > top_seq:
            top_seq, top_epoch_at = seq, (seq, epoch)
        if e["type"] == EVENT_TYPE and e["data"].get("run") == producer.run:
            seqs_of.setdefault(e["data"]["n"], set()).add(seq)
        elif e["type"] == "gap" and e["data"].get("kind") == "event":
            gaps.append((e["data"]["from_seq"], e["data"]["to_seq"]))
            dropped += int(e["data"].get("events_dropped", e["data"].get("count", 0)))
    in_gap = {s for lo, hi in gaps for s in range(lo, hi + 1)}
    if first:
        lo = min(first)
        res.seq_holes = sum(1 for s in range(lo, top_seq + 1) if s not in first and s not in in_gap)
    delivered = set(seqs_of)
    res.sent = len(producer.started)
    res.acknowledged = len(producer.acked)
    res.delivered = len(delivered)
    res.duplicated = sum(1 for s in seqs_of.values() if len(s) > 1)
    res.dropped_by_policy = dropped
    undelivered = producer.acked - delivered
    res.undelivered_acked = len(undelivered)
    res.lost = max(0, len(undelivered) - dropped)
    res.delivered_unacked = len(delivered - producer.acked)
    res.producer_retries = producer.retries
    res.epochs = len({e["epoch"] for e in first.values()})
    res.refused = len(producer.refused)
    if producer.refused:
        res.notes.append(
            f"refused by the appliance: {len(producer.refused)}, e.g. {next(iter(producer.refused.values()))}"
        )
    if undelivered:
        res.notes.append(
            f"acknowledged but not delivered: {len(undelivered)}: n = {ranges(sorted(undelivered))}"
        )
        if res.fault_times:
            # Bucket k: acknowledged after fault k and before fault k+1 (0: before the first). The
            # producer task notes the time when it resumes, which may be just after a kill whose
            # broker had acknowledged before dying: ATTRIBUTION_GRACE_S of slack.
            per = [0] * (len(res.fault_times) + 1)
            for n in undelivered:
                per[sum(1 for t in res.fault_times if t < producer.acked_at[n] - ATTRIBUTION_GRACE_S)] += 1
            res.lost_per_fault = per
            res.notes.append(
                "not delivered, by when they were acknowledged: "
                + ", ".join(
                    (
                        f"{c} before fault 1"
                        if k == 0
                        else f"{c} after fault {k}" + (f" (before {k + 1})" if k < len(per) - 1 else "")
                    )
                    for k, c in enumerate(per)
                    if c
                )
            )


def ranges(ns: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7' (at most 12 runs)."""
    runs: list[list[int]] = []
    for n in ns:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    text = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in runs[:12])
    return text + (f", ... ({len(runs)} runs)" if len(runs) > 12 else "")


async def settle(platform: PlatformConsumer, producer: Producer) -> float:
    """Wait until every acknowledged event is delivered, or nothing new arrives for SETTLE_S.
    Returns the arrival time of the last producer event."""
    last_count, last_change = -1, time.monotonic()
    while True:
        got = {
            e["data"]["n"]
            for _, e in platform.events
            if e["type"] == EVENT_TYPE and e["data"].get("run") == producer.run
        }
        if producer.acked <= got and len(got) >= len(producer.acked):
            break
        if len(got) != last_count:
            last_count, last_change = len(got), time.monotonic()
        elif time.monotonic() - last_change > SETTLE_S:
            break
        await asyncio.sleep(0.1)
    arrivals = [
        t for t, e in platform.events if e["type"] == EVENT_TYPE and e["data"].get("run") == producer.run
    ]
    return max(arrivals, default=time.monotonic())


async def reference(central: Mosquitto, platform: PlatformConsumer, n: int) -> float:
    """``mosquitto_pub -q 1 -l``: n messages through the same central broker to the same consumer."""
    before = platform.ref
    lines = "".join(f'{{"type":"raw","data":{{"n":{i}}}}}\n' for i in range(n)).encode()
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        shutil.which("mosquitto_pub") or "mosquitto_pub",
        *("-h", "127.0.0.1", "-p", str(central.port), "-t", REF_TOPIC, "-q", "1", "-l"),
        stdin=subprocess.PIPE,
    )
    try:
        await proc.communicate(lines)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    deadline = time.monotonic() + 120
    while platform.ref - before < n:
        if time.monotonic() > deadline:
            raise TimeoutError("the reference messages did not all arrive")
        await asyncio.sleep(0.005)
    return n / (time.monotonic() - t0)


# --- the full disk ----------------------------------------------------------------------------------


def mount_tmpfs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"disk-full needs root to mount a tmpfs: {done.stderr.strip()}")


def free_bytes(fs: Path) -> int:
    st = os.statvfs(fs)
    return st.f_bavail * st.f_frsize


def fill(fs: Path) -> Path:
    """Take every free byte of ``fs`` once, then top up at most FILL_SLACK: space the kiosk frees after
    that (its own reserve) is the kiosk's, as the disk-full test does."""
    filler = fs / "filler"
    with open(filler, "wb", buffering=0) as f:
        size = 0
        for _ in range(20):  # the kiosk writes meanwhile: a fallocate asking a byte too much gets nothing
            free = free_bytes(fs)
            if free <= FILL_SLACK:
                break
            try:
                os.posix_fallocate(f.fileno(), size, free)
            except OSError:
                continue
            size += free
            break
        f.seek(size)
        topped = 0
        with contextlib.suppress(OSError):
            while topped < FILL_SLACK:
                topped += f.write(b"\0" * 65536)
    return filler


def telemetry_ok(t: dict[str, Any]) -> bool:
    storage = t.get("storage") or {}
    health = (t.get("peripherals") or {}).get("storage") or {}
    return storage.get("full") is False and health.get("status", "ok") == "ok"


# --- scenarios --------------------------------------------------------------------------------------


class Scenario:
    """One fresh set of brokers, appliance and data dir; ``close()`` ends every process by its pid."""

    def __init__(self, name: str, work: Path, args: argparse.Namespace) -> None:
        self.name, self.args = name, args
        self.dir = work / name
        self.dir.mkdir(parents=True)
        self.central = Mosquitto(workdir=self.dir / "central", name="central")
        self.bus = Mosquitto(workdir=self.dir / "bus", name="bus", extra_config=local_bus_settings())
        self.data = self.dir / "data"
        self.mounted = False
        self.appliance: Appliance | None = None
        self.platform: PlatformConsumer | None = None
        self.producer_bus: LocalBus | None = None
        self.filler: Path | None = None

    async def open(self, telemetry_s: float = 30) -> None:
        if self.name == "disk-full":
            mount_tmpfs(self.data)
            self.mounted = True
        self.central.start()
        self.bus.start()
        self.platform = PlatformConsumer(self.central.port)
        self.platform.start()
        await self.platform.wait_subscribed()
        # The platform's session must be in the broker's database before any kill, or a restarted
        # broker would not queue for it.
        await asyncio.to_thread(self.central.save)
        cfg = self.dir / "kiosk.toml"
        write_config(cfg, self.bus.port, self.central.port, self.data, telemetry_s)
        self.appliance = Appliance(cfg, self.dir / "appliance.log")
        self.appliance.start()
        await wait_ready(self.bus.port)
        await self.platform.wait_online(0)
        self.producer_bus = LocalBus(
            "127.0.0.1", self.bus.port, client_id=f"bench-producer-{self.name}", name="producer"
        )
        await self.producer_bus.start()

    async def close(self) -> None:
        # The processes and the mount first, synchronously: a second Ctrl-C cannot interrupt them.
        if self.filler is not None:
            with contextlib.suppress(OSError):
                self.filler.unlink()
        if self.appliance is not None:
            self.appliance.stop()
        self.bus.stop()
        self.central.stop()
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.data)], check=False)
            self.mounted = False
        if self.producer_bus is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.producer_bus.stop(), 5)
        if self.platform is not None:
            await self.platform.stop()

    def producer(self, rate: float | None) -> Producer:
        assert self.producer_bus is not None
        return Producer(self.producer_bus, self.args.events, rate, run=f"{self.name}-{uuid.uuid4().hex[:6]}")

    async def outbox_depth(self) -> int | None:
        assert self.platform is not None
        try:
            reply = await self.platform.command("get_status")
        except (TimeoutError, LinkError):
            return None
        return (reply.get("outbox") or {}).get("depth")


async def run_baseline(sc: Scenario, res: Result) -> None:
    assert sc.platform is not None
    producer = sc.producer(None)
    t0 = time.monotonic()
    await producer.stream()
    last = await settle(sc.platform, producer)
    analyse(res, sc.platform, producer)
    res.wall_s = max(last, producer.t_end) - t0
    res.events_per_s = res.delivered / (last - t0)
    res.reference_per_s = await reference(sc.central, sc.platform, sc.args.events)
    res.ratio = res.events_per_s / res.reference_per_s


async def run_kills(sc: Scenario, res: Result) -> None:
    """Kill at evenly spaced acknowledged counts; the next kill only after the device is back online."""
    assert sc.platform is not None and sc.appliance is not None
    args = sc.args
    producer = sc.producer(args.rate)
    t0 = time.monotonic()
    stream = asyncio.create_task(producer.stream())
    back: list[float] = []  # restart -> the platform sees "online" with a new epoch
    try:
        for k in range(args.kills):
            threshold = (k + 1) * args.events // (args.kills + 1)
            while len(producer.acked) < threshold and not stream.done():
                await asyncio.sleep(0.01)
            if stream.done():
                res.notes.append(f"the stream ended before kill {k + 1}: raise --events or lower --rate")
                break
            epoch = sc.platform.online_epoch()
            t_fault = time.monotonic()
            if sc.name == "central-kill":
                sc.central.kill()
                await asyncio.sleep(args.down_seconds)
                sc.central.start()
            elif sc.name == "appliance-kill":
                sc.appliance.kill()
                await asyncio.sleep(args.down_seconds)
                sc.appliance.start()
            else:  # power-cut: both at once, as close together as two signals get
                assert sc.appliance.proc is not None and sc.bus.proc is not None
                os.kill(sc.appliance.proc.pid, signal.SIGKILL)
                os.kill(sc.bus.proc.pid, signal.SIGKILL)
                sc.appliance.kill()
                sc.bus.kill()
                await asyncio.sleep(args.down_seconds)
                sc.bus.start()
                sc.appliance.start()
            t_restart = time.monotonic()
            res.faults += 1
            res.fault_times.append(t_fault)
            await sc.platform.wait_online(epoch, timeout_s=60)
            back.append(time.monotonic() - t_restart)
        await stream
    finally:
        stream.cancel()
    if back:
        res.recovery_s = max(back)
        res.notes.append(
            "restart -> online with a new epoch: "
            + ", ".join(f"{b:.2f}" for b in back)
            + " s (recovery = max)"
        )
    last = await settle(sc.platform, producer)
    # Until the last event arrived (not the settle wait for events that never came).
    res.wall_s = max(last, producer.t_end) - t0
    analyse(res, sc.platform, producer)
    res.events_per_s = res.delivered / res.wall_s
    res.outbox_depth_after = await sc.outbox_depth()


async def run_disk_full(sc: Scenario, res: Result) -> None:
    assert sc.platform is not None
    args = sc.args
    lead = 5.0  # seconds of stream before the disk fills, and about as much after it is freed
    rate = args.events / (args.full_seconds + 3 * lead)
    producer = sc.producer(rate)
    t0 = time.monotonic()
    stream = asyncio.create_task(producer.stream())
    try:
        await asyncio.sleep(lead)
        n_full = sum(1 for _, e in sc.platform.events if e["type"] == "storage.full")
        sc.filler = await asyncio.to_thread(fill, sc.data)
        t_fill = time.monotonic()
        res.faults += 1
        free_seen = [free_bytes(sc.data)]
        while time.monotonic() - t_fill < args.full_seconds:
            await asyncio.sleep(0.5)
            free_seen.append(free_bytes(sc.data))
        full_seen = [t for t, e in sc.platform.events if e["type"] == "storage.full"][n_full:]
        rec_seen = [t for t, e in sc.platform.events if e["type"] == "storage.recovered" and t > t_fill]
        res.notes.append(
            f"filled to {free_seen[0] // 1024} KiB free, {max(free_seen) // 1024} KiB at most while full "
            f"(the kiosk's released reserve and its own WAL); storage.full seen "
            + (f"{full_seen[0] - t_fill:.1f} s after filling" if full_seen else "never")
            + f", {len(full_seen)} storage.full and {len(rec_seen)} storage.recovered while full"
        )
        # What the device said about its storage while the disk stayed full (one sample a second).
        said = [x.get("storage", {}).get("full") for t, x in sc.platform.telemetry if t > t_fill + 1]
        flips = sum(1 for a, b in zip(said, said[1:], strict=False) if a != b)
        res.notes.append(
            f"telemetry while full: {said.count(True)} samples full, {said.count(False)} not full, "
            f"{flips} changes"
        )
        n_rec = sum(1 for _, e in sc.platform.events if e["type"] == "storage.recovered")
        n_tel = len(sc.platform.telemetry)
        sc.filler.unlink()
        sc.filler = None
        t_free = time.monotonic()
        t_rec = t_ok = t_deliver = None
        while time.monotonic() - t_free < 60:
            rec = [t for t, e in sc.platform.events if e["type"] == "storage.recovered"][n_rec:]
            ok = [t for t, x in sc.platform.telemetry[n_tel:] if telemetry_ok(x)]
            if rec and ok:
                t_rec, t_ok = rec[0], ok[0]
                after = [t for t, e in sc.platform.events if e["type"] == EVENT_TYPE and t > max(t_rec, t_ok)]
                if after:
                    t_deliver = after[0]
                    break
            if stream.done() and rec and ok:
                break
            await asyncio.sleep(0.02)
        if t_deliver is not None:
            res.recovery_s = t_deliver - t_free
            res.notes.append(
                f"after freeing: storage.recovered {t_rec - t_free:.2f} s, "  # type: ignore[operator]
                f"telemetry storage ok {t_ok - t_free:.2f} s, next event delivered {res.recovery_s:.2f} s"  # type: ignore[operator]
            )
        else:
            ok = [t for t, x in sc.platform.telemetry[n_tel:] if telemetry_ok(x)]
            res.notes.append(
                "no storage.recovered within 60 s of freeing the space"
                + (f" (telemetry said storage ok {ok[0] - t_free:.2f} s after freeing)" if ok else "")
            )
        await stream
    finally:
        stream.cancel()
    last = await settle(sc.platform, producer)
    # Until the last event arrived (not the settle wait for events that never came).
    res.wall_s = max(last, producer.t_end) - t0
    analyse(res, sc.platform, producer)
    res.events_per_s = res.delivered / res.wall_s
    res.outbox_depth_after = await sc.outbox_depth()


RUNNERS = {
    "baseline": run_baseline,
    "central-kill": run_kills,
    "appliance-kill": run_kills,
    "power-cut": run_kills,
    "disk-full": run_disk_full,
}


async def run_scenario(name: str, work: Path, args: argparse.Namespace) -> Result:
    res = Result(name)
    sc = Scenario(name, work, args)
    try:
        await sc.open(telemetry_s=1 if name == "disk-full" else 30)
        await RUNNERS[name](sc, res)
    except Exception as exc:  # noqa: BLE001 - a failed scenario is reported, the others still run
        res.notes.append(f"scenario failed: {type(exc).__name__}: {exc}")
        log = sc.dir / "appliance.log"
        if log.exists():
            res.notes.append("appliance log tail: " + log.read_text(errors="replace")[-600:])
    finally:
        await sc.close()
    return res


# --- report -----------------------------------------------------------------------------------------


def table(results: list[Result], args: argparse.Namespace, runtime_s: float) -> str:
    head = ["scenario", "sent", "acked", "delivered", "lost", "dup", "out of order", "dropped (policy)"]
    head += ["recovery s", "wall s", "seq holes"]
    rows = [head]
    for r in results:
        rows.append(
            [
                f"{r.scenario}" + (f" ×{r.faults}" if r.faults and r.scenario != "disk-full" else ""),
                f"{r.sent:,}",
                f"{r.acknowledged:,}",
                f"{r.delivered:,}",
                str(r.lost),
                str(r.duplicated),
                str(r.out_of_order),
                str(r.dropped_by_policy),
                "—" if r.recovery_s is None else f"{r.recovery_s:.2f}",
                f"{r.wall_s:.1f}",
                str(r.seq_holes),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    out = [
        f"# bench/fleet_faults.py on {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"{mosquitto_version()}; {args.events:,} events per scenario, rate {args.rate:g}/s for kills, "
        f"{args.full_seconds:g} s full; runtime {runtime_s:.0f} s"
    ]
    for row in rows:
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for r in results:
        if r.reference_per_s:
            out.append(
                f"{r.scenario}: {r.events_per_s:,.0f} events/s through publish_event -> platform; "
                f"mosquitto_pub -q 1 -l through the same central broker {r.reference_per_s:,.0f}/s; "
                f"ratio {r.ratio:.2f}"
            )
        extra = [
            f"epochs {r.epochs}",
            f"producer retries {r.producer_retries}",
            f"delivered unacked {r.delivered_unacked}",
        ]
        if r.seq_reused:
            extra.append(f"seq reused under another epoch {r.seq_reused}")
        if r.outbox_depth_after is not None:
            extra.append(f"outbox depth after {r.outbox_depth_after}")
        out.append(f"{r.scenario}: " + ", ".join(extra))
        out += [f"{r.scenario}: {n}" for n in r.notes]
    return "\n".join(out)


def mosquitto_version() -> str:
    from sim.mosquitto import find_mosquitto

    done = subprocess.run([find_mosquitto(), "-h"], capture_output=True, text=True)
    m = re.search(r"mosquitto version (\S+)", done.stdout + done.stderr)
    return f"mosquitto {m.group(1)}" if m else "mosquitto"


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=5000, help="events per scenario")
    ap.add_argument("--kills", type=int, default=5, help="SIGKILLs per kill scenario")
    ap.add_argument("--scenario", choices=SCENARIOS, help="run only this one")
    ap.add_argument("--full-seconds", type=float, default=60.0, help="how long the disk stays full")
    ap.add_argument("--rate", type=float, default=250.0, help="producer events/s in the kill scenarios")
    ap.add_argument("--down-seconds", type=float, default=0.5, help="pause between a kill and the restart")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, databases)")
    args = ap.parse_args()
    # The producer's and the platform's reconnect notices are expected here; errors still show.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")

    # SIGTERM and Ctrl-C end the run: the finally blocks end every child and unmount.
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)

    work = Path(tempfile.mkdtemp(prefix="kiosk-faults-"))
    t0 = time.monotonic()
    results: list[Result] = []
    try:
        for name in [args.scenario] if args.scenario else SCENARIOS:
            print(f"... {name}", file=sys.stderr, flush=True)
            results.append(await run_scenario(name, work, args))
    finally:
        if args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    runtime = time.monotonic() - t0
    if args.json:
        print(
            json.dumps(
                {"runtime_s": round(runtime, 1), "args": vars(args), "results": [asdict(r) for r in results]},
                indent=2,
            )
        )
    else:
        print(table(results, args, runtime))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: every process the bench started is ended, every mount unmounted", file=sys.stderr)
        sys.exit(130)
