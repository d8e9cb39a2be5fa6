"""Platform commands: status codes, at-most-once by id (also across restarts and back to back), hostile
requests, and Response Topics that are no place for a reply."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
from fleet_helpers import ROOT, ApplianceProcess, Platform

from appliance import config as config_mod
from appliance.commands import response_topic_refusal
from appliance.config import DEFAULT_REPLY_PREFIXES
from appliance.daemon import Appliance
from kiosk_core.commands import CommandSpec, OpenParams, body_of
from kiosk_core.errors import ConfigError
from kiosk_core.mqtt import Message, MqttConnection
from sim.mosquitto import Mosquitto


def spec(name: str, handler, params=OpenParams, personal: bool = False) -> CommandSpec:
    """A test command: the handler gets the body as a dict, like the session's commands."""
    return CommandSpec(
        name=name,
        summary="test",
        params=params,
        handler=lambda p: handler(body_of(p)),
        personal=personal,
        process="appliance",
    )


async def test_ping_and_status(kiosk: Appliance, platform: Platform):
    reply = await platform.command("ping", {"id": "p-1"})
    assert reply["status"] == 200 and reply["pong"] is True and reply["id"] == "p-1"
    status = await platform.command("get_status", {})
    assert status["status"] == 200
    assert status["health"]["fleet"]["status"] == "ok"
    assert "depth" in status["outbox"]


async def test_a_command_id_runs_once_and_gets_the_first_reply_again(kiosk: Appliance, platform: Platform):
    runs = []

    async def transfer(params):
        runs.append(params)
        return {"run": len(runs)}

    kiosk.dispatcher.register(spec("test.transfer", transfer))
    first = await platform.command("test.transfer", {"id": "t-42", "amount": 1})
    second = await platform.command("test.transfer", {"id": "t-42", "amount": 1})
    assert first == second == {"status": 200, "run": 1, "id": "t-42", "name": "test.transfer"}
    assert len(runs) == 1
    # Without an id, the Correlation Data identifies the request.
    a = await platform.command("test.transfer", {}, correlation=b"corr-1")
    b = await platform.command("test.transfer", {}, correlation=b"corr-1")
    assert a == b and len(runs) == 2


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"{not json", "not JSON"),
        (b"[1,2]", "must be a JSON object"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"id": 7}', "id must be a string"),
        (b'{"id": "' + b"x" * 300 + b'"}', "id must be a string"),
        (b'{"expires_at": "tomorrow"}', "ISO 8601"),
        (b'{"expires_at": true}', "not a boolean"),
        (b'{"expires_at": 1e400}', "out of range"),
        (b'{"expires_at": 1' + b"0" * 400 + b"}", "finite"),
        (b'{"expires_at": NaN}', "not JSON"),
        (b'{"lines": -1}', "lines must be"),
        (b'{"lines": "all"}', "lines must be"),
        (b"x" * 300_000, "at most"),
    ],
)
async def test_malformed_requests_get_400_naming_the_problem(
    kiosk: Appliance, platform: Platform, payload, fragment
):
    reply = await platform.command("collect_logs", payload)
    assert reply["status"] == 400, reply
    assert fragment in reply["error"]
    assert (await platform.command("ping"))["status"] == 200, "the daemon keeps running"


async def test_unknown_expired_and_unconfirmed_commands(kiosk: Appliance, platform: Platform):
    unknown = await platform.command("format_disk", {"id": "u1"})
    assert unknown["status"] == 404 and "ping" in unknown["commands"]
    weird = await platform.command("Format Disk!", {"id": "u2"})
    assert weird["status"] == 404
    expired = await platform.command("ping", {"id": "e1", "expires_at": time.time() - 5})
    assert expired["status"] == 410
    iso = await platform.command("ping", {"id": "e2", "expires_at": "2099-01-01T00:00:00+08:00"})
    assert iso["status"] == 200
    assert (await platform.command("reboot", {"id": "r0"}))["status"] == 400
    assert (await platform.command("reboot", {"id": "r0b", "confirm": "yes"}))["status"] == 400
    assert (await platform.command("set_log_level", {"level": "LOUD"}))["status"] == 400


