"""Firmware updates (docs/ota.md): a real dbus-daemon on a tmp socket, the stand-in RAUC on it, the
appliance as a child process pointed there, the platform over a real broker.

A "reboot" is what the kiosk lives through: the appliance's reboot command only leaves a marker; the test
then stops the appliance, boots the stand-in board again (its boot chooser picks the slot) and starts
the appliance, which finds out from RAUC and its own record what happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fleet_helpers import Platform, wait_appliance_ready
from ota_helpers import OtaBench, birth_where, event_types, sparse_file

from kiosk_core.localbus import LocalBus
from sim.mosquitto import Mosquitto

FIRMWARE_EVENTS = ("firmware.", "device.reboot_requested", "command.completed")


@pytest.fixture
async def bench(tmp_path: Path, bus_broker: Mosquitto, central_broker: Mosquitto) -> AsyncIterator[OtaBench]:
    b = OtaBench(tmp_path, bus_broker.port, central_broker.port)
    try:
        yield b
    finally:
        b.close()


def sequence(platform: Platform) -> list[str]:
    return [t for t in event_types(platform) if t.startswith(FIRMWARE_EVENTS)]


async def arrived(platform: Platform, etype: str, timeout_s: float = 20) -> dict[str, Any]:
    """The data of the one ``etype`` event, once the platform has it."""
    await platform.wait_for(lambda: platform.events(etype), timeout_s, etype)
    return only(platform, etype)


def only(platform: Platform, etype: str) -> dict[str, Any]:
    found = [e["data"] for e in platform.unique_events(etype) if e["type"] == etype]
    assert len(found) == 1, f"{etype}: {found}"
    return found[0]


async def update(platform: Platform, url: str, sha256: str, **kw: Any) -> dict[str, Any]:
    return await platform.command(
        "firmware.update", {"id": f"fw-{sha256[:8]}", "url": url, "sha256": sha256, **kw}
    )


def booted_on(slot: str, version: str) -> Any:
    def fits(b: dict[str, Any]) -> bool:
        ota = b.get("ota") or {}
        return (
            ota.get("booted_slot") == slot
            and ota.get("slots", {}).get(slot, {}).get("version") == version
            and ota.get("trial") is False
        )

    return fits


async def test_a_good_update_installs_reboots_into_the_new_slot_and_marks_it_good(
    bench: OtaBench, platform: Platform
) -> None:
    bench.boot()
    birth = await birth_where(platform, booted_on("A", "0.1.0"), "birth on slot A")
    assert birth["ota"]["updates"] == "available" and "firmware.update" in birth["commands"]

    url, sha = bench.bundle("0.2.0")
    reply = await update(platform, url, sha)
    assert reply["status"] == 202 and reply["update"] == "started", reply
    await bench.wait_reboot_requested()
    assert await arrived(platform, "firmware.installed") == {"slot": "B", "version": "0.2.0"}
    await arrived(platform, "command.completed")
    before_reboot = sequence(platform)
    print("good update, before the reboot:", before_reboot)
    assert before_reboot[0] == "firmware.download"
    assert before_reboot[-2:] == ["device.reboot_requested", "command.completed"]
    assert before_reboot.index("firmware.installed") > max(
        i for i, t in enumerate(before_reboot) if t == "firmware.progress"
    )
    progress = [e["data"]["percent"] for e in platform.unique_events("firmware.progress")]
    assert progress == sorted(progress) and progress[-1] == 100, progress
    assert only(platform, "command.completed")["status"] == 200
    assert bench.rauc.state()["order"][0] == "B"  # RAUC activated the new slot

    bench.power_off()
    bench.boot()
    await platform.wait_for(lambda: platform.events("firmware.committed"), 30, "firmware.committed")
    assert only(platform, "firmware.committed") == {
        "slot": "B",
        "version": "0.2.0",
        "previous_version": "0.1.0",
    }
    birth = await birth_where(platform, booted_on("B", "0.2.0"), "birth on slot B, out of trial")
    assert birth["ota"]["slots"]["B"]["state"] == "good"
    assert birth["ota"]["slots"]["A"] == {"version": "0.1.0", "state": "good", "booted": False}
    print("good update, whole sequence:")
    for e in platform.unique_events():
        if e["type"].startswith(FIRMWARE_EVENTS):
            print(" ", {"type": e["type"], "data": e["data"]})
    assert bench.rauc.state()["attempts"]["B"] == 3  # Mark good gave the slot its attempts back


async def test_a_slot_that_fails_its_health_check_is_marked_bad_and_the_old_slot_comes_back(
    tmp_path: Path, bus_broker: Mosquitto, central_broker: Mosquitto
) -> None:
    bench = OtaBench(tmp_path, bus_broker.port, central_broker.port, health_timeout_s=5)
    try:
        platform = await Platform(central_broker.port).start()
        bench.boot()
        await birth_where(platform, booted_on("A", "0.1.0"), "birth on slot A")
        url, sha = bench.bundle("0.2.0")
        assert (await update(platform, url, sha))["status"] == 202
        await bench.wait_reboot_requested()
        await platform.wait_for(lambda: platform.events("command.completed"), 10, "command.completed")
        await platform.stop()

        # The new slot boots, but the village's link to the platform does not come up.
        bench.power_off()
        central_broker.kill()
        bench.boot()
        await bench.wait_reboot_requested(timeout_s=30)  # health_timeout_s = 5: marked bad, rebooting
        state = bench.rauc.state()
        assert "B" not in state["order"] and state["attempts"]["B"] == 0, state

        bench.power_off()
        central_broker.start()
        platform = await Platform(central_broker.port).start()
        bench.boot()
        await platform.wait_for(lambda: platform.events("firmware.rolled_back"), 30, "firmware.rolled_back")
        rolled = only(platform, "firmware.rolled_back")
        assert rolled["from_version"] == "0.2.0" and rolled["to_version"] == "0.1.0" and rolled["slot"] == "A"
        assert "fleet link is not online" in rolled["reason"], rolled
        failed = only(platform, "firmware.failed")
        assert failed["stage"] == "health" and failed["version"] == "0.2.0", failed
        print("rollback, after the broker came back:")
        for e in platform.unique_events():
            if e["type"].startswith(FIRMWARE_EVENTS):
                print(" ", {"type": e["type"], "data": e["data"]})
        birth = await birth_where(platform, booted_on("A", "0.1.0"), "birth back on slot A")
        assert birth["ota"]["slots"]["B"]["state"] == "bad"
        await platform.stop()
    finally:
        bench.close()


async def test_a_failed_install_reports_rauc_s_last_error_and_does_not_reboot(
    bench: OtaBench, platform: Platform
) -> None:
    bench.rauc.start(fail_install="failed to write image: No space left on device")
    bench.start_appliance()
    await birth_where(platform, booted_on("A", "0.1.0"), "birth on slot A")
    url, sha = bench.bundle("0.2.0")
    assert (await update(platform, url, sha))["status"] == 202
    await platform.wait_for(lambda: platform.events("firmware.failed"), 20, "firmware.failed")
    failed = only(platform, "firmware.failed")
    assert failed["stage"] == "install" and "No space left on device" in failed["reason"], failed
    await platform.wait_for(lambda: platform.events("command.completed"), 10, "command.completed")
    assert only(platform, "command.completed")["status"] == 500
    assert "firmware.installed" not in sequence(platform)
    await asyncio.sleep(1)
    assert not bench.reboot_marker.exists()
    state = bench.rauc.state()
    assert state["booted"] == "A" and state["order"] == ["A"], state
    # Nothing is left half done: the next update is accepted.
    assert not (bench.tmp / "data" / "ota" / "update.json").exists()


async def test_a_bundle_with_the_wrong_sha256_is_refused_before_rauc_sees_it(
    bench: OtaBench, platform: Platform
) -> None:
    bench.boot()
    await birth_where(platform, booted_on("A", "0.1.0"), "birth on slot A")
    url, _ = bench.bundle("0.2.0")
    assert (await update(platform, url, "ab" * 32))["status"] == 202
    await platform.wait_for(lambda: platform.events("firmware.failed"), 20, "firmware.failed")
    failed = only(platform, "firmware.failed")
    assert failed["stage"] == "verify" and "sha256" in failed["reason"], failed
    assert bench.rauc.state()["installs"] == 0  # RAUC was never asked
    assert not list((bench.tmp / "data" / "ota").glob("*.part")), "the bad download is deleted"
    assert (await arrived(platform, "command.completed"))["status"] == 500
    assert sequence(platform) == ["firmware.failed", "command.completed"]


async def test_a_power_cut_during_the_install_leaves_the_old_slot_booted_and_says_so(
    bench: OtaBench, platform: Platform
) -> None:
    bench.rauc.start(tick_s=0.5)  # a slow install, to cut it in the middle
    bench.start_appliance()
    await birth_where(platform, booted_on("A", "0.1.0"), "birth on slot A")
    url, sha = bench.bundle("0.2.0")
    first = await update(platform, url, sha)
    assert first["status"] == 202
    await platform.wait_for(
        lambda: [e for e in platform.events("firmware.progress") if e["data"]["percent"] >= 40],
        30,
        "the slot write under way",
    )
    assert bench.rauc.state()["installing"] == "B"
    bench.power_off(cut=True)

    bench.boot()
    await platform.wait_for(lambda: platform.events("firmware.failed"), 20, "firmware.failed after the cut")
    failed = only(platform, "firmware.failed")
    assert failed["stage"] == "install" and "interrupted" in failed["reason"], failed
    assert "slot A (0.1.0) stays booted" in failed["reason"], failed
    birth = await birth_where(platform, booted_on("A", "0.1.0"), "birth on slot A after the cut")
    assert birth["ota"]["slots"]["B"]["version"] is None and birth["ota"]["primary"] == "A"
    state = bench.rauc.state()
    assert (
        state["booted"] == "A" and state["installing"] is None and state["slots"]["B"]["status"] == "failed"
    )
    # A repeat of the command gets its first reply and runs nothing; a new one starts afresh.
    assert await update(platform, url, sha) == first
    assert bench.rauc.state()["installs"] == 1
    assert (await platform.command("firmware.update", {"id": "fw-again", "url": url, "sha256": sha}))[
        "status"
    ] == 202
    assert await arrived(platform, "firmware.installed") == {"slot": "B", "version": "0.2.0"}


async def test_an_update_waits_for_the_villager_and_now_if_idle_is_refused_meanwhile(
    bench: OtaBench, platform: Platform, bus_broker: Mosquitto
) -> None:
    bench.boot()
    await birth_where(platform, booted_on("A", "0.1.0"), "birth on slot A")
    await wait_appliance_ready(bus_broker.port)
    ui = LocalBus("127.0.0.1", bus_broker.port, name="test-ui")
    await ui.start()
    try:
        ui.publish("kiosk/local/intent/wake", {})  # a villager touches the attract screen
        started = await platform.wait_for(lambda: platform.events("session.started"), 10, "session.started")
        session_id = started[0]["data"]["session_id"]
    finally:
        await ui.stop()
    url, sha = bench.bundle("0.2.0")

    refused = await update(platform, url, sha, when="now_if_idle")
    assert refused["status"] == 409 and "villager session" in refused["error"], refused
    assert bench.rauc.state()["installs"] == 0

    reply = await platform.command("firmware.update", {"id": "fw-idle", "url": url, "sha256": sha})
    assert reply["status"] == 202
    await platform.wait_for(lambda: platform.events("firmware.installed"), 20, "firmware.installed")
    await asyncio.sleep(1.5)
    assert not bench.reboot_marker.exists(), "rebooted during a villager's session"

    ended = await platform.command("session.end", {"session_id": session_id, "reason": "clerk"})
    assert ended["status"] == 200, ended
    await bench.wait_reboot_requested()


HOSTILE = [
    ({"url": "ftp://127.0.0.1/kiosk.raucb"}, "url"),
    ({"url": "http://updates.example.com/kiosk.raucb"}, "url"),  # plain http off loopback
    ({"url": "https://ops:secret@updates.example.com/kiosk.raucb"}, "url"),
    ({"url": "javascript:alert(1)"}, "url"),
    ({"url": "file:relative/kiosk.raucb"}, "url"),
    ({"url": "file:///no/such/kiosk.raucb"}, "url"),
    ({"url": "https://[::1/kiosk.raucb"}, "url"),
    ({"url": "https://h.example/" + "a" * 2000}, "url"),
    ({"sha256": "zz" * 32}, "sha256"),
    ({"sha256": "ab" * 31}, "sha256"),
    ({"sha256": 12}, "sha256"),
    ({"when": "later"}, "when"),
    ({"size": 10**12}, "size"),
    ({"size": "big"}, "size"),
    ({"reboot": True}, "reboot"),
]


async def test_hostile_parameters_are_answered_400_and_change_nothing(
    bench: OtaBench, platform: Platform
) -> None:
    bench.boot()
    await birth_where(platform, booted_on("A", "0.1.0"), "birth on slot A")
    url, sha = bench.bundle("0.2.0")
    wrong = []
    for body, field in HOSTILE:
        reply = await platform.command("firmware.update", {"url": url, "sha256": sha, **body})
        if reply["status"] != 400 or reply.get("field") != field:
            wrong.append((body, reply))
    assert not wrong, wrong
    assert bench.rauc.state()["installs"] == 0
    assert not platform.events("firmware.")


async def test_a_bundle_over_max_bundle_mb_is_refused(bench: OtaBench, platform: Platform) -> None:
    bench.boot()
    await birth_where(platform, booted_on("A", "0.1.0"), "birth on slot A")
    huge = sparse_file(bench.tmp / "huge.raucb", 3 * 10**9)  # max_bundle_mb = 1 in the bench
    reply = await update(platform, f"file://{huge}", "00" * 32)
    assert reply["status"] == 400 and "at most 1000000" in reply["error"], reply
    assert not list((bench.tmp / "data" / "ota").glob("*.part"))


async def test_without_rauc_the_update_is_503_and_birth_says_unavailable(
    appliance: Any, platform: Platform
) -> None:
    birth = await birth_where(platform, lambda b: "ota" in b, "birth")
    assert birth["ota"]["updates"] == "unavailable" and birth["ota"]["reason"], birth
    reply = await platform.command(
        "firmware.update", {"url": "https://h.example/k.raucb", "sha256": "ab" * 32}
    )
    assert reply["status"] == 503 and "unavailable" in reply["error"], reply
    assert "ota" not in (await platform.command("get_status"))["health"]


async def test_an_http_download_resumes_with_a_range_request_and_stops_at_the_size_limit(
    tmp_path: Path,
) -> None:
    from aiohttp import web

    from appliance.ota import _fetch_http
    from kiosk_core.errors import OtaError

    bundle = bytes(range(256)) * 4096  # 1 MiB
    (tmp_path / "kiosk.raucb").write_bytes(bundle)
    ranges: list[str | None] = []

    async def serve(request: web.Request) -> web.StreamResponse:
        ranges.append(request.headers.get("Range"))
        return web.FileResponse(tmp_path / "kiosk.raucb")

    app = web.Application()
    app.router.add_get("/kiosk.raucb", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/kiosk.raucb"
    try:
        part = tmp_path / "got.part"
        part.write_bytes(bundle[:300_000])  # what an interrupted attempt left
        await _fetch_http(url, part, limit=2 * len(bundle))
        assert ranges == ["bytes=300000-"]
        assert part.read_bytes() == bundle

        small = tmp_path / "small.part"
        with pytest.raises(OtaError, match="at most 500000"):
            await _fetch_http(url, small, limit=500_000)
    finally:
        await runner.cleanup()
