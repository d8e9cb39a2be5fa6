"""On the kiosk itself: the hardware self-test on the demo's simulated room, the factory reset on a
throw-away tree, and the diagnostics bundle (``kiosk diag`` and the platform's ``diag.collect``)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
import tomllib
from pathlib import Path

import pytest

from appliance import config as appliance_config
from appliance.diagnostics import build_bundle
from appliance.session.config import hash_pin
from kiosk_cli.main import main as kiosk
from provisioning.selftest import run_selftest
from sim.demo import demo_config

SECRET = "hunter2-secret"
PIN_HASH = hash_pin("135790")


def demo_room(tmp_path: Path, *, switcher_nowhere: bool = False) -> Path:
    """The demo's kiosk.toml (every peripheral on its simulator), optionally with the switcher's
    address pointing at a port where nothing listens."""
    text = demo_config(1, tmp_path / "data")
    if switcher_nowhere:
        text = text.replace(
            '[drivers.switcher]\nbackend = "sim"',
            '[drivers.switcher]\nbackend = "tcp"\nhost = "127.0.0.1"\nport = 9\nconnect_timeout_s = 1',
        )
    path = tmp_path / "etc" / "kiosk.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


async def test_the_self_test_passes_on_the_simulated_room_and_reports_progress(tmp_path: Path) -> None:
    cfg = appliance_config.load(demo_room(tmp_path))
    seen: list[tuple[int, int, str]] = []
    report = await run_selftest(cfg, progress=lambda d, t, w: seen.append((d, t, w)))
    by_name = {c.name: c for c in report.checks}
    assert report.passed, report.text()
    assert "SAM answered its status" in by_name["card_reader"].detail
    assert "05.01-20241001-0000330803-0012345678" in by_name["card_reader"].detail
    assert "routing query: output 1 shows" in by_name["switcher"].detail
    assert {"gpio.status_led", "gpio.buzzer", "gpio.screen_power", "gpio.room_light"} <= set(by_name)
    assert by_name["printer"].status == "pass" and "test slip printed" in by_name["printer"].detail
    assert list((tmp_path / "data" / "selftest" / "printer").glob("receipt-*.png"))
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] and len(seen) == seen[-1][1] + 1


def test_a_switcher_pointing_nowhere_fails_with_a_hint_and_the_report_is_saved(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = demo_room(tmp_path, switcher_nowhere=True)
    assert kiosk(["provision", "selftest", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] switcher: switcher at tcp 127.0.0.1:9" in out
    assert "检查切换器的电源" in out and "check the switcher's power" in out
    assert "[PASS] card_reader" in out
    saved = json.loads((tmp_path / "data" / "selftest" / "last.json").read_text(encoding="utf-8"))
    assert saved["passed"] is False
    assert [c["name"] for c in saved["checks"] if c["status"] == "fail"] == ["switcher"]
    assert "FAIL" in (tmp_path / "data" / "selftest" / "last.txt").read_text(encoding="utf-8")


def _kiosk_tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    etc, data, recordings = tmp_path / "etc", tmp_path / "data", tmp_path / "recordings"
    for d in (etc, data / "sessions", recordings):
        d.mkdir(parents=True)
    config = etc / "kiosk.toml"
    config.write_text(
        '[device]\nid = "kiosk-0001"\nname = "n"\nregion = ["33", "3308", "330803", "330803100", "330803100201"]\n'
        f'[fleet]\npassword = "{SECRET}"\n'
        f'[fleet.tls]\nca = "{etc}/ca.pem"\ncert = "{etc}/device.pem"\nkey = "{etc}/device.key"\n'
        f'[storage]\ndata_dir = "{data}"\n'
        f'[media.recording]\ndir = "{recordings}"\n'
        f'[session]\ntechnician_pin_hash = "{PIN_HASH}"\n',
        encoding="utf-8",
    )
    for name in ("ca.pem", "device.pem", "device.key", "device.csr", "device-csr-qr.png"):
        (etc / name).write_text("x")
    (data / "outbox.sqlite").write_text("events")
    (data / "sessions" / "s-1.jpg").write_text("a villager's papers")
    (recordings / "s-1.mp4").write_text("video")
    (etc / "other.conf").write_text("not the kiosk's")
    return config, data, recordings


def test_factory_reset_wipes_data_keys_recordings_and_config_and_keeps_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, data, recordings = _kiosk_tree(tmp_path)
    # Without a terminal and without --yes: refused, nothing removed.
    assert kiosk(["provision", "factory-reset", "--config", str(config)]) == 2
    assert "add --yes" in capsys.readouterr().err and config.exists()

    assert kiosk(["provision", "factory-reset", "--config", str(config), "--yes"]) == 0
    out = capsys.readouterr().out
    assert "keeps the firmware" in out
    remaining = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert remaining == ["data", "etc", "etc/other.conf", "recordings"], remaining
    assert kiosk(["provision", "factory-reset", "--config", str(config), "--yes"]) == 0
    assert "blank already" in capsys.readouterr().out


def test_factory_reset_refuses_a_data_dir_holding_the_firmware(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _, _ = _kiosk_tree(tmp_path)
    firmware = Path(appliance_config.__file__).resolve().parent.parent
    config.write_text(config.read_text().replace(f'data_dir = "{tmp_path}/data"', f'data_dir = "{firmware}"'))
    assert kiosk(["provision", "factory-reset", "--config", str(config), "--yes"]) == 2
    assert "holds or is part of the firmware" in capsys.readouterr().err
    assert config.exists()


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_kiosk_diag_writes_a_bundle_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, data, _ = _kiosk_tree(tmp_path)
    (data / "appliance.log").write_text("card 330803199003071235 read; password=hunter2-secret\n")
    (data / "selftest").mkdir()
    (data / "selftest" / "last.json").write_text('{"passed": true}')
    assert kiosk(["diag", "--config", str(config), "--bus-timeout", "0.5"]) == 0
    line = capsys.readouterr().out
    path = Path(line.split(":")[0])
    assert path.parent == data / "diag" and path.name.startswith("kiosk-diag-kiosk-0001-")
    assert hashlib.sha256(path.read_bytes()).hexdigest() in line
    members = _members(path)
    assert {"config.json", "versions.json", "health.json", "selftest.json", "manifest.json"} <= set(members)
    everything = b"".join(members.values()).decode()
    assert SECRET not in everything and PIN_HASH not in everything and "330803199003071235" not in everything
    cfg = json.loads(members["config.json"])["config"]
    assert cfg["fleet"]["password"] == "***" and cfg["session"]["technician_pin_hash"] == "***"
    assert json.loads(members["versions.json"])["packages"]["cryptography"]
    assert "local bus not reachable" in json.loads(members["health.json"])["error"]


def test_a_config_that_does_not_load_is_bundled_redacted(tmp_path: Path) -> None:
    config, data, _ = _kiosk_tree(tmp_path)
    config.write_text(config.read_text() + "[fleet.typo]\n")
    bundle = build_bundle(
        data_dir=data,
        device_id="unknown",
        cfg=None,
        config_path=config,
        config_error="bad",
        health=None,
        use_journal=False,
    )
    section = json.loads(_members(bundle.path)["config.json"])
    assert (
        section["error"] == "bad"
        and SECRET not in section["text_redacted"]
        and PIN_HASH not in section["text_redacted"]
    )
    assert tomllib.loads(section["text_redacted"])["fleet"]["password"] == "***"


async def test_the_platform_collects_the_bundle_with_diag_collect(kiosk, platform) -> None:  # noqa: ANN001
    reply = await platform.command("diag.collect", {}, timeout_s=20)
    assert reply["status"] == 200, reply
    raw = base64.b64decode(reply["base64"])
    assert reply["inline"] is True and len(raw) == reply["size"] <= 256 * 1024
    assert hashlib.sha256(raw).hexdigest() == reply["sha256"] and Path(reply["path"]).is_file()
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        names = {m.name.split("/", 1)[1] for m in tar.getmembers()}
    assert {"config.json", "versions.json", "health.json", "manifest.json"} <= names
    bad = await platform.command("diag.collect", {"lines": 5})
    assert bad["status"] == 400


async def test_kiosk_diag_reads_the_retained_health_but_never_the_session(bus_broker) -> None:  # noqa: ANN001
    from appliance.diagnostics import fetch_health
    from kiosk_core.mqtt import MqttConnection

    conn = MqttConnection(host="127.0.0.1", port=bus_broker.port, client_id="test-state", name="test")
    await conn.connect()
    for name, state in (("peripherals", {"ok": True}), ("session", {"screen": "welcome", "name": "张三"})):
        await conn.publish(f"kiosk/local/state/{name}", json.dumps(state).encode(), qos=1, retain=True)
    await conn.close()
    health = await fetch_health("127.0.0.1", bus_broker.port, timeout_s=1.0)
    assert health["peripherals"] == {"ok": True} and health["appliance"] is None
    assert "session" not in health and "张三" not in json.dumps(health, ensure_ascii=False)