async def test_a_request_without_response_topic_is_ignored_and_the_daemon_lives(
    kiosk: Appliance, platform: Platform
):
    runs = []

    async def count(params):
        runs.append(1)
        return {}

    kiosk.dispatcher.register(spec("test.count", count))
    with pytest.raises(TimeoutError):
        await platform.command("test.count", {"id": "n1"}, response_topic=None, timeout_s=1)
    assert runs == []
    assert (await platform.command("ping"))["status"] == 200


async def test_handler_errors_become_status_codes(kiosk: Appliance, platform: Platform):
    from kiosk_core.errors import Conflict

    async def busy(params):
        raise Conflict("a session is in progress")

    async def buggy(params):
        return 1 / 0

    kiosk.dispatcher.register(spec("test.busy", busy))
    kiosk.dispatcher.register(spec("test.buggy", buggy))
    assert (await platform.command("test.busy", {"id": "b1"}))["status"] == 409
    crashed = await platform.command("test.buggy", {"id": "b2"})
    assert crashed["status"] == 500 and "ZeroDivisionError" in crashed["error"]
    assert (await platform.command("ping"))["status"] == 200


async def test_logs_and_log_level(kiosk: Appliance, platform: Platform):
    import logging

    logging.getLogger("kiosk.test").warning("resident 330803199001011234 password=hunter2")
    logs = await platform.command("collect_logs", {"lines": 50})
    text = "\n".join(logs["lines"])
    assert "3308**********1234" in text and "330803199001011234" not in text and "hunter2" not in text
    assert len(logs["lines"]) <= 50
    reply = await platform.command("set_log_level", {"level": "debug", "logger": "kiosk.fleet"})
    assert reply["status"] == 200 and logging.getLogger("kiosk.fleet").level == logging.DEBUG


