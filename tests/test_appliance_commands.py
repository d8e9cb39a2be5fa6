"""Platform commands: status codes, at-most-once by id (also across restarts), hostile requests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from fleet_helpers import ApplianceProcess, Platform

from appliance.daemon import Appliance
from kiosk_core.commands import CommandSpec, OpenParams, body_of


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
