"""config/desired -> config/reported: newer versions only, validated, atomic, restart needs said."""

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
        {"version": 3, "config": {"fleet": {"telemetry_interval_s": 5}, "logging": {"level": "DEBUG"}}},
        retain=True,
    )
    report = (await platform.wait_for(lambda: reports(platform), what="reported"))[-1]
    assert report["version"] == 3 and report["result"] == "applied" and report["errors"] == []
    assert set(report["changed"]) == {"fleet.telemetry_interval_s", "logging.level"}
    assert kiosk.config.fleet.telemetry_interval_s == 5
    stored = json.loads((tmp_path / "data" / "config-desired.json").read_text())
    assert stored["version"] == 3
    # Older and equal versions arriving late change nothing.
    await platform.publish(
        "config/desired", {"version": 2, "config": {"fleet": {"telemetry_interval_s": 99}}}
    )
    await platform.publish(
        "config/desired", {"version": 3, "config": {"fleet": {"telemetry_interval_s": 77}}}
    )
    await asyncio.sleep(0.5)
    assert kiosk.config.fleet.telemetry_interval_s == 5 and len(reports(platform)) == 1
    birth = platform.of("birth")[-1]
    assert birth["config_version"] == 3


async def test_restart_needed_keys_are_reported(kiosk: Appliance, platform: Platform):
    await platform.publish("config/desired", {"version": 1, "config": {"fleet": {"keepalive_s": 60}}})
    report = (await platform.wait_for(lambda: reports(platform), what="reported"))[-1]
    assert report["result"] == "pending_restart" and report["restart_required"] == ["fleet.keepalive_s"]


@pytest.mark.parametrize(
    "doc, fragment",
    [
        (
            {"version": 1, "config": {"fleet": {"telemetry_intervall_s": 5}}},
            "fleet.telemetry_intervall_s: unknown key",
        ),
        ({"version": 1, "config": {"fleet": {"port": 70000}}}, "fleet.port = 70000"),
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
    await platform.publish("config/desired", {"version": 1, "config": {"fleet": {"telemetry_interval_s": 7}}})
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
        "config/desired", {"version": 5, "config": {"fleet": {"telemetry_interval_s": 9}}}, retain=True
    )
    await platform.wait_for(lambda: reports(platform), what="reported")
    await app.stop()
    app2 = Appliance(kiosk_config)
    await app2.start()
    try:
        assert app2.config.fleet.telemetry_interval_s == 9 and app2.desired.version == 5
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
