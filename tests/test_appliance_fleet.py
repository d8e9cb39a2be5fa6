"""The fleet link as the platform sees it: presence, epochs, Will, and events that are never lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fleet_helpers import ApplianceProcess, Platform, produce, wait_appliance_ready

from appliance.fleet import TokenBucket
from kiosk_core.backoff import full_jitter as backoff_delay
from sim.mosquitto import Mosquitto


def states(p: Platform) -> list[tuple[str, int]]:
    return [(s["state"], s["epoch"]) for s in p.of("state")]


async def test_comes_online_with_birth_and_says_offline_on_clean_stop(
    platform: Platform, appliance: ApplianceProcess
):
    await platform.wait_for(lambda: ("online", 1) in states(platform), what="retained online, epoch 1")
    birth = (await platform.wait_for(lambda: platform.of("birth"), what="birth"))[-1]
    assert birth["epoch"] == 1 and birth["device"]["id"] == "kiosk-0001"
    assert birth["device"]["region"] == ["33", "3308", "330803", "330803100", "330803100201"]
    assert {"ping", "get_status", "rebirth", "set_log_level", "collect_logs", "reboot"} <= set(
        birth["commands"]
    )
    assert isinstance(birth["time_synced"], bool) and birth["firmware"]
    started = await platform.wait_for(lambda: platform.events("device.started"), what="device.started")
    # stored before or after the first CONNECT: the epoch of the newest connection at that moment
    assert started[0]["seq"] >= 1 and started[0]["epoch"] in (0, 1)
    assert appliance.terminate() == 0
    await platform.wait_for(lambda: states(platform)[-1] == ("offline", 1), what="offline")
    assert "lost" not in [s for s, _ in states(platform)], "a clean stop must not fire the Will"


async def test_kill9_fires_the_will_with_its_epoch_and_restart_bumps_it(
    platform: Platform, appliance: ApplianceProcess, kiosk_config: Path, tmp_path: Path
):
    await platform.wait_for(lambda: ("online", 1) in states(platform), what="online 1")
    appliance.kill9()
    await platform.wait_for(lambda: ("lost", 1) in states(platform), what="Will: lost with epoch 1")
    again = ApplianceProcess(kiosk_config, tmp_path / "appliance2.log").start()
    try:
        await platform.wait_for(lambda: ("online", 2) in states(platform), what="online with epoch 2")
        # A stale Will (an older epoch) arriving late is recognisable: the platform keeps the newest epoch.
        await platform.publish("state", {"state": "lost", "epoch": 1, "ts": 0}, retain=True)
        await platform.wait_for(lambda: states(platform)[-1] == ("lost", 1), what="stale will seen")
        newest = max(states(platform), key=lambda s: s[1])
        assert newest == ("online", 2)
    finally:
        again.terminate()


async def test_events_survive_central_broker_outage_in_order_exactly_once(
    platform_durable: Platform, appliance: ApplianceProcess, central_broker: Mosquitto, bus_broker: Mosquitto
):
    # The platform's session is persistent and saved by the broker: after the restart, the kiosk may
    # reconnect before the platform does, and what it sends meanwhile is queued for the platform.
    platform = platform_durable
    await platform.wait_for(lambda: platform.of("state"), what="online")
    await wait_appliance_ready(bus_broker.port)
    await produce(
        bus_broker.port, [{"type": "test.flow", "data": {"n": i}, "id": f"a{i}"} for i in range(200)]
    )
    # A PUBACK makes the broker responsible; a SIGKILLed broker may lose what it had not forwarded yet,
    # which is the broker's loss, not the kiosk's. So cut the platform off once it has those 200.
    await platform.wait_for(lambda: len(platform.unique_events("test.flow")) >= 200, what="first 200")
    central_broker.kill()
    # While the platform is unreachable the kiosk keeps accepting and storing events.
    await produce(
        bus_broker.port, [{"type": "test.flow", "data": {"n": i}, "id": f"a{i}"} for i in range(200, 700)]
    )
    await asyncio.sleep(1.0)
    await platform.stop()
    central_broker.start()
    p2 = await platform.again().start()
    try:
        assert p2.session_present, "the restarted broker kept the platform's session"
        await produce(
            bus_broker.port, [{"type": "test.flow", "data": {"n": i}, "id": f"a{i}"} for i in range(700, 800)]
        )
        got_after = await p2.wait_for(
            lambda: (
                len({e["data"]["n"] for e in p2.events("test.flow")}) >= 100
                and max(e["data"]["n"] for e in p2.events("test.flow")) == 799
            ),
            timeout_s=30,
            what="events after the outage",
        )
        assert got_after
        seqs = [e["seq"] for e in p2.events("test.flow")]
        assert seqs == sorted(seqs), "delivery must be in seq order"
        ns = [e["data"]["n"] for e in p2.unique_events("test.flow")]
        # Everything not delivered before the outage arrives after it, in order, once per seq.
        assert ns == sorted(ns) and ns[-1] == 799
        before = {e["data"]["n"] for e in platform.unique_events("test.flow")}
        assert before | set(ns) == set(range(800)), "no event may be lost"
    finally:
        await p2.stop()


async def test_appliance_kill9_while_events_flow_loses_nothing_acknowledged(
    platform: Platform, appliance: ApplianceProcess, bus_broker: Mosquitto, kiosk_config: Path, tmp_path: Path
):
    await platform.wait_for(lambda: platform.of("state"), what="online")
    await wait_appliance_ready(bus_broker.port)
    producer = asyncio.create_task(
        produce(
            bus_broker.port, [{"type": "test.crash", "data": {"n": i}, "id": f"c{i}"} for i in range(3000)]
        )
    )
    await platform.wait_for(
        lambda: len(platform.events("test.crash")) > 300, timeout_s=20, what="flow started"
    )
    appliance.kill9()
    await producer  # the local broker acknowledged every event: the appliance owes all of them
    again = ApplianceProcess(kiosk_config, tmp_path / "appliance2.log").start()
    try:
        await platform.wait_for(
            lambda: len(platform.unique_events("test.crash")) >= 3000,
            timeout_s=40,
            what="all 3000 events after restart",
        )
        unique = platform.unique_events("test.crash")
        assert sorted(e["data"]["n"] for e in unique) == list(range(3000)), (
            "each event exactly once after dedup"
        )
        seqs = [e["seq"] for e in unique]
        assert len(set(seqs)) == len(seqs)
    finally:
        again.terminate()


def test_backoff_is_full_jitter_capped():
    import random

    rng = random.Random(7)
    samples = [backoff_delay(a, 1.0, 300.0, rng) for a in range(40) for _ in range(20)]
    assert all(0 <= s <= 300 for s in samples)
    assert max(backoff_delay(3, 1.0, 300.0, rng) for _ in range(200)) <= 8
    assert max(samples) > 200, "the cap is reached after enough attempts"
    assert len({round(s, 6) for s in samples}) > 700, "jitter: no lock-step"


async def test_token_bucket_caps_rate():
    bucket = TokenBucket(200, burst=10)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(110):
        await bucket.take()
    assert loop.time() - t0 >= 0.45
