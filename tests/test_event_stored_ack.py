"""The end-to-end acknowledgement for local producers: an event counts as handed over only once the
appliance answers that its outbox committed it (docs/local-bus.md), and ``kiosk event emit`` exits 0
only then. The power-cut stand-in kills the appliance and the local broker together."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import write_config
from fleet_helpers import ApplianceProcess, Platform, wait_appliance_ready

from kiosk_core.errors import CommandError
from kiosk_core.localbus import EVENT_TOPIC, LocalBus
from kiosk_core.payload import dumps
from sim.mosquitto import Mosquitto

# Timing-sensitive and heavy: runs on one xdist worker, one test at a time with the others of its group.
pytestmark = pytest.mark.xdist_group("heavy")


async def kiosk_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kiosk_cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_emit_exits_zero_once_stored_and_never_stores_twice(
    platform: Platform, appliance: ApplianceProcess, bus_broker: Mosquitto, kiosk_config: Path
):
    await wait_appliance_ready(bus_broker.port)
    visit = '{"by": "tech-07", "note": "fan cleaned, card 330803199001011239 checked"}'
    rc, out, err = await kiosk_cli(
        "event", "emit", "maintenance.visit", visit, "--id", "v-1", "--config", str(kiosk_config)
    )
    assert rc == 0, err
    stored = json.loads(out)
    assert stored["stored"] is True and stored["id"] == "v-1" and isinstance(stored["seq"], int)
    got = await platform.wait_for(lambda: platform.events("maintenance.visit"), what="the event")
    assert got[0]["seq"] == stored["seq"]
    assert "330803199001011239" not in json.dumps(got[0]), "the ID number is masked before it is stored"

    # The same id again (a script re-run after a timeout): acknowledged, not stored twice.
    rc, out, err = await kiosk_cli(
        "event", "emit", "maintenance.visit", visit, "--id", "v-1", "--config", str(kiosk_config)
    )
    assert rc == 0, err
    assert json.loads(out) == {"stored": True, "id": "v-1", "producer": "cli", "duplicate": True}
    # A marker event after it: once it is delivered, a second copy of v-1 would have been too.
    rc, out, _ = await kiosk_cli("event", "emit", "maintenance.done", "--config", str(kiosk_config))
    assert rc == 0
    await platform.wait_for(lambda: platform.events("maintenance.done"), what="the marker")
    assert len(platform.unique_events("maintenance.visit")) == 1


async def test_emit_without_the_appliance_says_not_stored(bus_broker: Mosquitto, kiosk_config: Path):
    # The local broker is up and takes the message, but nobody stores it: that is not success.
    rc, out, err = await kiosk_cli(
        "event", "emit", "maintenance.visit", "--timeout", "1.5", "--id", "t-1", "--config", str(kiosk_config)
    )
    assert rc == 1 and out == ""
    assert "not confirmed within 1.5 s" in err and "--id t-1" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad.Type"], "dotted lower-case"),
        (["ok.type", "[1, 2]"], "must be a JSON object"),
        (["ok.type", '{"x": NaN}'], "NaN"),
        (["ok.type", '{"x": '], "is not JSON"),
        (["ok.type", "{}", "--id", "x" * 200], "id must be"),
        (["ok.type", "--timeout", "0"], "--timeout"),
    ],
)
async def test_emit_refuses_unusable_input_with_exit_2(args: list[str], message: str, tmp_path: Path):
    cfg = write_config(tmp_path / "k.toml", bus_port=1, fleet_port=1, data_dir=tmp_path / "d")
    rc, out, err = await kiosk_cli("event", "emit", *args, "--config", str(cfg))
    assert rc == 2 and out == ""
    assert message in err


async def test_emit_with_a_broken_config_exits_2(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[device]\nid = 'x'\nwhat = 1\n")
    rc, _, err = await kiosk_cli("event", "emit", "ok.type", "--config", str(bad))
    assert rc == 2 and str(bad) in err


async def test_the_appliance_answers_each_event_after_its_commit(
    appliance: ApplianceProcess, bus_broker: Mosquitto
):
    await wait_appliance_ready(bus_broker.port)
    bus = LocalBus("127.0.0.1", bus_broker.port, name="probe")
    await bus.start()
    requester = bus.link.requester
    assert requester is not None

    async def send(obj: Any) -> dict[str, Any]:
        payload = obj if isinstance(obj, bytes) else dumps(obj)
        return await requester.request(bus.link, EVENT_TOPIC, payload, timeout_s=5, what="t", expires=False)

    try:
        first = await send({"type": "probe.ok", "data": {"n": 1}, "id": "p1", "producer": "probe"})
        assert first["status"] == 200 and isinstance(first["seq"], int)
        assert await send({"type": "probe.ok", "data": {"n": 1}, "id": "p1", "producer": "probe"}) == {
            "status": 200,
            "duplicate": True,
        }
        for bad, why in [
            (b"not json", "is not JSON"),
            ({"type": "Probe"}, "dotted lower-case"),
            ({"type": "probe.x", "data": [1]}, "data must be a JSON object"),
            ({"type": "probe.x", "extra": 1}, "unknown field"),
        ]:
            reply = await send(bad)
            assert reply["status"] == 400 and why in reply["error"], reply
        # publish_event is the same exchange, with retries: a refusal is a CommandError.
        with pytest.raises(CommandError) as refused:
            await bus.publish_event("probe.x", {"deep": _nested(40)}, timeout_s=5)
        assert refused.value.status == 400
        stored = await bus.publish_event("probe.ok", {"n": 2}, timeout_s=5)
        assert stored.seq is not None and stored.seq > first["seq"] and not stored.duplicate
    finally:
        await bus.stop()


def _nested(depth: int) -> Any:
    out: Any = 1
    for _ in range(depth):
        out = {"d": out}
    return out


@pytest.mark.slow
async def test_power_cut_appliance_and_local_broker_killed_together_loses_nothing_acknowledged(
    platform: Platform, central_broker: Mosquitto, tmp_path: Path
):
    """SIGKILL the appliance and the local broker at once, 5 times, while 4 producers emit. The local
    broker saves every 10 s as in the field, so it loses what it had acknowledged since its last save;
    every event whose stored reply a producer got must still reach the platform, exactly once."""
    bus = Mosquitto(workdir=tmp_path / "bus", name="bus", autosave_s=10)
    bus.start()
    cfg = write_config(
        tmp_path / "kiosk.toml", bus_port=bus.port, fleet_port=central_broker.port, data_dir=tmp_path / "data"
    )
    runs = [ApplianceProcess(cfg, tmp_path / "appliance-0.log").start()]
    per_producer, producers = 250, 4
    acked: set[tuple[int, int]] = set()

    async def producer(p: int) -> None:
        lb = LocalBus("127.0.0.1", bus.port, name=f"producer-{p}")
        await lb.start(wait_s=None)
        try:
            for n in range(per_producer):
                await lb.publish_event("test.power", {"p": p, "n": n}, id=f"{p}-{n}", timeout_s=120)
                acked.add((p, n))
                await asyncio.sleep(random.uniform(0, 0.01))
        finally:
            await lb.stop()

    tasks = [asyncio.create_task(producer(p)) for p in range(producers)]
    try:
        await wait_appliance_ready(bus.port)
        for cut in range(1, 6):
            before = len(acked)
            while len(acked) < before + 60 and not all(t.done() for t in tasks):
                await asyncio.sleep(0.05)
            await asyncio.sleep(random.uniform(0, 0.3))
            runs[-1].kill9()
            bus.kill()  # nothing saved since the last autosave: acknowledged messages are gone
            await asyncio.sleep(random.uniform(0.1, 1.0))
            bus.start()
            runs.append(ApplianceProcess(cfg, tmp_path / f"appliance-{cut}.log").start())
        done, pending = await asyncio.wait(tasks, timeout=240)
        assert not pending, f"producers still waiting after the cuts: {len(acked)} acknowledged"
        for t in done:
            t.result()
        want = {(p, n) for p in range(producers) for n in range(per_producer)}
        assert acked == want
        await platform.wait_for(
            lambda: len(platform.unique_events("test.power")) >= len(want),
            timeout_s=60,
            what="every acknowledged event at the platform",
        )
        unique = platform.unique_events("test.power")
        got = [(e["data"]["p"], e["data"]["n"]) for e in unique]
        assert set(got) == want, f"lost: {sorted(want - set(got))[:10]}"
        assert len(got) == len(set(got)), "an event stored twice (under two seqs)"
        for p in range(producers):
            ns = [n for q, n in got if q == p]
            assert ns == sorted(ns), "each producer's events are stored in the order it sent them"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for run in runs:
            if run.alive:
                run.kill9()
        bus.close()
