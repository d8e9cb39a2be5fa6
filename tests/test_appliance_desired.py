"""config/desired -> config/reported: newer versions only, validated, atomic, restart needs said; the
device's identity and its whole connection to the platform are locked against remote change.

Contract change (issue 13): every ``fleet.*`` key is locked now, so these tests push the hot keys
``logging.level`` and ``storage.outbox_quota_mb`` where they used to push ``fleet.telemetry_interval_s``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fleet_helpers import Platform

from appliance.daemon import Appliance


def reports(p: Platform) -> list[dict]:
    return p.of("config/reported")


async def test_newer_version_applies_hot_and_reports(kiosk: Appliance, platform: Platform, tmp_path: Path):
    await platform.publish(
        "config/desired",
        {"version": 3, "config": {"storage": {"outbox_quota_mb": 50}, "logging": {"level": "DEBUG"}}},
        retain=True,
    )
    report = (await platform.wait_for(lambda: reports(platform), what="reported"))[-1]
    assert report["version"] == 3 and report["result"] == "applied" and report["errors"] == []
    assert set(report["changed"]) == {"storage.outbox_quota_mb", "logging.level"}
    assert kiosk.config.storage.outbox_quota_mb == 50 and kiosk.outbox.quota_bytes == 50_000_000
    stored = json.loads((tmp_path / "data" / "config-desired.json").read_text())
    assert stored["version"] == 3
    # Older and equal versions arriving late change nothing.
    await platform.publish("config/desired", {"version": 2, "config": {"storage": {"outbox_quota_mb": 99}}})
    await platform.publish("config/desired", {"version": 3, "config": {"storage": {"outbox_quota_mb": 77}}})
    await asyncio.sleep(0.5)
    assert kiosk.config.storage.outbox_quota_mb == 50 and len(reports(platform)) == 1
    birth = platform.of("birth")[-1]
    assert birth["config_version"] == 3


async def test_restart_needed_keys_are_reported(kiosk: Appliance, platform: Platform):
    await platform.publish("config/desired", {"version": 1, "config": {"logging": {"tail_lines": 500}}})
    report = (await platform.wait_for(lambda: reports(platform), what="reported"))[-1]
    assert report["result"] == "pending_restart" and report["restart_required"] == ["logging.tail_lines"]


@pytest.mark.parametrize(
    "doc, fragment",
    [
        ({"version": 1, "config": {"logging": {"levle": "DEBUG"}}}, "logging.levle: unknown key"),
        ({"version": 1, "config": {"storage": {"outbox_quota_mb": -1}}}, "storage.outbox_quota_mb = -1"),
        (
            {"version": 1, "config": {"device": {"id": "someone-else"}}},
            "device.id: may not be changed remotely",
        ),
        ({"version": 1, "config": {"storage": {"data_dir": "/"}}}, "storage.data_dir: may not be changed"),
        ({"version": "1", "config": {}}, "version must be a positive integer"),
        ({"version": 1, "config": []}, "config must be a JSON object"),
        ({"version": 1, "config": {}, "extra": 1}, "unknown field"),
    ],
)
async def test_bad_pushes_are_rejected_with_located_errors(
    kiosk: Appliance, platform: Platform, doc, fragment
):
    before = kiosk.config
    await platform.publish("config/desired", doc)
    report = (await platform.wait_for(lambda: reports(platform), what="reported"))[-1]
    assert report["result"] == "rejected"
    assert any(fragment in e for e in report["errors"]), report["errors"]
    assert kiosk.config == before and kiosk.desired.version == 0
    # A corrected push with the same version is still accepted afterwards.
    await platform.publish("config/desired", {"version": 1, "config": {"logging": {"level": "WARNING"}}})
    await platform.wait_for(lambda: reports(platform)[-1]["result"] == "applied", what="applied after fix")


async def test_garbage_desired_payload_keeps_the_daemon_running(kiosk: Appliance, platform: Platform):
    await platform.publish("config/desired", b"\x00\xffnot json")
    report = (await platform.wait_for(lambda: reports(platform), what="reported"))[-1]
    assert report["result"] == "rejected" and "not UTF-8" in report["errors"][0]
    assert (await platform.command("ping"))["status"] == 200


async def test_applied_config_survives_restart(kiosk_config: Path, platform: Platform):
    app = Appliance(kiosk_config)
    await app.start()
    await asyncio.wait_for(app.fleet.first_online.wait(), 10)
    await platform.publish(
        "config/desired", {"version": 5, "config": {"storage": {"outbox_quota_mb": 9}}}, retain=True
    )
    await platform.wait_for(lambda: reports(platform), what="reported")
    await app.stop()
    app2 = Appliance(kiosk_config)
    await app2.start()
    try:
        assert app2.config.storage.outbox_quota_mb == 9 and app2.desired.version == 5
        await asyncio.wait_for(app2.fleet.first_online.wait(), 10)
        await asyncio.sleep(0.5)
        assert len(reports(platform)) == 1, "the retained v5 is not applied twice"
    finally:
        await app2.stop()


async def test_sighup_style_reload_keeps_old_config_on_error(kiosk: Appliance, kiosk_config: Path):
    text = kiosk_config.read_text()
    kiosk_config.write_text(text.replace("telemetry_interval_s = 30", "telemetry_interval_s = 12"))
    assert await kiosk.reload_file() == []
    assert kiosk.config.fleet.telemetry_interval_s == 12
    kiosk_config.write_text(text + "\n[fleet.bogus]\n")
    await kiosk.reload_file()
    assert kiosk.config.fleet.telemetry_interval_s == 12, "a broken file must not replace a working config"


async def test_a_change_that_cannot_be_stored_is_not_applied(
    kiosk: Appliance, platform: Platform, tmp_path: Path
):
    """The platform is told "failed" only for a change that is not live (a restart would undo it)."""
    blocked = tmp_path / "data" / "config-desired.json"
    blocked.mkdir()  # the overlay's file cannot be replaced: a directory with something in it
    (blocked / "x").write_text("in the way")
    before = kiosk.config.logging.level
    await platform.publish("config/desired", {"version": 7, "config": {"logging": {"level": "ERROR"}}})
    report = (await platform.wait_for(lambda: reports(platform), what="reported"))[-1]
    assert report["version"] == 7 and report["result"] == "failed", report
    assert kiosk.config.logging.level == before and kiosk.desired.version < 7


# --- the locked connection ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overlay, keys",
    [
        ({"fleet": {"host": "rogue.example.net", "port": 8883}}, ["fleet.host", "fleet.port"]),
        ({"fleet": {"tls": {"ca": "/tmp/rogue-ca.pem"}}}, ["fleet.tls.ca"]),
        ({"fleet": {"username": "kiosk-0001", "password": "stolen"}}, ["fleet.password", "fleet.username"]),
        ({"fleet": {"reply_prefixes": ["platform/replies"]}}, ["fleet.reply_prefixes"]),
        ({"fleet": {"telemetry_interval_s": 5}}, ["fleet.telemetry_interval_s"]),
        ({"device": {"region": ["11", "1101", "110101", "110101001", "110101001001"]}}, ["device.region"]),
        ({"bus": {"port": 1884}}, ["bus.port"]),
        # One locked key spoils the whole document: the harmless part is not applied either.
        ({"fleet": {"host": "rogue.example.net"}, "logging": {"level": "DEBUG"}}, ["fleet.host"]),
    ],
)
async def test_a_desired_config_touching_the_connection_is_rejected_as_locked(
    kiosk: Appliance, platform: Platform, tmp_path: Path, overlay, keys
):
    """Push a desired config that moves the kiosk to another broker: expect config/reported rejected,
    reason locked, the keys named, nothing stored or applied, and the kiosk still on its broker."""
    before, connects = kiosk.config, kiosk.fleet.connects
    await platform.publish("config/desired", {"version": 2, "config": overlay}, retain=True)
    report = (await platform.wait_for(lambda: reports(platform), what="reported"))[-1]
    assert report["version"] == 2 and report["result"] == "rejected" and report["reason"] == "locked"
    assert report["keys"] == keys and report["running_version"] == 0
    assert [e.split(":")[0] for e in report["errors"]] == keys
    assert "stolen" not in json.dumps(report)
    rejected = await platform.wait_for(lambda: platform.events("config.rejected"), what="config.rejected")
    assert rejected[-1]["data"]["reason"] == "locked" and rejected[-1]["data"]["keys"] == keys
    assert kiosk.config == before and kiosk.desired.version == 0
    assert not (tmp_path / "data" / "config-desired.json").exists()
    # Still on the real broker it was configured with, the same connection, answering.
    assert (await platform.command("ping"))["status"] == 200
    assert kiosk.fleet.connected and kiosk.fleet.connects == connects


async def test_a_rejected_broker_change_is_not_applied_by_a_restart_either(
    kiosk_config: Path, platform: Platform
):
    """fleet.host used to be "restart required": stored, then used at the next start. Not any more."""
    app = Appliance(kiosk_config)
    await app.start()
    await asyncio.wait_for(app.fleet.first_online.wait(), 10)
    await platform.publish(
        "config/desired", {"version": 7, "config": {"fleet": {"host": "203.0.113.7"}}}, retain=True
    )
    await platform.wait_for(lambda: reports(platform), what="reported")
    await app.stop()
    app2 = Appliance(kiosk_config)
    await app2.start()
    try:
        await asyncio.wait_for(app2.fleet.first_online.wait(), 10)
        assert app2.config.fleet.host == "127.0.0.1" and app2.desired.version == 0
        online = await platform.wait_for(
            lambda: [s for s in platform.of("state") if s["state"] == "online" and s["epoch"] == 2],
            what="online again, epoch 2, on the same broker",
        )
        assert online
        assert (await platform.command("ping"))["status"] == 200
    finally:
        await app2.stop()


async def test_locked_keys_stored_by_an_older_firmware_are_not_applied(
    kiosk_config: Path, platform: Platform, tmp_path: Path
):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "config-desired.json").write_text(
        json.dumps(
            {
                "version": 4,
                "config": {
                    "fleet": {"host": "rogue.example.net", "telemetry_interval_s": 5},
                    "storage": {"data_dir": "/", "outbox_quota_mb": 10},
                    "logging": {"level": "DEBUG"},
                },
            }
        )
    )
    app = Appliance(kiosk_config)
    await app.start()
    try:
        await asyncio.wait_for(app.fleet.first_online.wait(), 10)
        assert app.config.fleet.host == "127.0.0.1" and app.config.fleet.telemetry_interval_s == 30
        assert app.config.storage.data_dir == data
        assert app.config.storage.outbox_quota_mb == 10 and app.config.logging.level == "DEBUG"
        assert app.desired.overlay == {"storage": {"outbox_quota_mb": 10}, "logging": {"level": "DEBUG"}}
    finally:
        await app.stop()


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b'{"version": NaN, "config": {}}', "NaN is not a JSON number"),
        (b'{"version": Infinity, "config": {}}', "Infinity is not a JSON number"),
        (b'{"version": 1e400, "config": {}}', "out of range"),
        (b'{"version": 9007199254740992, "config": {}}', "from 1 to 2^53 - 1"),
        (b'{"version": 9223372036854775808, "config": {}}', "from 1 to 2^53 - 1"),
        (b'{"version": 1' + b"0" * 400 + b', "config": {}}', "from 1 to 2^53 - 1"),
        (b'{"version": 0, "config": {}}', "from 1 to 2^53 - 1"),
        (b'{"version": -3, "config": {}}', "from 1 to 2^53 - 1"),
        (b'{"version": 2.0, "config": {}}', "positive integer"),
    ],
)
async def test_versions_outside_the_json_safe_range_are_rejected(
    kiosk: Appliance, platform: Platform, payload, fragment
):
    await platform.publish("config/desired", payload)
    report = (await platform.wait_for(lambda: reports(platform), what="reported"))[-1]
    assert report["result"] == "rejected" and report["reason"] == "malformed" and report["version"] is None
    assert fragment in report["errors"][0], report["errors"]
    assert kiosk.desired.version == 0
    # The largest JSON-safe version is fine.
    top = 2**53 - 1
    await platform.publish("config/desired", {"version": top, "config": {"logging": {"level": "WARNING"}}})
    await platform.wait_for(lambda: reports(platform)[-1]["version"] == top, what="v2^53-1 applied")
    assert reports(platform)[-1]["result"] == "applied" and kiosk.desired.version == top
