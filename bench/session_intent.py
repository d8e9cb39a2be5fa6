"""Benchmark: UI intent -> the session state that answers it, through a real local mosquitto.

    .venv/bin/python bench/session_intent.py [--intents 300]

The UI's "screen change after an intent <= 100 ms" budget (DESIGN.md) has two halves: the appliance
turning an intent into a published state, and the UI drawing it. This measures the first half with
the real ``SessionService`` and ``LocalBus`` on a real mosquitto: a client publishes
``kiosk/local/intent/select_department`` with a fresh ``ref`` and waits for the retained state whose
``ref`` echoes it. Reference in the same run: a bare MQTT round trip through the same broker (publish,
a second client echoes a state-sized message back: the same two hops, no session machine), so the ratio
is what the session service adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.config import parse  # noqa: E402
from appliance.session.service import SessionService  # noqa: E402
from kiosk_core.localbus import LocalBus, dumps  # noqa: E402
from sim.mosquitto import Mosquitto  # noqa: E402


class Ctx:
    def __init__(self, config: Any, data_dir: Path, bus: LocalBus) -> None:
        self.config, self.data_dir, self.bus = config, data_dir, bus
        self.log = logging.getLogger("bench")

    async def emit(self, type: str, data: dict[str, Any], *, durable: bool = True) -> None:
        pass

    def listen(self, prefix: str, listener: Any) -> None:
        pass

    def publish_state(self, name: str, state: dict[str, Any] | None) -> None:
        self.bus.publish(f"kiosk/local/state/{name}", dumps(state), retain=True)

    def publish_local(
        self, topic: str, payload: dict[str, Any], *, qos: int = 1, retain: bool = False
    ) -> None:
        self.bus.publish(topic, payload, qos=qos, retain=retain)

    def subscribe_local(self, topic_filter: str, handler: Any) -> None:
        self.bus.subscribe(topic_filter, lambda msg: handler(msg.topic, msg.payload))

    def register_rpc(self, service: str, handlers: Any) -> None:
        self.bus.serve(service, handlers)

    async def call_rpc(
        self, service: str, method: str, params: dict[str, Any], timeout_s: float = 5.0
    ) -> dict:
        return await self.bus.call(service, method, params, timeout_s)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def round_trips(
    port: int, n: int, topic: str, payload: Any, match: Any, reply_topic: str = "kiosk/local/state/session"
) -> list[float]:
    client = LocalBus("127.0.0.1", port, name="bench-client")
    waiter: dict[str, asyncio.Future[None]] = {}

    def on_msg(msg: Any) -> None:
        key = match(msg.payload)
        fut = waiter.get(key) if key else None
        if fut is not None and not fut.done():
            fut.set_result(None)

    client.subscribe(reply_topic, on_msg)
    await client.start()
    await asyncio.sleep(0.3)
    out = []
    loop = asyncio.get_running_loop()
    for i in range(n):
        ref = f"b{i}"
        waiter[ref] = loop.create_future()
        started = time.perf_counter()
        client.publish(topic, dumps(payload(i, ref)))
        await asyncio.wait_for(waiter[ref], 5)
        out.append((time.perf_counter() - started) * 1000)
    await client.stop()
    return out


async def main(n: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    with (
        tempfile.TemporaryDirectory() as tmp,
        Mosquitto(workdir=Path(tmp) / "broker", name="bench") as broker,
    ):
        bus = LocalBus("127.0.0.1", broker.port, name="appliance")
        await bus.start()
        cfg = parse(
            {
                "device": {
                    "id": "bench",
                    "name": "bench",
                    "region": ["33", "3308", "330803", "330803100", "330803100201"],
                },
                "storage": {"data_dir": str(Path(tmp) / "data")},
            }
        )
        service = SessionService(Ctx(cfg, Path(tmp) / "data", bus))
        await service.start()
        for _ in range(50):  # the service subscribes asynchronously: wake it until the catalog shows
            bus.publish("kiosk/local/intent/wake", dumps({}))
            await asyncio.sleep(0.1)
            if service.machine.screen == "catalog":
                break
        deps = ("shebao", "yibao")
        session = await round_trips(
            broker.port,
            n,
            "kiosk/local/intent/select_department",
            lambda i, ref: {"department_id": deps[i % 2], "ref": ref},
            lambda p: json.loads(p).get("ref"),
        )
        # Reference: the same two hops with a client that only echoes a state-sized message back.
        echo = LocalBus("127.0.0.1", broker.port, name="echo")
        pad = "x" * len(dumps(service.machine.view()))
        echo.subscribe(
            "bench/in",
            lambda m: echo.publish(
                "bench/out", dumps({"ref": json.loads(m.payload)["ref"], "pad": pad}), retain=True
            ),
        )
        await echo.start()
        raw = await round_trips(
            broker.port,
            n,
            "bench/in",
            lambda i, ref: {"ref": ref},
            lambda p: json.loads(p).get("ref"),
            reply_topic="bench/out",
        )
        await echo.stop()
        await service.stop()
        await bus.stop()
    s50, s99, r50, r99 = pct(session, 50), pct(session, 99), pct(raw, 50), pct(raw, 99)
    print(
        f"intent -> state through SessionService: p50 {s50:.2f} ms, p99 {s99:.2f} ms, max {max(session):.2f} ms "
        f"(mean {statistics.mean(session):.2f}, n={n})"
    )
    print(f"bare echo client, same two hops:       p50 {r50:.2f} ms, p99 {r99:.2f} ms")
    print(
        f"ratio (session / bare) p50 {s50 / r50:.1f}x, p99 {s99 / r99:.1f}x; budget for the whole screen change: 100 ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--intents", type=int, default=300)
    asyncio.run(main(parser.parse_args().intents))