async def test_reboot_is_accepted_then_completed(
    kiosk_config: Path, platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    marker = tmp_path / "rebooted"
    monkeypatch.setenv("KIOSK_REBOOT_COMMAND", f"touch {marker}")
    app = Appliance(kiosk_config)
    await app.start()
    try:
        await asyncio.wait_for(app.fleet.first_online.wait(), 10)
        reply = await platform.command("reboot", {"id": "rb1", "confirm": True, "delay_s": 0})
        assert reply["status"] == 202
        done = await platform.wait_for(lambda: platform.events("command.completed"), what="command.completed")
        assert done[0]["data"] == {"id": "rb1", "name": "reboot", "status": 200, "rebooting": True}
        assert marker.exists()
        again = await platform.command("reboot", {"id": "rb1", "confirm": True, "delay_s": 0})
        assert again["status"] == 202
        await asyncio.sleep(0.3)
        assert len(platform.events("command.completed")) == 1, "a repeated id never runs twice"
    finally:
        await app.stop()


async def test_command_ids_are_remembered_across_restarts(
    kiosk_config: Path, platform: Platform, tmp_path: Path
):
    first = ApplianceProcess(kiosk_config, tmp_path / "a1.log").start()
    try:
        await platform.wait_for(lambda: platform.of("state"), what="online")
        r1 = await platform.command("rebirth", {"id": "rb-x"})
    finally:
        first.terminate()
    births = len(platform.of("birth"))
    second = ApplianceProcess(kiosk_config, tmp_path / "a2.log").start()
    try:
        await platform.wait_for(lambda: len(platform.of("birth")) > births, what="second birth")
        births = len(platform.of("birth"))
        r2 = await platform.command("rebirth", {"id": "rb-x"})
        assert r1 == r2 and r1["epoch"] == 1
        await asyncio.sleep(0.3)
        assert len(platform.of("birth")) == births, "the repeated rebirth must not run again"
    finally:
        second.terminate()


# --- at most once, also back to back -----------------------------------------------------------------


async def test_two_requests_with_the_same_id_back_to_back_run_once(kiosk: Appliance, platform: Platform):
    """Send every id twice at once (two Correlation Data, one id): each id runs exactly once. Before the
    id was claimed in memory, both lookups found nothing and both requests ran."""
    runs: list[str] = []

    async def transfer(params):
        runs.append(params["n"])
        return {"run": len(runs)}

    kiosk.dispatcher.register(spec("test.transfer", transfer))
    pairs = [
        asyncio.gather(
            platform.command("test.transfer", {"id": f"pay-{n}", "n": n}),
            platform.command("test.transfer", {"id": f"pay-{n}", "n": n}),
        )
        for n in range(20)
    ]
    replies = await asyncio.gather(*pairs)
    assert sorted(runs) == list(range(20)), "every id ran exactly once"
    for first, second in replies:
        statuses = sorted([first["status"], second["status"]])
        # The repeat is either answered "already running" (not run) or, once done, with the first reply.
        assert statuses in ([200, 200], [200, 202]), (first, second)
        if statuses == [200, 200]:
            assert first == second
        else:
            assert {**first, **second}["detail"] == "already running"
    assert kiosk.dispatcher.counts["duplicates"] == 20
    # Afterwards every repeat gets the stored first reply.
    again = await platform.command("test.transfer", {"id": "pay-3", "n": 3})
    assert again["status"] == 200 and runs.count(3) == 1


async def test_a_reply_that_is_not_json_becomes_a_500(kiosk: Appliance, platform: Platform):
    async def sensor(params):
        return {"temperature_c": float("nan")}

    kiosk.dispatcher.register(spec("test.sensor", sensor))
    reply = await platform.command("test.sensor", {"id": "s-1"})
    assert reply["status"] == 500 and "temperature_c = nan" in reply["error"]
    assert await platform.command("test.sensor", {"id": "s-1"}) == reply, "stored like any other reply"


# --- Response Topics ------------------------------------------------------------------------------

OTHER_DEVICE = "kiosk/v1/33/3308/330803/330803100/330803100202/kiosk-0002"
NOT_FOR_REPLIES = [
    f"{ROOT}/state",  # would overwrite the device's own presence
    f"{ROOT}/config/reported",
    f"{OTHER_DEVICE}/cmd/reboot",  # a command to another device, with this device's credentials
    f"{OTHER_DEVICE}/state",
    "kiosk/v1/33/3308/330803/+/+/+/cmd/reboot",
    "a/#",
    "+/x",
    "platform/replies-evil/1",  # looks like the prefix, is not under it
    "operators/ops-1",
    "kiosk/local/event",
]


async def watch(port: int, filters: list[str]) -> tuple[MqttConnection, list[Message]]:
    conn = MqttConnection(host="127.0.0.1", port=port, client_id=f"watch-{uuid.uuid4().hex[:6]}")
    await conn.connect()
    await conn.subscribe(*[(f, 1) for f in filters])
    seen: list[Message] = []

    async def collect() -> None:
        async for msg in conn.messages():
            seen.append(msg)

    asyncio.get_running_loop().create_task(collect())
    return conn, seen


async def test_a_response_topic_outside_the_platform_reply_prefixes_is_refused_unanswered(
    kiosk: Appliance, platform: Platform, central_broker: Mosquitto
):
    """Send a command whose Response Topic is the kiosk's own state, another kiosk's cmd/ topic
    or a wildcard: it does not run, it is counted as refused, and nothing is published there."""
    runs: list[str] = []

    async def count(params):
        runs.append(params["topic"])
        return {"ok": True}

    kiosk.dispatcher.register(spec("test.count", count))
    watcher, seen = await watch(
        central_broker.port,
        ["a/#", "+/x", f"{ROOT}/state", f"{ROOT}/config/#", f"{OTHER_DEVICE}/#", "platform/#", "operators/#"]
        + ["kiosk/local/#", "kiosk/v1/replies/#"],
    )
    try:
        await asyncio.sleep(0.2)  # the retained state arrives and is not a reply
        ours: set[bytes] = set()
        for topic in NOT_FOR_REPLIES:
            corr = uuid.uuid4().bytes
            ours.add(corr)
            await platform.request("test.count", {"topic": topic}, response_topic=topic, correlation=corr)
        await platform.wait_for(
            lambda: kiosk.dispatcher.counts["refused"] == len(NOT_FOR_REPLIES), what="every request refused"
        )
        # Valid reply topics still work: the platform's, the county centre's shape and the ACL's tree.
        for topic in (platform.reply_topic, "platform/county-7/replies", "kiosk/v1/replies/ops-1/c42"):
            corr = uuid.uuid4().bytes
            await platform.request("test.count", {"topic": topic}, response_topic=topic, correlation=corr)
            await platform.wait_for(
                lambda corr=corr: [m for m in seen if m.correlation_data == corr],
                what=f"the reply on {topic}",
            )
        await platform.wait_for(lambda: len(runs) == 3, what="the three valid requests ran")
        await asyncio.sleep(0.3)
        assert runs == [platform.reply_topic, "platform/county-7/replies", "kiosk/v1/replies/ops-1/c42"]
        stray = [(m.topic, m.payload[:80]) for m in seen if m.correlation_data in ours]
        assert stray == [], "nothing is published on a refused Response Topic"
        assert not [m for m in seen if b"test.count" in m.payload and m.topic in NOT_FOR_REPLIES]
        assert kiosk.dispatcher.counts["refused"] == len(NOT_FOR_REPLIES)
        telemetry = await kiosk.telemetry()
        assert telemetry["commands"]["refused"] == len(NOT_FOR_REPLIES)
        assert kiosk.fleet.connected and (await platform.command("ping"))["status"] == 200
    finally:
        await watcher.close()


@pytest.mark.parametrize(
    "topic, fragment",
    [
        ("platform/replies/a\x00b", "NUL"),
        ("platform/replies/+", "wildcard"),
        ("platform/replies/#", "wildcard"),
        (f"{ROOT}/event", "devices' own topics"),
        ("kiosk/v1", "devices' own topics"),
        ("kiosk/v1/repliesx/1", "devices' own topics"),
        ("platform", "not under a platform reply prefix"),
        ("platform//replies", "not under a platform reply prefix"),
        ("$SYS/broker/x", "not under a platform reply prefix"),
        ("Platform/replies/1", "not under a platform reply prefix"),
    ],
)
def test_response_topic_rules(topic: str, fragment: str):
    refusal = response_topic_refusal(topic, DEFAULT_REPLY_PREFIXES)
    assert refusal is not None and fragment in refusal


@pytest.mark.parametrize(
    "topic",
    ["platform/replies/x", "platform/replies", "platform/c-1/replies", "platform/c-1/replies/a/b"]
    + ["kiosk/v1/replies/county-330803/ops-1", "kiosk/v1/replies"],
)
def test_reply_topics_under_the_default_prefixes_are_fine(topic: str):
    assert response_topic_refusal(topic, DEFAULT_REPLY_PREFIXES) is None


@pytest.mark.parametrize(
    "prefix, fragment",
    [
        ("kiosk/v1/+", "devices' own topics"),
        ("kiosk", "devices' own topics"),
        ("kiosk/v1/33", "devices' own topics"),
        ("platform/#", "may not contain #"),
        ("+/replies", "fixed level"),
        ("$SYS", "fixed level"),
        ("platform/re+", "whole level"),
        ("/platform/replies", "empty levels"),
        ("platform/replies/", "empty levels"),
        ("", "1-200 characters"),
    ],
)
def test_a_reply_prefix_that_would_reach_device_topics_is_a_config_error(
    tmp_path: Path, prefix: str, fragment: str
):
    path = tmp_path / "kiosk.toml"
    path.write_text(
        '[device]\nid = "k"\nname = "n"\nregion = ["33", "3308", "330803", "330803100", "330803100201"]\n'
        f"[fleet]\nreply_prefixes = [{json.dumps(prefix)}]\n"
        f'[storage]\ndata_dir = "{tmp_path}"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert "fleet.reply_prefixes" in str(info.value) and fragment in str(info.value)
